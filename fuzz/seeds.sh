#!/usr/bin/env bash
# Seed corpora of the fuzz targets, made from the repository's own fixtures and docs examples:
# writes BUILD/seeds/<target>/ (fresh each time). Usage: fuzz/seeds.sh BUILD (a build of
# fuzz/run.sh: BUILD/moetrace makes the stat dumps and placements).
set -euo pipefail
build=$(realpath "$1")
cd "$(dirname "$0")/.."
out=$build/seeds
rm -rf "$out"
mkdir -p "$out"/{safetensors,safetensors_index,config,npy,tokenizer_load,tokenizer_text,regex,chat_template,request,dataset,stat_dump,placement,request_trace,chat_output}
models=tests/fixtures/models

# safetensors: the fixtures' headers (cut to 16 KiB) and two small whole files.
for f in $models/*/model.safetensors $models/*_hub/*.safetensors; do
  head -c 16384 "$f" > "$out/safetensors/$(echo "$f" | tr / _)"
done
for f in $models/*_hub/model.safetensors.index.json; do cp "$f" "$out/safetensors_index/$(echo "$f" | tr / _)"; done
st() { # name header data-bytes: 8-byte little-endian header length, header, data
  local n=${#2}
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' $((n & 255)) $((n >> 8 & 255)) $((n >> 16 & 255)) $((n >> 24 & 255)))%s" "$2" \
    > "$out/safetensors/$1"
  head -c "$3" /dev/zero >> "$out/safetensors/$1"
}
st two '{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}' 16
st i8 '{"x":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}' 4

for f in $models/*/config.json $models/*/generation_config.json; do cp "$f" "$out/config/$(echo "$f" | tr / _)"; done
for f in $models/*/*.npy; do cp "$f" "$out/npy/$(echo "$f" | tr / _)"; done
for d in bl sp ms; do cp "tests/tokenizer/$d/tokenizer.json" "$out/tokenizer_load/$d.json"; done
# a vocabulary and a merge holding U+0000 (as InternLM2's), a String pattern holding it
printf '%s' '{"normalizer": {"type": "Replace", "pattern": {"String": "\u0000\u0000"}, "content": "b"}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "\u0000": 2, "a\u0000": 3}, "merges": [["a", "\u0000"]]}}' > "$out/tokenizer_load/nul.json"

# tokenizer_text: each line of the tokenizer corpus, behind a byte that picks tokenizer and flags.
i=0
while IFS= read -r line; do
  printf "\\x$(printf '%02x' $((i % 6)))%s" "$line" > "$out/tokenizer_text/line$i"
  i=$((i + 1))
done < tests/tokenizer/corpus.json
# regex: the class items of the regex translation's reference and the regexes of the tokenizers here.
python3 - "$out/regex" <<'PY'
import glob, json, sys
pats = list(json.load(open("tests/tokenizer/classes_lib.json"))["items"])
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "Regex" and isinstance(v, str): pats.append(v)
            else: walk(v)
    elif isinstance(o, list):
        for v in o: walk(v)
for f in glob.glob("tests/tokenizer/*/tokenizer.json") + glob.glob(".deps/npm/real/*/tokenizer.json"):
    d = json.load(open(f))
    walk([d.get("normalizer"), d.get("pre_tokenizer")])
for i, p in enumerate(pats):
    open("%s/p%d" % (sys.argv[1], i), "w").write(p)
PY
cp tests/chat/templates/*.jinja "$out/chat_template/"

# request: the bodies of the docs' curl examples (-d '...').
i=0
for f in docs/API.md README.md; do
  awk -v dir="$out/request" -v base="$(basename "$f" .md)" 'BEGIN { RS = "-d \x27" }
    NR > 1 { split($0, a, "\x27"); print a[1] > (dir "/" base NR ".json") }' "$f"
done
for f in tests/chat/conversations.json; do
  printf '{"messages": %s, "max_tokens": 8}' "$(cat "$f")" > "$out/request/conversations.json"
done

# dataset (JSONL of `moetrace profile`): lines of the tokenizer corpus as prompts and as messages,
# some labelled with a "domain" (a string or an integer).
i=0
grep '^"' tests/tokenizer/corpus.json | sed 's/,$//' | while IFS= read -r text; do
  f="$out/dataset/part$((i / 16))"
  printf '{"prompt": %s, "domain": "text"}\n{"messages": [{"role": "user", "content": %s}]}\n{"input_ids": [%d, 2, 3], "domain": %d}\n' \
    "$text" "$text" "$i" "$((i % 3))" >> "$f"
  i=$((i + 1))
done

# stat dumps and placements: the docs' dump, what `moetrace eplb` plans from it, and dumps that
# `moetrace profile` records on a fixture model under a trivial and a planned placement.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '/^```json/ { f = 1; next } /^```/ { if (f) exit; f = 0 } f' docs/RECORDER.md > "$out/stat_dump/docs.json"
export ASAN_OPTIONS=detect_leaks=0
bin=$build/moetrace
$bin eplb --counts "$out/stat_dump/docs.json" --num-replicas 12 --num-gpus 4 --out "$out/placement/docs_eplb.json" >/dev/null 2>&1
printf '{"input_ids": [1, 2, 3, 4, 5]}\n{"input_ids": [7, 8, 9]}\n' > "$tmp/data.jsonl"
$bin profile --model $models/mixtral --data "$tmp/data.jsonl" --out "$tmp/trivial" --max-new-tokens 4 \
  --ep-size 4 --init-expert-location trivial >/dev/null 2>&1
cp "$tmp"/trivial/expert_distribution_*.json "$out/stat_dump/trivial.json"
$bin eplb --counts "$out/stat_dump/trivial.json" --num-replicas 12 --num-gpus 4 --out "$out/placement/mixtral_eplb.json" >/dev/null 2>&1
$bin profile --model $models/mixtral --data "$tmp/data.jsonl" --out "$tmp/planned" --max-new-tokens 4 \
  --init-expert-location "$out/placement/mixtral_eplb.json" >/dev/null 2>&1
cp "$tmp"/planned/expert_distribution_*.json "$out/stat_dump/planned.json"
cp "$out"/stat_dump/*.json "$out/placement/"

# request_trace: per_token dumps of `moetrace profile --per-token` (the third prompt shares the
# first's 16-token block: its first block comes from the prefix cache), as the target reads them:
# the index naming its tensors "t.safetensors", a NUL, the tensors; request "1" is traced (the
# third one in the seed whose ids are renamed), and the index alone.
for i in $(seq 1 20); do printf '%d, ' $((i + 2)); done > "$tmp/prefix"
printf '{"input_ids": [%s 40, 41]}\n{"input_ids": [7, 8, 9]}\n{"input_ids": [%s 50, 51, 52]}\n' \
  "$(cat "$tmp/prefix")" "$(cat "$tmp/prefix")" > "$tmp/trace.jsonl"
$bin profile --model $models/mixtral --data "$tmp/trace.jsonl" --out "$tmp/per_token" --max-new-tokens 3 \
  --per-token >/dev/null 2>&1
trace_tensors=$(ls "$tmp"/per_token/per_token/expert_distribution_*.safetensors | head -n 1)
trace_index=${trace_tensors%.safetensors}.json
trace_seed() { # name sed-script
  { sed -e 's/"tensors": *"[^"]*"/"tensors": "t.safetensors"/' -e "$2" "$trace_index"; printf '\0'; cat "$trace_tensors"; } \
    > "$out/request_trace/$1"
}
trace_seed first ''
trace_seed cached 's/"request_ids": *\["1", *"2", *"3"\]/"request_ids": ["3", "2", "1"]/'
sed -e 's/"tensors": *"[^"]*"/"tensors": "t.safetensors"/' "$trace_index" > "$out/request_trace/index_alone"

# chat_output: model outputs with think and tool-call markers; the first byte picks the options (1:
# qwen3, 2: deepseek-r1, +4 reasoning held, +8 tool calls, +16 named tools), the second the cuts.
chat_seed() { printf '%b' "$2" > "$out/chat_output/$1"; }
chat_seed think '\x09\x07<think>\nLet me see.\n</think>\n\nThe answer is 4.'
chat_seed r1 '\x0a\x03First, 2 + 2.</think>\n\n4'
chat_seed calls '\x19\x05Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "n": 123456789012345678901}}\n</tool_call>\n<tool_call>\n{"name": "search", "parameters": {"q": "a </tool_call> b"}}\n</tool_call>'
chat_seed broken '\x0d\x11<think>\xc3\xa9t\xc3\xa9</think> <tool_call>{"name": 5}</tool_call> <tool_call>{"name": "x", "arguments": [1]}'

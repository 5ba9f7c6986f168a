#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .devcarry/ made by tests/gpu/pack.sh: per-
# domain recording on the device (`profile --device cuda --domain-field`, the qwen3_moe test
# checkpoint): every record labelled, so the domains' stat dumps must add up to the run's dump
# exactly, and each domain's tokens must equal its records' forwarded tokens (prompt + new - 1).
source "$(dirname "$0")/device_env.sh"   # before pipefail: its `strings | grep -m1` ends on a broken pipe
set -euo pipefail
model=tests/fixtures/models/qwen3_moe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - > "$tmp/ds.jsonl" <<'PY'
import random
random.seed(3)
for i in range(40):
    ids = ", ".join(str(random.randrange(3, 500)) for _ in range(random.randrange(1, 90)))
    print('{"topic": "%s", "input_ids": [%s]}' % (["code", "prose", "math"][i % 3], ids))
PY
.devcarry/bin/moetrace profile --model "$model" --device cuda --data "$tmp/ds.jsonl" --out "$tmp/p" \
  --max-new-tokens 7 --ignore-eos --concurrency 16 --domain-field topic > /dev/null 2> "$tmp/err" ||
  { tail -3 "$tmp/err"; exit 1; }
python3 - "$tmp" <<'PY'
import json, sys, glob
tmp = sys.argv[1]
summary = json.load(open(f"{tmp}/p/summary.json"))
whole = json.load(open(summary["stat_dump"]))
dom = json.load(open(f"{tmp}/p/domains.json"))
records = [json.loads(l) for l in open(f"{tmp}/ds.jsonl")]
total = [[0] * len(whole["logical_count"][0]) for _ in whole["logical_count"]]
for d in dom["domains"]:
    dump = json.load(open(d["stat_dump"]))
    want = sum(len(r["input_ids"]) + 7 - 1 for r in records if r["topic"] == d["name"])
    assert d["tokens"] == want == dump["num_tokens"], (d["name"], d["tokens"], want, dump["num_tokens"])
    for l, row in enumerate(dump["logical_count"]):
        for e, c in enumerate(row):
            total[l][e] += c
assert total == whole["logical_count"], "the domains do not add up to the run's dump"
print("domain usage on cuda: %d domains, %d tokens, their counts add up to the run's dump"
      % (len(dom["domains"]), whole["num_tokens"]))
PY

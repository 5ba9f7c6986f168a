#!/usr/bin/env bash
# Builds moetrace and runs a small MoE checkpoint end to end, printing the generated ids and where
# the routing of every token went.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
model=tests/fixtures/models/qwen3_moe
out=$(mktemp -d)
echo "== moetrace run on $model (qwen3_moe, 4 layers, 8 experts, top-2; layer 1 dense)" >&2
./build/moetrace run --model "$model" --input-ids 17,42,256,3,99,7 --max-new-tokens 8 --ignore-eos \
  --routing-out "$out/routing.npy" --tokens-out "$out/tokens.npy"
echo "== routing written to $out/routing.npy: int32 [tokens, layers, top_k], -1 on dense layers" >&2

#!/usr/bin/env bash
# Runs on the GPU machine (repository root, .devcarry/ from tests/gpu/pack.sh): `serve --device cuda`
# of the full Qwen3-30B-A3B shape (--load-format dummy) with its default memory flags, as a serving
# engineer starts it. Prints the log's memory lines (weights, pass scratch, KV cache) and the device's
# memory once it is ready, answers one request, and checks the KV cache came from the device's free
# memory. Extra arguments go to serve (e.g. --max-scored-tokens 8192). Exit 0 when all of that held.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
port=30517
log=${OUT:-/tmp}/serve_memory.log
start=$(date +%s.%N)
.devcarry/bin/moetrace serve --model bench/configs/qwen3-30b-a3b --load-format dummy --device cuda \
  --port $port "$@" 2>"$log" &
pid=$!
ready=0
for _ in $(seq 1 1200); do
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
echo "ready after $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s (ready=$ready)"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader
answer=$(curl -s "http://127.0.0.1:$port/generate" -d '{"input_ids": [1, 2, 3, 4, 5], "sampling_params": {"max_new_tokens": 8, "ignore_eos": true}}')
echo "answer: ${answer:0:160}"
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
grep -E "KV cache|weights|ready" "$log" | cut -c1-400
ok=$((ready == 1 && rc == 0))
grep -q "GiB of device memory" "$log" || ok=0
echo "$answer" | grep -q '"output_ids"' || ok=0
echo "serve_memory: $([ $ok = 1 ] && echo passed || echo FAILED) (exit code $rc)"
[ $ok = 1 ]

#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .devcarry/ made by tests/gpu/pack.sh:
# the GPU tests, then (with "bench") the GPU benchmark. Logs go to $OUT when set.
set -uo pipefail
out=${OUT:-/tmp}
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader
rc=0
timeout 200 .devcarry/bin/test_cuda_kernels 2>&1 | tee "$out/test_cuda_kernels.log" || rc=1
if [ -x .devcarry/bin/test_cuda_wgmma ]; then   # pack.sh carries it unless space is short
  timeout 200 .devcarry/bin/test_cuda_wgmma 2>&1 | tee "$out/test_cuda_wgmma.log" || rc=1
fi
timeout 100 .devcarry/bin/test_cuda_sample 2>&1 | tee "$out/test_cuda_sample.log" || rc=1
timeout 400 .devcarry/bin/test_cuda 2>&1 | tee "$out/test_cuda.log" || rc=1
timeout 200 python3 tests/gpu/serve_smoke.py 2>&1 | tee "$out/serve_smoke.log" || rc=1
if [ "${1:-}" = bench ]; then
  timeout 300 .devcarry/bin/bench_cuda "${@:2}" 2>&1 | tee "$out/bench_cuda.log" || rc=1
fi
exit $rc

#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .devcarry/ made by tests/gpu/pack.sh:
# the GPU tests, then (with "bench") the GPU benchmark. Logs go to $OUT when set.
set -uo pipefail
out=${OUT:-/tmp}
# tests find their fixtures under the source path they were built in
src=$(strings .devcarry/bin/test_cuda | grep -m1 -o '^/[^ ]*/tests/fixtures/models' | sed 's|/tests/fixtures/models||')
if [ -n "$src" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi
cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/.devcarry/lib:/usr/local/cuda/lib64:${cublas}:${LD_LIBRARY_PATH:-}"
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

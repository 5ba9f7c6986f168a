# Sourced on the GPU machine (repository root) by device_run.sh and ab_runs.sh: makes .devcarry/bin
# runnable (gzipped binaries unpacked), points each binary's compiled-in source path at this checkout
# (the tests find their fixtures there, bench_cuda its configs; binaries of other builds, such as a
# second bench_cuda for an A/B, may name other paths) and puts .devcarry/lib and the CUDA libraries
# on the path.
gunzip -f .devcarry/bin/*.gz 2>/dev/null
chmod +x .devcarry/bin/* 2>/dev/null
for bin in .devcarry/bin/*; do
  src=$(strings "$bin" | grep -m1 -oE '^/[^ ]*/(tests/fixtures/models|bench/configs/qwen3-30b-a3b)' |
        sed -E 's#/(tests/fixtures/models|bench/configs/qwen3-30b-a3b)$##')
  if [ -n "$src" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi
done
cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/.devcarry/lib:/usr/local/cuda/lib64:${cublas}:${LD_LIBRARY_PATH:-}"

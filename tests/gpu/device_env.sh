# Sourced on the GPU machine (repository root) by device_run.sh and ab_runs.sh: makes .devcarry/bin
# runnable (gzipped binaries unpacked), points the tests' compiled-in source path at this checkout
# (they find their fixtures there) and puts .devcarry/lib and the CUDA libraries on the path.
gunzip -f .devcarry/bin/*.gz 2>/dev/null
chmod +x .devcarry/bin/* 2>/dev/null
if [ -f .devcarry/bin/test_cuda ]; then
  src=$(strings .devcarry/bin/test_cuda | grep -m1 -o '^/[^ ]*/tests/fixtures/models' | sed 's|/tests/fixtures/models||')
  if [ -n "$src" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi
fi
cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/.devcarry/lib:/usr/local/cuda/lib64:${cublas}:${LD_LIBRARY_PATH:-}"

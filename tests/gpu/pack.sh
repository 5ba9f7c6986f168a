#!/usr/bin/env bash
# Packs what a GPU machine without this project's Debian libraries needs into .devcarry/ (ignored):
# the GPU test and benchmark binaries, the CLI, and the shared libraries they use that such a
# machine lacks (everything ldd names except glibc, libstdc++/libgcc and the CUDA libraries).
# Usage: tests/gpu/pack.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
rm -rf .devcarry && mkdir -p .devcarry/bin .devcarry/lib
bins=("$build/test_cuda_kernels" "$build/test_cuda_wgmma" "$build/test_cuda_sample" "$build/test_cuda" "$build/bench_cuda" "$build/bench_rollout" "$build/bench_scoring" "$build/bench_tokenizer" "$build/moetrace")
cp "${bins[@]}" .devcarry/bin/
strip --strip-debug .devcarry/bin/*   # what travels to the device is capped in size
ldd "${bins[@]}" | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libgcc_s.so*|libstdc++.so*|libcu*) ;;
    *) cp -L "$lib" .devcarry/lib/ ;;
  esac
done
# real tokenizers for bench_tokenizer against the tokenizers library (tests/gpu/tokenizer_bench.sh),
# with WITH_TOKENIZERS=1 (21 MB of the 64 MB a device call can carry)
[ "${WITH_TOKENIZERS:-0}" = 1 ] && for t in qwen3 deepseek_v3 llama2; do
  [ -f ".deps/npm/real/$t/tokenizer.json" ] && mkdir -p ".devcarry/tok/$t" && cp ".deps/npm/real/$t/tokenizer.json" ".devcarry/tok/$t/"
done
du -sh .devcarry

#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz_*.c: clang, ASan + UBSan, moetrace_core with coverage),
# replays the inputs kept in fuzz/regressions/<target>/, then runs each target for SECONDS
# (default 30) on a corpus seeded from the repository's fixtures (fuzz/seeds.sh). Fails on any
# crash, leak, undefined behaviour, timeout or excessive memory; the input that did it is left in
# BUILD/artifacts/<target>/ and the log in BUILD/logs/<target>.log. Targets run one at a time.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   TARGET: config for fuzz_config.c ...; default: all.
# FUZZ_BUILD: build folder (default build-fuzz). FUZZ_FLAGS: extra libFuzzer flags.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
./setup.sh clang libclang-rt-14-dev # clang and its libFuzzer/sanitizer runtimes, only here
build=${FUZZ_BUILD:-build-fuzz}
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DMOETRACE_SANITIZE=ON \
  -DMOETRACE_CUDA=OFF -DMOETRACE_FUZZ=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzzers moetrace >/dev/null
fuzz/seeds.sh "$build"

# Longest input per target: a little above the largest seed.
max_len() {
  case $1 in
    tokenizer_load) echo 65536 ;;
    config | chat_template | request | tokenizer_text | dataset) echo 8192 ;;
    regex) echo 4096 ;;
    *) echo 16384 ;;
  esac
}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz/fuzz_*.c; do t=$(basename "$f" .c); targets+=("${t#fuzz_}"); done
fi
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=()
for t in "${targets[@]}"; do
  bin=$build/fuzz/fuzz_$t
  [ -x "$bin" ] || { echo "fuzz: no target '$t'" >&2; exit 2; }
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t" "$build/logs"
  log=$build/logs/$t.log
  : > "$log"
  regressions=()
  [ -d "fuzz/regressions/$t" ] && mapfile -t regressions < <(find "fuzz/regressions/$t" -type f | sort)
  if [ ${#regressions[@]} -gt 0 ] && ! "$bin" "${regressions[@]}" > "$log" 2>&1; then
    echo "fuzz: $t: a kept regression input fails again" >&2
    tail -n 40 "$log" >&2
    failed+=("$t")
    continue
  fi
  # shellcheck disable=SC2086
  if "$bin" "$build/corpus/$t" "$build/seeds/$t" -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$build/artifacts/$t/" -print_final_stats=1 ${FUZZ_FLAGS:-} >> "$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    echo "fuzz: $t: ok, ${#regressions[@]} regression inputs, ${runs:-?} runs in ${secs}s, $cov"
  else
    echo "fuzz: $t: FAILED (input in $build/artifacts/$t/, log $log)" >&2
    grep -A 30 -m 1 -E '^==[0-9]+==ERROR|runtime error|property failed|^==[0-9]+== ERROR' "$log" >&2 || tail -n 40 "$log" >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi

#!/usr/bin/env bash
# Builds moetrace and runs every test (ctest). Usage: ./test.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
build=${1:-build}
shift || true
[ -x tests/tokenizer/fetch_real.sh ] && tests/tokenizer/fetch_real.sh || echo "test.sh: real tokenizers not fetched; their tests will skip" >&2
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j"$(nproc)"

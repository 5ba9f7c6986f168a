#!/usr/bin/env bash
# Builds moetrace and runs `moetrace demo`: the model embedded in the binary end to end (a
# generation, where every token went, batch invariance, the expert load, an EPLB placement).
# Arguments are passed to `moetrace demo` (see `build/moetrace demo --help`), e.g. --out DIR.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec ./build/moetrace demo "$@"

#!/usr/bin/env bash
# On a machine with the `tokenizers` library (the GPU machine), after WITH_TOKENIZERS=1 tests/gpu/pack.sh: encode
# throughput of moetrace's tokenizer and of the library on the same documents, same CPU, one run.
set -uo pipefail
export LD_LIBRARY_PATH="$PWD/.devcarry/lib:${LD_LIBRARY_PATH:-}"
lscpu | grep -m1 "Model name"
for t in .devcarry/tok/*/; do
  name=$(basename "$t")
  .devcarry/bin/bench_tokenizer --model "$t" --mb 3 --text-out "/tmp/docs_$name.txt" --reps 3
  python3 tests/tokenizer/bench_tokenizers_lib.py "$t/tokenizer.json" "/tmp/docs_$name.txt" 3
done

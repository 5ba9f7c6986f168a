#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with binaries in .devcarry/bin (gzipped or not)
# and their libraries in .devcarry/lib: the A/B runs listed in PLAN, one per line as
#   label|ENV=VALUE ...|command and arguments
# (an environment entry is needed: X=0 when there is none), in the order given, so settings can be
# alternated inside one machine's run. Each run's whole output goes to $OUT/label.log; its summary
# lines (steps, test results) to stdout.   Usage: tests/gpu/ab_runs.sh PLAN
set -u
plan=${1:?usage: tests/gpu/ab_runs.sh PLAN}
out=${OUT:-/tmp}
gunzip -f .devcarry/bin/*.gz 2>/dev/null
chmod +x .devcarry/bin/*
# tests find their fixtures under the source path they were built in
probe=$(ls .devcarry/bin/test_cuda 2>/dev/null || true)
src=$([ -n "$probe" ] && strings "$probe" | grep -m1 -o '^/[^ ]*/tests/fixtures/models' | sed 's|/tests/fixtures/models||')
if [ -n "$src" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi
export LD_LIBRARY_PATH="$PWD/.devcarry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name --format=csv,noheader
while IFS='|' read -r label envs cmd; do
  [ -z "$label" ] && continue
  echo "== $label"
  env $envs timeout 200 $cmd > "$out/$label.log" 2>&1
  rc=$?
  grep -E "step|passed|FAIL|fail|PASSED|OK \]|error" "$out/$label.log" | grep -v "^\s*stages" | head -8
  echo "rc=$rc"
done < "$plan"

#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with binaries in .devcarry/bin (gzipped or not)
# and their libraries in .devcarry/lib: the A/B runs listed in PLAN, one per line as
#   label|ENV=VALUE ...|command and arguments
# (an environment entry is needed: X=0 when there is none), in the order given, so settings can be
# alternated inside one machine's run. Each run's whole output goes to $OUT/label.log; its summary
# lines (steps, test results) to stdout.   Usage: tests/gpu/ab_runs.sh PLAN
# A decode A/B wants `bench_cuda --figures decode --batch B` (seconds a run): `--batch B` alone
# also runs the recording and sampling figures at batch 64 (most of a minute). A call brings back
# about 8 files of $OUT, so keep plans to 8 labels or fewer. Each run is stopped after AB_TIMEOUT seconds
# (200 unless set), so a run that hangs costs no more than that.
set -u
plan=${1:?usage: tests/gpu/ab_runs.sh PLAN}
out=${OUT:-/tmp}
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
while IFS='|' read -r label envs cmd; do
  [ -z "$label" ] && continue
  echo "== $label"
  env $envs timeout ${AB_TIMEOUT:-200} $cmd > "$out/$label.log" 2>&1
  rc=$?
  grep -E "step|passed|FAIL|fail|PASSED|OK \]|error" "$out/$label.log" | grep -v "^\s*stages" | head -8
  echo "rc=$rc"
done < "$plan"

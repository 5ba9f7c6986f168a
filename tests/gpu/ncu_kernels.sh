#!/usr/bin/env bash
# Per-kernel device time of one bench_cuda figure under Nsight Compute (GPU machine, after
# tests/gpu/pack.sh): tests/gpu/ncu_kernels.sh decode1|prefill. Prints time per kernel name.
set -uo pipefail
what=${1:-decode1}
export LD_LIBRARY_PATH="$PWD/.devcarry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || ls /usr/local/cuda/bin/ncu)
"$ncu" --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
  .devcarry/bin/bench_cuda --only "$what" > "${OUT:-/tmp}/ncu_$what.csv" 2> "${OUT:-/tmp}/ncu_$what.err"
python3 - "${OUT:-/tmp}/ncu_$what.csv" <<'PY'
import csv, sys, collections, re
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki = hdr.index("Kernel Name"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
tot = collections.Counter(); cnt = collections.Counter()
for r in rows:
    v = float(r[vi].replace(",", "")); u = r[ui]
    us = v / 1000 if u == "nsecond" else v * 1000 if u == "msecond" else v
    name = re.sub(r"\(.*", "", r[ki])[:70]
    tot[name] += us; cnt[name] += 1
total = sum(tot.values())
print(f"{len(rows)} kernels, {total:.0f} us of kernel time (two passes)")
for name, us in tot.most_common(25):
    print(f"{us:10.1f} us {100*us/total:5.1f}%  {cnt[name]:5d} x {us/cnt[name]:8.2f} us  {name}")
PY

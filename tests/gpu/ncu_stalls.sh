#!/usr/bin/env bash
# Nsight Compute throughput, occupancy and warp-stall figures of the first launches of one kernel
# in one bench_cuda figure (GPU machine, after tests/gpu/pack.sh):
#   tests/gpu/ncu_stalls.sh decode64 linear_small 4
# Prints the lines that say where the kernel's time goes; the full report lands in $OUT.
# BENCH=path runs another bench_cuda binary, BARGS its extra arguments (e.g. --model DIR).
set -uo pipefail
what=${1:-decode64}
kernel=${2:-linear_small}
count=${3:-4}
export LD_LIBRARY_PATH="$PWD/.devcarry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || ls /usr/local/cuda/bin/ncu)
report="${OUT:-/tmp}/ncu_${what}_${kernel}.txt"
"$ncu" --clock-control none --profile-from-start off -k "regex:$kernel" --launch-count "$count" \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section MemoryWorkloadAnalysis --metrics smsp__pcsamp_warps_issue_stalled_long_scoreboard,smsp__pcsamp_warps_issue_stalled_barrier,smsp__pcsamp_warps_issue_stalled_membar,smsp__pcsamp_warps_issue_stalled_short_scoreboard,smsp__pcsamp_warps_issue_stalled_wait,smsp__pcsamp_warps_issue_stalled_math_pipe_throttle,smsp__pcsamp_warps_issue_stalled_lg_throttle,smsp__pcsamp_warps_issue_stalled_mio_throttle,smsp__pcsamp_warps_issue_stalled_selected,smsp__pcsamp_warps_issue_stalled_not_selected,smsp__pcsamp_warps_issue_stalled_no_instructions,smsp__pcsamp_warps_issue_stalled_sleeping,smsp__pcsamp_warps_issue_stalled_drain,smsp__pcsamp_warps_issue_stalled_dispatch_stall,smsp__pcsamp_warps_issue_stalled_branch_resolving,smsp__pcsamp_warps_issue_stalled_imc_miss,smsp__pcsamp_warps_issue_stalled_tex_throttle,smsp__pcsamp_warps_issue_stalled_misc \
  ${BENCH:-.devcarry/bin/bench_cuda} ${BARGS:-} --only "$what" > "$report" 2>&1
grep -E "^  [a-z_]+.*\(|Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Grid Size|Registers Per|Warp Cycles Per Issued|stalled_[a-z_]+ +[a-z]* +[0-9]" "$report" | grep -v " 0$"

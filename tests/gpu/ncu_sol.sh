export LD_LIBRARY_PATH="$PWD/.devcarry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for k in linear_large_kernel attention_rows_kernel; do
"$ncu" --clock-control none --profile-from-start off -k regex:$k --launch-skip 3 --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section LaunchStats --section Occupancy --section WarpStateStats .devcarry/bin/bench_cuda --only prefill 2>&1 | grep -E "linear|attention|Throughput|Pipe|Occupancy|Registers|Shared Memory|Stall|Warp Cycles|Issued|Executed Ipc|Block Limit|L1/TEX Hit|L2 Hit|Duration" | head -45
done

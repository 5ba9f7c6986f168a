#!/usr/bin/env bash
# SASS of a CUDA source as this project builds it (sm_90a), for reading what the compiler made of a
# kernel. This toolkit has no disassembler; CUDA 11.8's cuobjdump (Debian bookworm non-free,
# package nvidia-cuda-toolkit: `apt-get download nvidia-cuda-toolkit && dpkg -x *.deb x`) reads
# these cubins once their ELF header is rewritten to the format it knows (OS/ABI 0x33, ABI version
# 7, flags sm_90). Usage: CUOBJDUMP=x/usr/bin/cuobjdump tests/gpu/sass.sh src/kernels/cuda/linear.cu [-DMT_TIMELINE] > out.sass
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:?usage: tests/gpu/sass.sh FILE.cu [nvcc flags]}
shift
: "${CUOBJDUMP:?set CUOBJDUMP to the cuobjdump of CUDA 11.8 (see the header)}"
cubin=$(mktemp --suffix .cubin)
trap 'rm -f "$cubin"' EXIT
nvcc -cubin -arch=sm_90a -O3 -std=c++17 -Isrc "$@" "$src" -o "$cubin"
python3 - "$cubin" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
b[7], b[8] = 0x33, 7                      # OS/ABI and ABI version of the older cubin format
struct.pack_into('<I', b, 48, 0x005a055a)  # e_flags: sm_90, virtual sm_90, 64-bit addresses
open(sys.argv[1], 'wb').write(b)
PY
"$CUOBJDUMP" -sass "$cubin"

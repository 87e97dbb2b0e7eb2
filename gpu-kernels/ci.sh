#!/usr/bin/env bash
# GPU checks that need no GPU, for .ci/run:
# 1. the committed PTX is what the device crate compiles to now (not stale);
# 2. ptxas (PyPI nvidia-cuda-nvcc-cu12) accepts it for sm_53, sm_72, sm_87 and
#    sm_90, with no local-memory spills in any kernel; prints registers,
#    shared memory and spills per kernel.
# Needs: apt rustc-web cargo-web rust-web-src (see build-ptx.sh), pip
# nvidia-cuda-nvcc-cu12 (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

COMMITTED=gpu-kernels/ptx/kernels_sm53.ptx
fresh=$(mktemp --suffix=.ptx)
trap 'rm -f "$fresh" "$fresh.log"' EXIT

echo "gpu-ci: rebuilding PTX"
bash gpu-kernels/build-ptx.sh "$fresh"
if ! diff -q "$COMMITTED" "$fresh" >/dev/null; then
  echo "gpu-ci: $COMMITTED is stale: run bash gpu-kernels/build-ptx.sh and commit the result" >&2
  diff "$COMMITTED" "$fresh" | head -20 >&2
  exit 1
fi
echo "gpu-ci: committed PTX is up to date"

find_ptxas() {
  python3 - <<'PY' 2>/dev/null
import os, nvidia.cuda_nvcc as m
print(os.path.join(list(m.__path__)[0], "bin", "ptxas"))
PY
}
PTXAS=${PTXAS:-$(find_ptxas || true)}
if [ -z "$PTXAS" ] || [ ! -x "$PTXAS" ]; then
  echo "gpu-ci: installing ptxas (pip nvidia-cuda-nvcc-cu12)"
  python3 -m pip install -q --disable-pip-version-check nvidia-cuda-nvcc-cu12
  PTXAS=$(find_ptxas)
fi
echo "gpu-ci: $("$PTXAS" --version | tail -1)"

status=0
for arch in sm_53 sm_72 sm_87 sm_90; do
  if ! "$PTXAS" -arch="$arch" -v "$COMMITTED" -o /dev/null >"$fresh.log" 2>&1; then
    echo "gpu-ci: ptxas failed for $arch:" >&2
    grep -i error "$fresh.log" >&2 || cat "$fresh.log" >&2
    status=1
    continue
  fi
  # ptxas -v prints, per kernel: "Compiling entry function 'NAME'", then the
  # stack/spill line, then the registers/shared-memory line.
  awk -v arch="$arch" '
    /Compiling entry function/ { match($0, /\x27[^\x27]+\x27/); name = substr($0, RSTART + 1, RLENGTH - 2) }
    /spill stores/ { spill_st = $5; spill_ld = $9 }
    /Used [0-9]+ registers/ {
      regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
      smem = 0; if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
      printf "%-6s %-34s regs %3d  smem %6d  spill %s/%s\n", arch, name, regs, smem, spill_st, spill_ld
      if (spill_st + spill_ld > 0) bad = 1
    }
    END { exit bad }' "$fresh.log" || { echo "gpu-ci: local-memory spills for $arch (see above)" >&2; status=1; }
done
[ $status -eq 0 ] && echo "gpu-ci: ptxas accepts every kernel for sm_53 sm_72 sm_87 sm_90 with no spills"
exit $status

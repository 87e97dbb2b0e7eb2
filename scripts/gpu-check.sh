#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU (well under 8 minutes):
# 1. parity: every kernel family's PTX on the GPU against the same kernel
#    body under the CPU grid emulator (fails, not skips, without a GPU);
# 2. criterion benches of the kernels (conv passes at YOLOv3-MobileNetV1
#    shapes, GEMM, BN, decode, NMS), short measurement times;
# 3. the PyTorch + cuDNN / torchvision side (benches/gpu_kernels_torch.py),
#    printing pulsefocus / PyTorch ratios, when torch is importable.
#
# With cargo on the machine it builds here. Without one (a Jetson with only
# the driver), build on another x86-64/aarch64 machine of the same
# architecture and pass the binaries' folder:
#   cargo test --release -p pulsefocus-gpu --test device_parity --no-run
#   cargo bench -p pulsefocus-benches --bench gpu_kernels --no-run
#   PREBUILT=dir-with-device_parity-and-gpu_kernels bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export PULSEFOCUS_REQUIRE_GPU=1
step() { printf '\n=== %s\n' "$*"; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

BENCH_ARGS=(--warm-up-time 1 --measurement-time 2 --sample-size 10)
if [ -n "${PREBUILT:-}" ]; then
  step "parity tests (prebuilt)"
  "$PREBUILT"/device_parity --test-threads 1
  step "kernel benches (prebuilt)"
  CRITERION_HOME=${CRITERION_HOME:-$PWD/target/criterion} "$PREBUILT"/gpu_kernels --bench "${BENCH_ARGS[@]}"
  CRITERION_DIR=${CRITERION_HOME:-$PWD/target/criterion}
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
  step "parity tests"
  cargo test --release -p pulsefocus-gpu --test device_parity -- --test-threads 1
  step "kernel benches"
  cargo bench -p pulsefocus-benches --bench gpu_kernels -- "${BENCH_ARGS[@]}"
  CRITERION_DIR=$CARGO_TARGET_DIR/criterion
fi

step "PyTorch + cuDNN side by side"
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  python3 benches/gpu_kernels_torch.py --criterion "$CRITERION_DIR"
else
  echo "skipped: PyTorch with CUDA is not importable here"
fi

#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU (well under 8 minutes):
# 1. parity: the Backend suite on the real GPU (every `Backend` method
#    against the CPU backend, gpu-kernels/tests/backend_suite.rs, its `cuda`
#    tests; they fail, not skip, without a GPU);
# 2. training on the GPU: `pulsefocus train --device gpu` against
#    `--device cpu` on a tiny synthetic dataset with the same seed, printing
#    both runs' losses step by step and failing when they differ by more than
#    LOSS_RTOL (default 5e-3, relative); with cargo, also tests/gpu.rs
#    (train, eval and infer with --device gpu and auto run on the GPU);
# 3. criterion benches of the kernels (conv passes at YOLOv3-MobileNetV1
#    shapes, GEMM, BN, decode, NMS), short measurement times;
# 4. a YOLOv3-MobileNetV1 training step on the GPU (320x320, batch 8):
#    `pulsefocus bench train-step --device gpu`, images/s and the planned and
#    peak device memory;
# 5. the PyTorch + cuDNN / torchvision side (benches/gpu_kernels_torch.py,
#    benches/train_step_torch.py --device cuda), printing pulsefocus / PyTorch
#    ratios, when torch with CUDA is importable.
#
# With cargo on the machine it builds here. Without one (a Jetson with only
# the driver), build on another x86-64/aarch64 machine of the same
# architecture and pass the binaries' folder:
#   cargo test --release -p pulsefocus-gpu --test backend_suite --no-run
#   cargo bench -p pulsefocus-benches --bench gpu_kernels --no-run
#   cargo build --release -p pulsefocus
#   PREBUILT=dir-with-backend_suite-gpu_kernels-and-pulsefocus bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export PULSEFOCUS_REQUIRE_GPU=1
step() { printf '\n=== %s\n' "$*"; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# Trains the demo's small model from fresh weights on 64/96-pixel synthetic
# images with `--device cpu` and `--device gpu` (same seed, a constant
# learning rate from the first step so that the first update shows in the
# second loss, a log line per step) and compares the losses. Two steps, as
# tests/gpu.rs: from fresh weights on inputs this small, training is chaotic
# (the stride-32 maps are 2x2, batch norm divides by the spread of 8 values;
# perturbing the weights by 1e-6 relative moves the first gradients by 8%
# median), so later steps drift apart by a few percent for any rounding
# difference. On the emulated GPU (PULSEFOCUS_GPU_EMULATOR=1, same script):
# step 1 differs by 4e-6, step 2 by 1.2e-3, step 6 by 5%.
train_on_gpu_against_cpu() {
  local pulsefocus=$1 work
  work=$(mktemp -d)
  "$pulsefocus" synth --out "$work/dataset/synth" --classes 3 --images 16 --size 96 --format voc >/dev/null
  cat >"$work/tiny.ron" <<EOF
(
    _BASE_: ["$PWD/configs/demo.ron"],
    max_iters: 2,
    snapshot_iter: 2,
    log_iter: 1,
    log_smooth_window: 1,
    LearningRate: (
        base_lr: 0.001,
        schedulers: [
            PiecewiseDecay(gamma: 0.1, milestones: [100000]),
            LinearWarmup(start_factor: 1.0, steps: 1),
        ],
    ),
    TrainReader: (
        batch_transforms: [
            RandomShape(sizes: [64, 96], random_inter: true),
            NormalizeImage(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true, is_channel_first: false),
            Permute(to_bgr: false, channel_first: true),
        ],
        batch_size: 2,
    ),
)
EOF
  local device
  for device in cpu gpu; do
    if ! (cd "$work" && "$pulsefocus" train -c tiny.ron --device "$device" --seed 1 \
      -o "save_dir=out_$device") >"$work/$device.out" 2>"$work/$device.log"; then
      cat "$work/$device.log"
      echo "FAILED: train --device $device"
      return 1
    fi
    grep '^device:' "$work/$device.log"
  done
  # `iter I/N loss X ...`: with log_smooth_window 1, the raw loss of each step.
  awk -v rtol="${LOSS_RTOL:-5e-3}" '
    FNR == 1 { file++ }
    /^iter / { loss[file, $2] = $4; if (file == 1) order[++n] = $2 }
    END {
      printf "%-8s %14s %14s %10s\n", "iter", "cpu loss", "gpu loss", "rel diff"
      bad = (n == 0)
      for (i = 1; i <= n; i++) {
        it = order[i]; c = loss[1, it]; g = loss[2, it]
        scale = (c < 0 ? -c : c); if (scale < 1) scale = 1
        d = (g == "" ? 1e30 : (c - g) / scale); if (d < 0) d = -d
        printf "%-8s %14s %14s %10.2e\n", it, c, g, d
        if (d > rtol) bad = 1
      }
      if (bad) { print "FAILED: the GPU losses differ from the CPU ones by more than " rtol; exit 1 }
      print "GPU and CPU losses agree within " rtol
    }' "$work/cpu.log" "$work/gpu.log"
  for device in cpu gpu; do
    printf '%s, last step: ' "$device"
    grep '^iter' "$work/$device.log" | tail -1 | sed 's/.* lr [^ ]* //'
  done
  rm -rf "$work"
}

BENCH_ARGS=(--warm-up-time 1 --measurement-time 2 --sample-size 10)
if [ -n "${PREBUILT:-}" ]; then
  step "parity tests (prebuilt)"
  "$PREBUILT"/backend_suite --test-threads 1 cuda::
  PULSEFOCUS=$PREBUILT/pulsefocus
  step "train --device gpu against --device cpu (prebuilt)"
  train_on_gpu_against_cpu "$PULSEFOCUS"
  step "kernel benches (prebuilt)"
  CRITERION_HOME=${CRITERION_HOME:-$PWD/target/criterion} "$PREBUILT"/gpu_kernels --bench "${BENCH_ARGS[@]}"
  CRITERION_DIR=${CRITERION_HOME:-$PWD/target/criterion}
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
  step "parity tests"
  cargo test --release -p pulsefocus-gpu --test backend_suite -- --test-threads 1 cuda::
  step "train --device gpu against --device cpu"
  cargo build --release -p pulsefocus
  PULSEFOCUS=$CARGO_TARGET_DIR/release/pulsefocus
  train_on_gpu_against_cpu "$PULSEFOCUS"
  step "end-to-end: train, eval and infer with --device gpu and auto"
  cargo test --release -p pulsefocus --test gpu
  step "kernel benches"
  cargo bench -p pulsefocus-benches --bench gpu_kernels -- "${BENCH_ARGS[@]}"
  CRITERION_DIR=$CARGO_TARGET_DIR/criterion
fi

step "training step on the GPU: YOLOv3-MobileNetV1, 320x320, batch 8"
"$PULSEFOCUS" bench train-step --device gpu --model yolov3_mobilenet_v1 --classes 20 \
  --batch 8 --size 320 --steps 10

step "PyTorch + cuDNN side by side"
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  python3 benches/gpu_kernels_torch.py --criterion "$CRITERION_DIR"
  python3 benches/train_step_torch.py --device cuda --batch 8 --size 320 --steps 10 \
    --pulsefocus "$PULSEFOCUS"
else
  echo "skipped: PyTorch with CUDA is not importable here"
fi

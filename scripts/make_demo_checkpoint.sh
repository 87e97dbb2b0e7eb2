#!/usr/bin/env bash
# Makes the checkpoint `pulsefocus demo` fine-tunes: the demo's small model
# (configs/demo.ron: MobileNetV1 x0.25, head width 128) pretrained from random
# initialisation by pulsefocus itself on synthetic classes the demo never
# sees (catalogue entries FIRST_CLASS.. instead of the demo's 0..2), then
# converted to a float32 Paddle model-zoo archive (float16 overflows the
# running variances of early batch norms, which exceed 65504) (one top-level folder of
# per-variable files) at cli/assets/, where the CLI embeds it.
#
# Usage: scripts/make_demo_checkpoint.sh [ITERS]
# Environment: CARGO_TARGET_DIR (default: target), FIRST_CLASS (default 6),
# CLASSES (default 6), IMAGES (default 800), SEED (default 1).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
iters=${1:-4000}
first_class=${FIRST_CLASS:-6}
classes=${CLASSES:-6}
images=${IMAGES:-800}
seed=${SEED:-1}
target=${CARGO_TARGET_DIR:-$repo/target}

cargo build --release -p pulsefocus --manifest-path "$repo/Cargo.toml"
bin=$target/release/pulsefocus

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" synth --out dataset/synth --format voc --classes "$classes" \
    --first-class "$first_class" --images "$images" --seed "$seed"
# The demo's config with more classes and a longer schedule (milestones at
# 2/3 and 9/10 of ITERS); the save directory follows this file's name.
cat > pretrain.ron <<RON
(
    _BASE_: ["$repo/configs/demo.ron"],
    num_classes: $classes,
    max_iters: $iters,
    snapshot_iter: $iters,
    LearningRate: (
        base_lr: 0.001,
        schedulers: [
            PiecewiseDecay(gamma: 0.1, milestones: [$((iters * 2 / 3)), $((iters * 9 / 10))]),
            LinearWarmup(start_factor: 0.0, steps: 50),
        ],
    ),
)
RON
"$bin" train -c pretrain.ron --seed "$seed" --eval
mkdir -p "$repo/cli/assets"
"$bin" convert-weights output/pretrain/model_final \
    "$repo/cli/assets/yolov3_small_synth_pretrained.tar" --to tar
ls -l "$repo/cli/assets/yolov3_small_synth_pretrained.tar"

#!/usr/bin/env bash
# Issue 13's "done when", end to end as a user runs it: a small MobileNet-SSD
# (configs/ssd_demo.ron) trained by pulsefocus from random initialisation on
# synthetic classes (catalogue entries 6..11), then fine-tuned from that
# checkpoint on three other classes (catalogue 0..2) with the seed guide's
# exclusion `^conv2d_`, evaluated before (the fine-tune's starting model:
# backbone loaded, head fresh) and after, and run by `infer`.
#
# Usage: scripts/ssd_finetune_demo.sh [WORKDIR]
# Environment: PULSEFOCUS (default: target/release/pulsefocus, built if
# missing), PRETRAIN_ITERS (1500), ITERS (1500), FULL_WIDTH (set to 1 for
# ssd_mobilenet_v1_voc.ron's widths: the whole MobileNetV1 and its extra
# blocks, on the demo's data and schedule).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
bin=${PULSEFOCUS:-$repo/target/release/pulsefocus}
pretrain_iters=${PRETRAIN_ITERS:-1500}
iters=${ITERS:-1500}
[ -x "$bin" ] || cargo build --release -p pulsefocus --manifest-path "$repo/Cargo.toml"

mkdir -p "$work"
cd "$work"
cp -r "$repo/configs" .
demo=ssd_demo
if [ "${FULL_WIDTH:-0}" = 1 ]; then
    demo=ssd_full_demo
    cat > configs/$demo.ron <<RON
(
    _BASE_: ["ssd_demo.ron"],
    weights: "output/$demo/model_final",
    MobileNet: (
        conv_group_scale: 1,
        extra_block_filters: [[256, 512], [128, 256], [128, 256], [64, 128]],
    ),
)
RON
fi
"$bin" synth --out pretrain/dataset/synth --format voc --classes 6 --first-class 6 \
    --images 800 --seed 1
"$bin" synth --out dataset/synth --format voc --classes 3 --images 300 --seed 2

# The checkpoint: the same small model on the six other classes, from random
# weights, so with the backbone at the full learning rate.
cat > pretrain/ssd_pretrain.ron <<RON
(
    _BASE_: ["../configs/$demo.ron"],
    num_classes: 7,
    max_iters: $pretrain_iters,
    snapshot_iter: $pretrain_iters,
    MobileNet: (conv_learning_rate: 1.0),
)
RON
(cd pretrain && "$bin" train -c ssd_pretrain.ron --seed 1 --eval)
checkpoint=$work/pretrain/output/ssd_pretrain/model_final

# Where the fine-tune starts: the loading rules' model after a single step
# (eval needs saved weights; one step at lr 1e-3 barely moves them).
"$bin" train -c configs/$demo.ron -o pretrain_weights="$checkpoint" \
    "finetune_exclude_pretrained_params=['^conv2d_']" max_iters=1 save_dir=start
"$bin" eval -c configs/$demo.ron -o weights=start/$demo/model_final

# The fine-tune, as the issue's command with the demo's model and data.
"$bin" plan -c configs/$demo.ron -o pretrain_weights="$checkpoint" \
    "finetune_exclude_pretrained_params=['^conv2d_']"
"$bin" train -c configs/$demo.ron --eval -o pretrain_weights="$checkpoint" \
    "finetune_exclude_pretrained_params=['^conv2d_']" max_iters="$iters"
"$bin" eval -c configs/$demo.ron -o weights=output/$demo/model_final
"$bin" infer -c configs/$demo.ron -o weights=output/$demo/model_final \
    --infer_dir dataset/synth/JPEGImages --output_dir output/$demo/infer
echo "work directory: $work"

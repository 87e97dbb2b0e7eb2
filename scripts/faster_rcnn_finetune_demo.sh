#!/usr/bin/env bash
# Issue 14's "done when", end to end as a user runs it: the seed guide's
# Faster R-CNN command on a small C4 model (configs/faster_rcnn_demo.ron,
# batch-norm ResNet as the FPN config has it). First a checkpoint: the same
# model trained by pulsefocus from random initialisation on synthetic
# classes (catalogue entries 6..11), every stage and norm trained. Then the
# fine-tune from that checkpoint on three other classes (catalogue 0..2)
# with the seed's exclusion `['cls_score','bbox_pred']`, evaluated before
# (the fine-tune's starting model: backbone and RPN loaded, box head fresh)
# and after, and run by `infer`.
#
# Usage: scripts/faster_rcnn_finetune_demo.sh [WORKDIR]
# Environment: PULSEFOCUS (default: target/release/pulsefocus, built if
# missing), PRETRAIN_ITERS (1500), ITERS (1000).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
bin=${PULSEFOCUS:-$repo/target/release/pulsefocus}
pretrain_iters=${PRETRAIN_ITERS:-1500}
iters=${ITERS:-1000}
[ -x "$bin" ] || cargo build --release -p pulsefocus --manifest-path "$repo/Cargo.toml"

mkdir -p "$work"
cd "$work"
cp -r "$repo/configs" .
"$bin" synth --out pretrain/dataset/synth --format voc --classes 6 --first-class 6 \
    --images 600 --seed 1
"$bin" synth --out dataset/synth --format voc --classes 3 --images 200 --seed 2

# The checkpoint: the same small model on the six other classes, from random
# weights, so with every stage and its batch norms trained.
cat > pretrain/faster_rcnn_pretrain.ron <<RON
(
    _BASE_: ["../configs/faster_rcnn_demo.ron"],
    num_classes: 7,
    max_iters: $pretrain_iters,
    snapshot_iter: $pretrain_iters,
    ResNet: (width: 8, blocks: [1, 1, 2, 1], norm_type: "bn", freeze_norm: false, freeze_at: 0),
    ResNetC5: (width: 8, blocks: [1, 1, 2, 1], norm_type: "bn", freeze_norm: false),
)
RON
(cd pretrain && "$bin" train -c faster_rcnn_pretrain.ron --seed 1 --eval)
checkpoint=$work/pretrain/output/faster_rcnn_pretrain/model_final
exclude="finetune_exclude_pretrained_params=['cls_score','bbox_pred']"

# Where the fine-tune starts: the loading rules' model after a single step at
# the warm-up's first learning rate.
"$bin" train -c configs/faster_rcnn_demo.ron -o pretrain_weights="$checkpoint" "$exclude" \
    max_iters=1 save_dir=start
"$bin" eval -c configs/faster_rcnn_demo.ron -o weights=start/faster_rcnn_demo/model_final

# The fine-tune, as the seed's command with the demo's model and data.
"$bin" plan -c configs/faster_rcnn_demo.ron -o pretrain_weights="$checkpoint" "$exclude"
"$bin" train -c configs/faster_rcnn_demo.ron --eval -o pretrain_weights="$checkpoint" \
    "$exclude" max_iters="$iters"
"$bin" eval -c configs/faster_rcnn_demo.ron -o weights=output/faster_rcnn_demo/model_final
"$bin" infer -c configs/faster_rcnn_demo.ron -o weights=output/faster_rcnn_demo/model_final \
    --infer_dir dataset/synth/JPEGImages --output_dir output/faster_rcnn_demo/infer
echo "work directory: $work"

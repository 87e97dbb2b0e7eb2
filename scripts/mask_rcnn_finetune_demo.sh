#!/usr/bin/env bash
# Issue 15's "done when" for Mask R-CNN, end to end as a user runs it: the
# seed guide's Mask R-CNN exclusion `['cls_score','bbox_pred','mask_fcn_logits']`
# on the small FPN model of configs/mask_rcnn_fpn_demo.ron and a synthetic
# COCO dataset whose shapes carry their outlines as polygons. First a
# checkpoint: the same model trained by pulsefocus from random weights on six
# synthetic classes (catalogue entries 6..11), every stage and its batch norms
# trained. Then the fine-tune from that checkpoint on three other classes
# (catalogue 0..2), evaluated (COCO box and mask mAP) before (the fine-tune's
# starting model: everything loaded but the three class-dependent heads) and
# after, and run by `infer` (masks drawn).
#
# Usage: scripts/mask_rcnn_finetune_demo.sh [WORKDIR]
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
"$bin" synth --out pretrain/dataset/synth --format coco --classes 6 --first-class 6 \
    --images 600 --seed 1
"$bin" synth --out dataset/synth --format coco --classes 3 --images 200 --seed 2

# The checkpoint: the same small model on the six other classes, from random
# weights, so with every stage and its batch norms trained.
cat > pretrain/mask_rcnn_pretrain.ron <<RON
(
    _BASE_: ["../configs/mask_rcnn_fpn_demo.ron"],
    num_classes: 7,
    max_iters: $pretrain_iters,
    snapshot_iter: $pretrain_iters,
    ResNet: (width: 8, blocks: [1, 1, 2, 1], norm_type: "bn", freeze_norm: false, freeze_at: 0),
)
RON
(cd pretrain && "$bin" train -c mask_rcnn_pretrain.ron --seed 1 --eval)
checkpoint=$work/pretrain/output/mask_rcnn_pretrain/model_final
exclude="finetune_exclude_pretrained_params=['cls_score','bbox_pred','mask_fcn_logits']"

# Where the fine-tune starts: the loading rules' model after a single step at
# the warm-up's first learning rate.
"$bin" train -c configs/mask_rcnn_fpn_demo.ron -o pretrain_weights="$checkpoint" "$exclude" \
    max_iters=1 save_dir=start
"$bin" eval -c configs/mask_rcnn_fpn_demo.ron -o weights=start/mask_rcnn_fpn_demo/model_final

# The fine-tune, with the seed's exclusion list for Mask R-CNN.
"$bin" plan -c configs/mask_rcnn_fpn_demo.ron -o pretrain_weights="$checkpoint" "$exclude"
"$bin" train -c configs/mask_rcnn_fpn_demo.ron --eval -o pretrain_weights="$checkpoint" \
    "$exclude" max_iters="$iters"
"$bin" eval -c configs/mask_rcnn_fpn_demo.ron -o weights=output/mask_rcnn_fpn_demo/model_final
"$bin" infer -c configs/mask_rcnn_fpn_demo.ron -o weights=output/mask_rcnn_fpn_demo/model_final \
    --infer_dir dataset/synth/JPEGImages --output_dir output/mask_rcnn_fpn_demo/infer
echo "work directory: $work"

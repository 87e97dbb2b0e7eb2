#!/usr/bin/env bash
# The seed guide's R-CNN fine-tunes end to end as a user runs them (issues
# 14 and 15's "done when"), on a small model and synthetic data. First a
# checkpoint: the same model trained by pulsefocus from random weights on six
# synthetic classes (catalogue entries 6..11), every stage and its batch norms
# trained. Then the fine-tune from that checkpoint on three other classes
# (catalogue 0..2) with the seed's exclusion list for the model, evaluated
# before (the fine-tune's starting model: everything loaded but the excluded
# class-dependent outputs) and after, and run by `infer`.
#
#   MODEL               config                           data   exclusion
#   faster_rcnn         configs/faster_rcnn_demo.ron     VOC    cls_score, bbox_pred
#   mask_rcnn           configs/mask_rcnn_fpn_demo.ron   COCO   ... and mask_fcn_logits
#   cascade_rcnn        configs/cascade_rcnn_fpn_demo.ron COCO  cls_score, bbox_pred
#   cascade_mask_rcnn   configs/cascade_mask_rcnn_fpn_demo.ron COCO ... and mask_fcn_logits
#
#   faster_rcnn_r50_fpn configs/faster_rcnn_r50_fpn_1x.ron COCO cls_score, bbox_pred
#   faster_rcnn_r50     configs/faster_rcnn_r50_1x.ron   COCO   cls_score, bbox_pred
#
# The mask models' COCO data carries each shape's outline as a polygon; their
# evaluation scores boxes and masks and `infer` draws the masks.
#
# The last two run the shipped ResNet50 configs themselves: the full model,
# through configs/<config>_synth.ron, which changes only the data (the
# synthetic pictures at their 256 pixels instead of 800), the class count and
# a schedule as short as the run. The checkpoint is the same model trained
# with batch norms everywhere; the C4 config's affine channels load it with
# the statistics fused. On two CPU cores a step of batch 2 takes about 4 s
# (FPN) and about 20 s (C4: res5 runs on each of 512 RoIs a picture).
# ROIS=N samples N RoIs a picture instead (`BBoxAssigner.batch_size_per_im`)
# and keeps 300 proposals a picture at evaluation instead of 1000 (C4's
# evaluation runs res5 on each), for a CPU; START=CHECKPOINT starts the
# pretraining from a checkpoint (the FPN model's, for C4: its ResNet50 with
# res5) instead of random weights.
#
# Usage: scripts/rcnn_finetune_demo.sh MODEL [WORKDIR]
# Environment: PULSEFOCUS (default: target/release/pulsefocus, built if
# missing), PRETRAIN_ITERS (1500), ITERS (1000), ROIS, START (full models).
set -euo pipefail

model=${1:?usage: scripts/rcnn_finetune_demo.sh faster_rcnn|mask_rcnn|cascade_rcnn|cascade_mask_rcnn|faster_rcnn_r50_fpn|faster_rcnn_r50 [WORKDIR]}
# The pretraining trains every norm; C4's res5 head has its own section.
resnet='ResNet: (width: 8, blocks: [1, 1, 2, 1], norm_type: "bn", freeze_norm: false, freeze_at: 0),'
boxes="'cls_score','bbox_pred'"
case $model in
faster_rcnn)
    demo=faster_rcnn_demo format=voc exclude=$boxes
    resnet="$resnet
    ResNetC5: (width: 8, blocks: [1, 1, 2, 1], norm_type: \"bn\", freeze_norm: false),"
    ;;
mask_rcnn) demo=mask_rcnn_fpn_demo format=coco exclude="$boxes,'mask_fcn_logits'" ;;
cascade_rcnn) demo=cascade_rcnn_fpn_demo format=coco exclude=$boxes ;;
cascade_mask_rcnn) demo=cascade_mask_rcnn_fpn_demo format=coco exclude="$boxes,'mask_fcn_logits'" ;;
faster_rcnn_r50_fpn)
    full=faster_rcnn_r50_fpn_1x format=coco exclude=$boxes
    resnet='ResNet: (norm_type: "bn", freeze_norm: false, freeze_at: 0),'
    ;;
faster_rcnn_r50)
    full=faster_rcnn_r50_1x format=coco exclude=$boxes
    resnet='ResNet: (norm_type: "bn", freeze_norm: false, freeze_at: 0),
    ResNetC5: (norm_type: "bn", freeze_norm: false),'
    ;;
*)
    echo "error: unknown model '$model' (faster_rcnn, mask_rcnn, cascade_rcnn, cascade_mask_rcnn, faster_rcnn_r50_fpn or faster_rcnn_r50)" >&2
    exit 2
    ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$(mktemp -d)}
bin=${PULSEFOCUS:-$repo/target/release/pulsefocus}
pretrain_iters=${PRETRAIN_ITERS:-1500}
iters=${ITERS:-1000}
[ -x "$bin" ] || cargo build --release -p pulsefocus --manifest-path "$repo/Cargo.toml"

mkdir -p "$work"
cd "$work"
cp -r "$repo/configs" .
. "$repo/scripts/synth_config.sh"
pretrain_schedule= cpu_fit= start=
if [ -n "${full:-}" ]; then
    demo=${full}_synth
    [ -z "${ROIS:-}" ] || cpu_fit="BBoxAssigner: (batch_size_per_im: $ROIS),
    RPNHead: (test_proposal: (post_nms_top_n: 300)),"
    [ -z "${START:-}" ] || start="pretrain_weights: \"$(realpath -m "$START")\","
    synth_config "$full" "$demo" 4 "$iters" 0.01 "$cpu_fit"
    pretrain_schedule=$(schedule "$pretrain_iters" 0.01)
fi
"$bin" synth --out pretrain/dataset/synth --format "$format" --classes 6 --first-class 6 \
    --images 600 --seed 1
"$bin" synth --out dataset/synth --format "$format" --classes 3 --images 200 --seed 2

# The checkpoint: the same small model on the six other classes.
cat > "pretrain/${model}_pretrain.ron" <<RON
(
    _BASE_: ["../configs/$demo.ron"],
    num_classes: 7,
    max_iters: $pretrain_iters,
    snapshot_iter: $pretrain_iters,
    $start
    $resnet
    $pretrain_schedule
)
RON
(cd pretrain && "$bin" train -c "${model}_pretrain.ron" --seed 1 --eval)
checkpoint=$work/pretrain/output/${model}_pretrain/model_final
exclude="finetune_exclude_pretrained_params=[$exclude]"

# Where the fine-tune starts: the loading rules' model after a single step at
# the warm-up's first learning rate.
"$bin" train -c "configs/$demo.ron" -o pretrain_weights="$checkpoint" "$exclude" \
    max_iters=1 save_dir=start
"$bin" eval -c "configs/$demo.ron" -o "weights=start/$demo/model_final"

# The fine-tune, as the seed's command with the demo's model and data.
"$bin" plan -c "configs/$demo.ron" -o pretrain_weights="$checkpoint" "$exclude"
"$bin" train -c "configs/$demo.ron" --eval -o pretrain_weights="$checkpoint" \
    "$exclude" max_iters="$iters"
"$bin" eval -c "configs/$demo.ron" -o "weights=output/$demo/model_final"
"$bin" infer -c "configs/$demo.ron" -o "weights=output/$demo/model_final" \
    --infer_dir dataset/synth/JPEGImages --output_dir "output/$demo/infer"
echo "work directory: $work"

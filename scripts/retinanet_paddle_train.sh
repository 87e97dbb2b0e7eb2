#!/usr/bin/env bash
# PaddleDetection's own RetinaNet training on the data and checkpoint of
# `FULL=1 scripts/retinanet_finetune_demo.sh`'s pretraining, for comparing
# the loss curves (docs/models.md, "The full-size model, fine-tuned"; each
# side draws its own picture order and starting weights):
# retinanet_r50_fpn_1x.yml with the synthetic COCO data at 256 pixels,
# batch 2, learning rate 0.00125 with a warm-up of 200 steps, the ResNet's
# batch norms frozen (`norm_type: bn`, so that a checkpoint trained with
# batch norms loads its statistics; with exclusion patterns Paddle would
# not fuse them into affine channels) and the pyramid left out of the
# checkpoint as the demo does.
#
# Needs ../shared/reference (ppdet-static and the environment ppdet18.sh
# makes); nothing in the tests uses this.
#
# Usage: scripts/retinanet_paddle_train.sh DATASET CHECKPOINT [ITERS] [OUT]
#   DATASET: the demo's pretrain/dataset/synth; CHECKPOINT: the Faster R-CNN
#   checkpoint (path without .pdparams). Environment: PYTHON (default
#   /root/.cache/ppdet18/bin/python), PPDET (default ../shared/reference/ppdet-static).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dataset=$(realpath "${1:?usage: scripts/retinanet_paddle_train.sh DATASET CHECKPOINT [ITERS] [OUT]}")
checkpoint=$(realpath -m "${2:?checkpoint}")
iters=${3:-600}
out=$(realpath -m "${4:-$(mktemp -d)}")
python=${PYTHON:-/root/.cache/ppdet18/bin/python}
ppdet=$(realpath "${PPDET:-$repo/../shared/reference/ppdet-static}")
mkdir -p "$out"

# The shipped YAML (its reader include made absolute), then the keys this
# run changes; PyYAML keeps the last of a repeated key.
{
    sed "s|_READER_: 'faster_fpn_reader.yml'|_READER_: '$ppdet/configs/faster_fpn_reader.yml'|" \
        "$ppdet/configs/retinanet_r50_fpn_1x.yml"
    cat <<YML
use_gpu: false
max_iters: $iters
num_classes: 7
log_iter: 20
snapshot_iter: 100000
save_dir: $out/output
pretrain_weights: $checkpoint
finetune_exclude_pretrained_params: ['fpn_']
ResNet:
  norm_type: bn
  freeze_norm: true
  freeze_at: 2
  depth: 50
  feature_maps: [3, 4, 5]
  variant: b
LearningRate:
  base_lr: 0.00125
  schedulers:
  - !PiecewiseDecay
    gamma: 0.1
    milestones: [$((iters * 4 / 5)), $((iters * 14 / 15))]
  - !LinearWarmup
    start_factor: 0.3333333333333333
    steps: 200
TrainReader:
  inputs_def:
    fields: ['image', 'im_info', 'im_id', 'gt_bbox', 'gt_class', 'is_crowd']
  dataset:
    !COCODataSet
    image_dir: JPEGImages
    anno_path: annotations/instances_train.json
    dataset_dir: $dataset
  sample_transforms:
  - !DecodeImage
    to_rgb: true
  - !RandomFlipImage
    prob: 0.5
  - !NormalizeImage
    is_channel_first: false
    is_scale: true
    mean: [0.485, 0.456, 0.406]
    std: [0.229, 0.224, 0.225]
  - !ResizeImage
    target_size: 256
    max_size: 256
    interp: 1
    use_cv2: true
  - !Permute
    to_bgr: false
    channel_first: true
  batch_transforms:
  - !PadBatch
    pad_to_stride: 128
  batch_size: 2
  shuffle: true
  worker_num: 1
  use_process: false
YML
} > "$out/retinanet_synth.yml"

# Paddle 1.8.5 predates is_compiled_with_npu, which the tools call.
cd "$ppdet"
CPU_NUM=1 OMP_NUM_THREADS=2 "$python" - "$out/retinanet_synth.yml" <<'PY' 2>&1 | tee "$out/train.log"
import runpy, sys
import paddle.fluid as fluid
fluid.core.is_compiled_with_npu = lambda: False
sys.argv = ['train.py', '-c', sys.argv[1]]
sys.path.insert(0, '.')
runpy.run_path('tools/train.py', run_name='__main__')
PY

#!/usr/bin/env python3
"""One Faster R-CNN ResNet50 training step in PyTorch + torchvision (eager,
CPU, 2 threads), side by side with `pulsefocus bench train-step -c
configs/faster_rcnn_r50_fpn_1x.ron` (--arch fpn) or `-c
configs/faster_rcnn_r50_1x.ron` (--arch c4).

--arch fpn is torchvision's `fasterrcnn_resnet50_fpn` as
`fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
trainable_backbone_layers=3)` would build it for fine-tuning from ImageNet
weights: frozen batch norm, the stem and res2 frozen (PaddleDetection's
`freeze_at: 2`, `freeze_norm: true`). Without pretrained weights that call
itself would train every layer with live batch norm, so the script builds the
same model from its parts instead.

--arch c4: torchvision has no C4 model, so the script assembles one from
torchvision's `FasterRCNN` parts the way PaddleDetection's
faster_rcnn_r50_1x.yml is built: ResNet50 (v1.5, i.e. Paddle's variant b)
stem..res4 as the backbone (stride 16, 1024 channels), one anchor level at
stride 16 with sizes 32..512 and ratios 0.5/1/2, 12000 / 2000 proposals
before / after the RPN's NMS, 14x14 RoIAlign (sampling ratio 0, not aligned,
as Paddle 1.x), res5 on the RoIs, global average pool, `cls_score` and
`bbox_pred`.

Both: min_size = --size (800 by default, the configs' target size), max_size
1333, so the square input is neither resized nor padded, 81 classes with the background, 256 anchors and 512 RoIs sampled per
image, momentum SGD (0.9, weight decay 1e-4), one image with the six boxes
`bench train-step` draws (`SyntheticBatch`: classes from 1, pixels with
Paddle's x2 = x1 + w - 1).

The learning rate is 0 on both sides unless --lr says otherwise: from random
weights (frozen norms with scale 1, nothing pretrained) the configs' 0.01
makes the first update blow the model up, after which no proposal survives
and the box head sees only the ground-truth boxes (6 RoIs instead of 512), on
both sides: the steps would time a fraction of the work. At 0 every step does
the first step's work (the update itself still runs: momentum, decay, the
parameter write).

    pip install torch torchvision
    cargo build --release -p pulsefocus
    python3 benches/train_step_faster_rcnn_torch.py --arch c4 \\
        --pulsefocus target/release/pulsefocus --rounds 2
"""
import torch.nn as nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

import torch_step
import torchvision_step

CONFIGS = {"fpn": "configs/faster_rcnn_r50_fpn_1x.ron", "c4": "configs/faster_rcnn_r50_1x.ron"}


def fpn_model(num_classes, min_size):
    resnet = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(resnet, trainable_layers=3)
    return FasterRCNN(backbone, num_classes, min_size=min_size, max_size=1333)


class Res5Head(nn.Module):
    """res5 on each 14x14 RoI (stride 2 to 7x7), then the global average."""

    def __init__(self, layer4):
        super().__init__()
        self.res5 = layer4

    def forward(self, x):
        return self.res5(x).mean((2, 3))


def c4_model(num_classes, min_size):
    r = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)
    for p in [*r.conv1.parameters(), *r.layer1.parameters()]:
        p.requires_grad_(False)
    backbone.out_channels = 1024
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(
        backbone, None, min_size=min_size, max_size=1333,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0),
        box_head=Res5Head(r.layer4),
        box_predictor=FastRCNNPredictor(2048, num_classes))


def main():
    ap = torchvision_step.arguments()
    ap.add_argument("--arch", choices=sorted(CONFIGS), default="fpn")
    args = ap.parse_args()
    torch_step.setup(args)
    # min_size = the input's side: torchvision neither resizes nor pads it.
    model = (fpn_model if args.arch == "fpn" else c4_model)(args.classes, args.size).train()
    boxes, labels = torchvision_step.paddle_boxes(args)
    targets = [{"boxes": b, "labels": l + 1} for b, l in zip(boxes, labels)]
    torchvision_step.compare(args, model, targets, CONFIGS[args.arch])


if __name__ == "__main__":
    main()

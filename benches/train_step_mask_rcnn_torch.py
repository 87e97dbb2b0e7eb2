#!/usr/bin/env python3
"""One Mask R-CNN ResNet50-FPN training step in PyTorch + torchvision (eager,
CPU, 2 threads), side by side with `pulsefocus bench train-step -c
configs/mask_rcnn_r50_fpn_1x.ron`.

The model is torchvision's `maskrcnn_resnet50_fpn` as
`maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
trainable_backbone_layers=3)` would build it for fine-tuning from ImageNet
weights: frozen batch norm, the stem and res2 frozen (PaddleDetection's
`freeze_at: 2`, `freeze_norm: true`). Without pretrained weights that call
itself would train every layer with live batch norm, so the script builds the
same model from its parts (as train_step_faster_rcnn_torch.py does). Both
sides: 14x14 mask RoIAlign, four 3x3 convs of 256, a 2x2 transposed conv to
28x28, one mask per class.

min_size = --size (800 by default), max_size 1333, so the square input is
neither resized nor padded; 81 classes with the background; 256 anchors and
512 RoIs sampled per image; momentum SGD (0.9, weight decay 1e-4); one image
with the six boxes `bench train-step` draws (`SyntheticBatch`: classes from
1, pixels with Paddle's x2 = x1 + w - 1), each object's mask its box (the
polygon pulsefocus's side gets is the box's outline). The learning rate is 0
on both sides unless --lr says otherwise (see train_step_faster_rcnn_torch.py
for why).

    pip install torch torchvision
    cargo build --release -p pulsefocus
    python3 benches/train_step_mask_rcnn_torch.py \\
        --pulsefocus target/release/pulsefocus --rounds 2
"""
import torch
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

import torch_step
import torchvision_step

CONFIG = "configs/mask_rcnn_r50_fpn_1x.ron"


def model(num_classes, min_size):
    resnet = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(resnet, trainable_layers=3)
    return MaskRCNN(backbone, num_classes, min_size=min_size, max_size=1333)


def main():
    args = torchvision_step.arguments().parse_args()
    torch_step.setup(args)
    net = model(args.classes, args.size).train()
    targets = []
    for boxes, labels in zip(*torchvision_step.paddle_boxes(args)):
        masks = torch.zeros(len(boxes), args.size, args.size, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
            masks[k, max(y1, 0):y2 + 1, max(x1, 0):x2 + 1] = 1
        targets.append({"boxes": boxes, "labels": labels + 1, "masks": masks})
    torchvision_step.compare(args, net, targets, CONFIG)


if __name__ == "__main__":
    main()

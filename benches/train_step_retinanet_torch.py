#!/usr/bin/env python3
"""One RetinaNet ResNet50-FPN training step in PyTorch + torchvision (eager,
CPU, 2 threads), side by side with `pulsefocus bench train-step -c
configs/retinanet_r50_fpn_1x.ron`.

The model is torchvision's `RetinaNet` as `retinanet_resnet50_fpn` builds
it for fine-tuning from ImageNet weights (frozen batch norm, the stem and
res2 frozen: PaddleDetection's `freeze_at: 2`, `freeze_norm: true`), built
from its parts because without pretrained weights that call would train
every layer with live batch norm. Two choices follow PaddleDetection's
retinanet_r50_fpn_1x.yml where torchvision's default differs: P6 is a
stride-2 conv on C5 (2048 channels; `fpn_6`), not on P5, and the class
subnet predicts the 80 object classes (`A * (num_classes - 1)` logits).
Anchors: sizes 32..512 at three scales per octave, ratios 0.5/1/2 (9 per
cell), as both configure them.

min_size = --size (800 by default) and max_size 1333, so the square input
is neither resized nor padded; 81 classes with the background; momentum SGD
(0.9, weight decay 1e-4); one image with the six boxes `bench train-step`
draws (`SyntheticBatch`: classes from 1, pixels with Paddle's
x2 = x1 + w - 1). The learning rate is 0 on both sides unless --lr says
otherwise, as in train_step_faster_rcnn_torch.py: every step then does the
first step's work (the update itself still runs).

    pip install torch torchvision
    cargo build --release -p pulsefocus
    python3 benches/train_step_retinanet_torch.py \\
        --pulsefocus target/release/pulsefocus --rounds 2
"""
from torchvision.models import resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import torch_step
import torchvision_step

CONFIG = "configs/retinanet_r50_fpn_1x.ron"


def model(num_classes, min_size):
    resnet = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    # LastLevelP6P7(2048, 256): in != out channels, so torchvision takes C5.
    backbone = _resnet_fpn_extractor(resnet, trainable_layers=3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(2048, 256))
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3)))
                  for s in [32, 64, 128, 256, 512])
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return RetinaNet(backbone, num_classes - 1, min_size=min_size, max_size=1333,
                     anchor_generator=anchors)


def main():
    args = torchvision_step.arguments().parse_args()
    torch_step.setup(args)
    net = model(args.classes, args.size).train()
    # torchvision's RetinaNet numbers the object classes from 0.
    targets = [{"boxes": b, "labels": l} for b, l in zip(*torchvision_step.paddle_boxes(args))]
    torchvision_step.compare(args, net, targets, CONFIG)


if __name__ == "__main__":
    main()

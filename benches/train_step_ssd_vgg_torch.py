#!/usr/bin/env python3
"""One VGG16-SSD300 training step in PyTorch + torchvision (eager, CPU, 2
threads), side by side with `pulsefocus bench train-step -c
configs/ssd_vgg16_300_voc.ron`.

The torch side is torchvision's own `ssd300_vgg16` (weights=None,
weights_backbone=None: every layer trains, as in PaddleDetection's VGG16-SSD,
which freezes nothing): VGG16 with conv4_3's L2 norm (scale 20), fc6/fc7 as
dilated convolutions, four extra blocks, 3x3 head convs on six levels and
8732 default boxes (PaddleDetection's config: min sizes 30..264, max sizes
60..315, ratios 2 and 3 with flips, the same 8732 priors), matching at IoU
0.5, hard negatives at 3:1, smooth-L1 plus cross-entropy divided by the
positives. torchvision's transform normalises the 300x300 batch and resizes
it to 300 (a no-op size change), as pulsefocus's side gets 300x300 input.
Momentum SGD (0.9, weight decay 5e-4, learning rate 1e-3) as the config; the
synthetic boxes are the ones `bench train-step` draws (`SyntheticBatch`,
classes from 1).

    pip install torch torchvision
    cargo build --release -p pulsefocus
    python3 benches/train_step_ssd_vgg_torch.py --pulsefocus target/release/pulsefocus --rounds 3
"""
import torch
from torchvision.models.detection import ssd300_vgg16

import torch_step
from train_step_torch import synthetic_boxes


def main():
    ap = torch_step.arguments(size=300, classes=21)
    args = ap.parse_args()
    torch_step.setup(args)
    net = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=args.classes).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    images = list(torch.rand(args.batch, 3, args.size, args.size))
    cxcywh, labels = synthetic_boxes(args.batch, args.classes - 1)
    x1y1 = (cxcywh[..., :2] - cxcywh[..., 2:] / 2) * args.size
    x2y2 = (cxcywh[..., :2] + cxcywh[..., 2:] / 2) * args.size
    boxes = torch.cat([x1y1, x2y2], dim=-1)
    targets = [{"boxes": boxes[i], "labels": labels[i] + 1} for i in range(args.batch)]

    def step():
        opt.zero_grad(set_to_none=True)
        losses = net(images, targets)
        loss = sum(losses.values())
        loss.backward()
        opt.step()
        return loss.item()

    torch_step.compare(args, step, ["-c", "configs/ssd_vgg16_300_voc.ron",
                                    "-o", f"num_classes={args.classes}"])


if __name__ == "__main__":
    main()

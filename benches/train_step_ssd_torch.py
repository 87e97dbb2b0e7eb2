#!/usr/bin/env python3
"""One MobileNetV1-SSD training step in PyTorch (eager, CPU, 2 threads),
side by side with `pulsefocus bench train-step -c configs/ssd_mobilenet_v1_voc.ron`.

Same network as PaddleDetection's `ssd_mobilenet_v1_voc` (legacy MobileNetV1
with ReLU, features conv5_5 and conv6, four extra blocks with ReLU6, one 1x1
box conv and one 1x1 score conv per level), the same priors (min/max sizes
60..300, aspect ratios 2 and 3 with flips, variances 0.1/0.2), the same loss
(Paddle's ssd_loss: bipartite then per-prediction matching at IoU 0.5, hard
negatives at 3:1 by the background cross-entropy, softmax cross-entropy and
smooth L1, divided by the batch's positives), RMSProp (rho 0.95) with
PaddleDetection's decay and learning-rate groups, on the synthetic batch
pulsefocus draws (`SyntheticBatch`, classes numbered from 1). Matching and
mining run under no_grad, as Paddle's operators do.

    pip install torch
    cargo build --release -p pulsefocus
    python3 benches/train_step_ssd_torch.py --pulsefocus target/release/pulsefocus --rounds 5
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_step
from train_step_torch import MobileNetV1, conv_bn, synthetic_boxes

EXTRA_BLOCKS = [(256, 512), (128, 256), (128, 256), (64, 128)]
MIN_SIZES = [60.0, 105.0, 150.0, 195.0, 240.0, 285.0]
MAX_SIZES = [None, 150.0, 195.0, 240.0, 285.0, 300.0]
RATIOS = [[2.0]] + [[2.0, 3.0]] * 5
VARIANCE = torch.tensor([0.1, 0.1, 0.2, 0.2])


class SsdBackbone(MobileNetV1):
    FEATURES = (10, 12)  # conv5_5 (stride 16), conv6 (stride 32)

    def __init__(self):
        super().__init__()
        cin = 1024
        self.extras = nn.ModuleList()
        for first, second in EXTRA_BLOCKS:
            self.extras.append(nn.Sequential(conv_bn(cin, first, 1, act="relu6"),
                                             conv_bn(first, second, 3, 2, act="relu6")))
            cin = second

    def forward(self, x):
        feats = super().forward(x)
        x = feats[-1]
        for block in self.extras:
            x = block(x)
            feats.append(x)
        return feats


def priors_per_cell(level):
    return 1 + 2 * len(RATIOS[level]) + (MAX_SIZES[level] is not None)


class MultiBoxHead(nn.Module):
    def __init__(self, num_classes, channels=(512, 1024, 512, 256, 256, 128)):
        super().__init__()
        self.num_classes = num_classes
        self.loc = nn.ModuleList(nn.Conv2d(c, priors_per_cell(l) * 4, 1) for l, c in enumerate(channels))
        self.conf = nn.ModuleList(nn.Conv2d(c, priors_per_cell(l) * num_classes, 1)
                                  for l, c in enumerate(channels))

    def forward(self, feats):
        n = feats[0].shape[0]
        locs = [self.loc[l](f).permute(0, 2, 3, 1).reshape(n, -1, 4) for l, f in enumerate(feats)]
        confs = [self.conf[l](f).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes)
                 for l, f in enumerate(feats)]
        return torch.cat(locs, 1), torch.cat(confs, 1)


def priors(feats, size):
    """Paddle's prior_box per level, row-major cells, x1 y1 x2 y2 normalised."""
    out = []
    for level, f in enumerate(feats):
        h, w = f.shape[2:]
        step_w, step_h = size / w, size / h
        ratios = [1.0]
        for r in RATIOS[level]:
            ratios += [r, 1.0 / r]
        sizes = []
        for r in ratios:
            sizes.append((MIN_SIZES[level] * math.sqrt(r), MIN_SIZES[level] / math.sqrt(r)))
        if MAX_SIZES[level] is not None:
            side = math.sqrt(MIN_SIZES[level] * MAX_SIZES[level])
            sizes.append((side, side))
        for row in range(h):
            for col in range(w):
                cx, cy = (col + 0.5) * step_w, (row + 0.5) * step_h
                for bw, bh in sizes:
                    out.append([(cx - bw / 2) / size, (cy - bh / 2) / size,
                                (cx + bw / 2) / size, (cy + bh / 2) / size])
    return torch.tensor(out)


def iou(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def encode(prior, gt):
    pw, ph = prior[:, 2] - prior[:, 0], prior[:, 3] - prior[:, 1]
    pcx, pcy = prior[:, 0] + pw / 2, prior[:, 1] + ph / 2
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gcx, gcy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
    return torch.stack([(gcx - pcx) / pw, (gcy - pcy) / ph,
                        torch.log(gw / pw), torch.log(gh / ph)], -1) / VARIANCE


def ssd_loss(loc, conf, prior, gt_box, gt_label):
    n, count, _ = loc.shape
    targets = torch.zeros(n, count, dtype=torch.long)
    matched_box = torch.zeros(n, count, 4)
    positive = torch.zeros(n, count, dtype=torch.bool)
    negative = torch.zeros(n, count, dtype=torch.bool)
    with torch.no_grad():
        for b in range(n):
            c = gt_box[b]
            boxes = torch.cat([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2], -1)
            overlaps = iou(boxes, prior)
            match = torch.full((count,), -1, dtype=torch.long)
            dist = overlaps.clone()
            for _ in range(len(boxes)):  # bipartite: greedy global maxima
                value, flat = dist.view(-1).max(0)
                if value < 1e-6:
                    break
                g, p = divmod(int(flat), count)
                match[p] = g
                dist[g, :] = -1
                dist[:, p] = -1
            best, arg = overlaps.max(0)
            free = (match < 0) & (best >= 0.5)
            match[free] = arg[free]
            pos = match >= 0
            positive[b] = pos
            targets[b, pos] = gt_label[b][match[pos]]
            matched_box[b, pos] = boxes[match[pos]]
            background = -F.log_softmax(conf[b], -1)[:, 0]
            candidates = (~pos) & (best < 0.5)
            wanted = min(int(pos.sum()) * 3, int(candidates.sum()))
            order = torch.where(candidates, background, torch.tensor(-1.0)).argsort(descending=True)
            negative[b, order[:wanted]] = True
    norm = positive.sum().clamp(min=1)
    picked = positive | negative
    conf_loss = F.cross_entropy(conf[picked], targets[picked], reduction="sum")
    prior_n = prior.expand(n, -1, -1)
    loc_target = encode(prior_n[positive], matched_box[positive])
    loc_loss = F.smooth_l1_loss(loc[positive], loc_target, reduction="sum")
    return (conf_loss + loc_loss) / norm


def main():
    ap = torch_step.arguments(size=300, classes=21)
    args = ap.parse_args()
    torch_step.setup(args)
    backbone, head = SsdBackbone(), MultiBoxHead(args.classes)
    # PaddleDetection's groups: MobileNet and extra-block conv weights decay 0
    # at a tenth of the learning rate (conv_learning_rate), BN decays 0, the
    # head's weights and biases take the optimizer's 5e-5.
    convs = [m.weight for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    conv_ids = {id(p) for p in convs}
    norms = [p for p in backbone.parameters() if id(p) not in conv_ids]
    lr = 1e-3
    opt = torch.optim.RMSprop([{"params": convs, "lr": lr * 0.1, "weight_decay": 0.0},
                               {"params": norms, "weight_decay": 0.0},
                               {"params": list(head.parameters()), "weight_decay": 5e-5}],
                              lr=lr, alpha=0.95, eps=1e-6, momentum=0.0)
    images = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    gt_box, gt_label = synthetic_boxes(args.batch, args.classes - 1)
    gt_label = gt_label + 1
    with torch.no_grad():
        prior = priors(backbone.eval()(images[:1]), args.size)
    backbone.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loc, conf = head(backbone(images))
        loss = ssd_loss(loc, conf, prior, gt_box, gt_label)
        loss.backward()
        opt.step()
        return loss.item()

    torch_step.compare(args, step, ["-c", "configs/ssd_mobilenet_v1_voc.ron",
                                    "-o", f"num_classes={args.classes}"])


if __name__ == "__main__":
    main()

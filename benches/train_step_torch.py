#!/usr/bin/env python3
"""One YOLOv3-MobileNetV1 training step in PyTorch (eager, CPU, 2 threads),
side by side with `pulsefocus bench train-step`.

Same network as pulsefocus's `yolov3_mobilenet_v1` (PaddleDetection's legacy
MobileNetV1 + YOLOv3 head), same synthetic batch (see `synthetic_boxes`), the
same YOLOv3 loss (Paddle's yolov3_loss: sigmoid CE on x/y, L1 on w/h scaled by
2 - w*h, objectness with the IoU ignore mask, sigmoid CE per class), momentum
SGD with PaddleDetection's decay groups. Prints images/s and peak RSS, and with
--pulsefocus BIN the ratio pulsefocus / torch.

    pip install torch
    cargo build --release -p pulsefocus
    python3 benches/train_step_torch.py --pulsefocus target/release/pulsefocus --rounds 5

With --rounds N the two alternate N times and the medians are compared.
With --device cuda both run on the GPU (PyTorch with cuDNN, pulsefocus with
`--device gpu`), comparing device memory instead of RSS.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_step

ANCHORS = [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119],
           [116, 90], [156, 198], [373, 326]]
MASKS = [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
BOXES_PER_IMAGE = 6


def synthetic_boxes(batch, num_classes):
    """gt boxes (cx, cy, w, h normalised) and labels; pulsefocus draws the same."""
    boxes, labels = [], []
    for b in range(batch):
        for k in range(BOXES_PER_IMAGE):
            t = (b * BOXES_PER_IMAGE + k) * 0.6180339887 % 1.0
            s = (b * BOXES_PER_IMAGE + k) * 0.7548776662 % 1.0
            boxes.append([0.2 + 0.6 * t, 0.2 + 0.6 * s, 0.05 + 0.4 * s, 0.05 + 0.4 * t])
            labels.append((b * BOXES_PER_IMAGE + k) % num_classes)
    return (torch.tensor(boxes).view(batch, BOXES_PER_IMAGE, 4),
            torch.tensor(labels).view(batch, BOXES_PER_IMAGE))


def conv_bn(cin, cout, k, stride=1, groups=1, act="leaky"):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)]
    layers.append({"relu": nn.ReLU, "relu6": nn.ReLU6}.get(act, lambda: nn.LeakyReLU(0.1))())
    return nn.Sequential(*layers)


class MobileNetV1(nn.Module):
    BLOCKS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
              (256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    FEATURES = (3, 5, 12)

    def __init__(self):
        super().__init__()
        self.conv1 = conv_bn(3, 32, 3, 2, act="relu")
        self.blocks = nn.ModuleList(
            nn.Sequential(conv_bn(cin, cin, 3, s, groups=cin, act="relu"),
                          conv_bn(cin, cout, 1, act="relu"))
            for cin, cout, s in self.BLOCKS)

    def forward(self, x):
        x = self.conv1(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.FEATURES:
                feats.append(x)
        return feats


class Yolov3Head(nn.Module):
    def __init__(self, num_classes, feature_channels=(256, 512, 1024)):
        super().__init__()
        self.levels = nn.ModuleList()
        self.outputs = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i in range(3):
            ch = 512 >> i
            cin = feature_channels[2 - i] + (0 if i == 0 else (512 >> (i - 1)) // 2)
            self.levels.append(nn.ModuleList([
                conv_bn(cin, ch, 1), conv_bn(ch, 2 * ch, 3), conv_bn(2 * ch, ch, 1),
                conv_bn(ch, 2 * ch, 3), conv_bn(2 * ch, ch, 1), conv_bn(ch, 2 * ch, 3)]))
            self.outputs.append(nn.Conv2d(2 * ch, 3 * (num_classes + 5), 1))
            if i < 2:
                self.transitions.append(conv_bn(ch, ch // 2, 1))

    def forward(self, feats):
        outs, route = [], None
        for i in range(3):
            x = feats[2 - i] if route is None else torch.cat([route, feats[2 - i]], 1)
            for unit in self.levels[i][:5]:
                x = unit(x)
            route = x
            outs.append(self.outputs[i](self.levels[i][5](x)))
            if i < 2:
                route = F.interpolate(self.transitions[i](route), scale_factor=2, mode="nearest")
        return outs


def yolov3_loss(outs, gt_box, gt_label, num_classes, input_size, ignore_thresh=0.7):
    """Paddle's yolov3_loss (no label smoothing, scores 1), summed over levels,
    mean over the batch. Target assignment is data-dependent control flow done
    under no_grad, as Paddle's kernel does."""
    batch = gt_box.shape[0]
    anchors = torch.tensor(ANCHORS, dtype=torch.float32)
    total = 0.0
    # best anchor of all nine by shape-only IoU
    wh = gt_box[..., 2:] * input_size
    inter = torch.min(wh[..., None, 0], anchors[:, 0]) * torch.min(wh[..., None, 1], anchors[:, 1])
    union = wh[..., None, 0] * wh[..., None, 1] + anchors[:, 0] * anchors[:, 1] - inter
    best = (inter / union).argmax(-1)
    for level, out in enumerate(outs):
        n, _, h, w = out.shape
        mask = MASKS[level]
        na = len(mask)
        p = out.view(n, na, 5 + num_classes, h, w)
        an = anchors[mask]
        with torch.no_grad():
            # decoded predictions vs all gt for the ignore mask
            gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            px = (gx + torch.sigmoid(p[:, :, 0])) / w
            py = (gy + torch.sigmoid(p[:, :, 1])) / h
            pw = torch.exp(p[:, :, 2]) * an[:, 0, None, None] / input_size
            ph = torch.exp(p[:, :, 3]) * an[:, 1, None, None] / input_size
            pb = torch.stack([px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2], -1).view(n, -1, 1, 4)
            g = gt_box
            gb = torch.stack([g[..., 0] - g[..., 2] / 2, g[..., 1] - g[..., 3] / 2,
                              g[..., 0] + g[..., 2] / 2, g[..., 1] + g[..., 3] / 2], -1).view(n, 1, -1, 4)
            iw = (torch.min(pb[..., 2], gb[..., 2]) - torch.max(pb[..., 0], gb[..., 0])).clamp(min=0)
            ih = (torch.min(pb[..., 3], gb[..., 3]) - torch.max(pb[..., 1], gb[..., 1])).clamp(min=0)
            inter = iw * ih
            area_p = (pb[..., 2] - pb[..., 0]) * (pb[..., 3] - pb[..., 1])
            area_g = (gb[..., 2] - gb[..., 0]) * (gb[..., 3] - gb[..., 1])
            iou = inter / (area_p + area_g - inter)
            obj_target = torch.zeros(n, na, h, w)
            obj_weight = (iou.max(-1).values <= ignore_thresh).float().view(n, na, h, w)
            pos = []
            for b in range(n):
                for t in range(gt_box.shape[1]):
                    a = int(best[b, t])
                    if a not in mask:
                        continue
                    cx, cy, bw, bh = gt_box[b, t].tolist()
                    gi, gj, k = int(cx * w), int(cy * h), mask.index(a)
                    pos.append((b, k, gj, gi, cx * w - gi, cy * h - gj,
                                torch.log(torch.tensor(bw * input_size / ANCHORS[a][0])),
                                torch.log(torch.tensor(bh * input_size / ANCHORS[a][1])),
                                2.0 - bw * bh, int(gt_label[b, t])))
                    obj_target[b, k, gj, gi] = 1.0
                    obj_weight[b, k, gj, gi] = 1.0
        loss = (F.binary_cross_entropy_with_logits(p[:, :, 4], obj_target, reduction="none") * obj_weight).sum()
        for (b, k, gj, gi, tx, ty, tw, th, scale, label) in pos:
            cell = p[b, k, :, gj, gi]
            loss = loss + scale * (
                F.binary_cross_entropy_with_logits(cell[0], torch.tensor(tx), reduction="sum")
                + F.binary_cross_entropy_with_logits(cell[1], torch.tensor(ty), reduction="sum")
                + (cell[2] - tw).abs() + (cell[3] - th).abs())
            cls_target = torch.zeros(num_classes)
            cls_target[label] = 1.0
            loss = loss + F.binary_cross_entropy_with_logits(cell[5:], cls_target, reduction="sum")
        total = total + loss
    return total / batch


def main():
    ap = torch_step.arguments(size=320, classes=20)
    args = ap.parse_args()
    torch_step.setup(args)
    backbone, head = MobileNetV1(), Yolov3Head(args.classes)
    # PaddleDetection's decay: MobileNet convs, BN and yolo_output biases get 0.
    decayed = [m.weight for m in head.modules() if isinstance(m, nn.Conv2d)]
    decayed_ids = {id(p) for p in decayed}
    others = [p for p in list(backbone.parameters()) + list(head.parameters()) if id(p) not in decayed_ids]
    opt = torch.optim.SGD([{"params": decayed, "weight_decay": 5e-4},
                           {"params": others, "weight_decay": 0.0}], lr=1e-4, momentum=0.9)
    images = torch.rand(args.batch, 3, args.size, args.size)
    gt_box, gt_label = synthetic_boxes(args.batch, args.classes)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = yolov3_loss(head(backbone(images)), gt_box, gt_label, args.classes, args.size)
        loss.backward()
        opt.step()
        return loss.item()

    torch_step.compare(args, step, ["--model", "yolov3_mobilenet_v1", "--classes", str(args.classes)])


if __name__ == "__main__":
    main()

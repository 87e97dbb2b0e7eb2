#!/usr/bin/env python3
"""One YOLOv3-MobileNetV1 training step in paddlepaddle (dygraph, CPU),
side by side with `pulsefocus bench train-step`.

The same network as pulsefocus's `yolov3_mobilenet_v1`, the same synthetic
batch as benches/train_step_torch.py, Paddle's own yolov3 loss
(`paddle.vision.ops.yolo_loss`, the op PaddleDetection trains with), momentum
SGD with L2 decay 5e-4 on the head convs. Threads are limited to 2 through
OMP_NUM_THREADS/CPU_NUM (set before paddle is imported).

    python3 benches/train_step_paddle.py --pulsefocus target/release/pulsefocus
"""
import argparse
import json
import os
import resource
import subprocess
import time

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--size", type=int, default=320)
ap.add_argument("--classes", type=int, default=20)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--pulsefocus", help="path to a release pulsefocus binary to compare against")
args = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)
os.environ["CPU_NUM"] = str(args.threads)

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

ANCHORS = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]
MASKS = [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
BOXES_PER_IMAGE = 6


def synthetic_boxes(batch, num_classes):
    """The same boxes as train_step_torch.py and pulsefocus."""
    boxes, labels = [], []
    for b in range(batch):
        for k in range(BOXES_PER_IMAGE):
            t = (b * BOXES_PER_IMAGE + k) * 0.6180339887 % 1.0
            s = (b * BOXES_PER_IMAGE + k) * 0.7548776662 % 1.0
            boxes.append([0.2 + 0.6 * t, 0.2 + 0.6 * s, 0.05 + 0.4 * s, 0.05 + 0.4 * t])
            labels.append((b * BOXES_PER_IMAGE + k) % num_classes)
    return (np.array(boxes, "float32").reshape(batch, BOXES_PER_IMAGE, 4),
            np.array(labels, "int32").reshape(batch, BOXES_PER_IMAGE))


def conv_bn(cin, cout, k, stride=1, groups=1, act="leaky"):
    return nn.Sequential(
        nn.Conv2D(cin, cout, k, stride, k // 2, groups=groups, bias_attr=False),
        nn.BatchNorm2D(cout, momentum=0.9, epsilon=1e-5),
        nn.ReLU() if act == "relu" else nn.LeakyReLU(0.1))


class MobileNetV1(nn.Layer):
    BLOCKS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
              (256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    FEATURES = (3, 5, 12)

    def __init__(self):
        super().__init__()
        self.conv1 = conv_bn(3, 32, 3, 2, act="relu")
        self.blocks = nn.LayerList([
            nn.Sequential(conv_bn(cin, cin, 3, s, groups=cin, act="relu"), conv_bn(cin, cout, 1, act="relu"))
            for cin, cout, s in self.BLOCKS])

    def forward(self, x):
        x = self.conv1(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.FEATURES:
                feats.append(x)
        return feats


class Yolov3Head(nn.Layer):
    def __init__(self, num_classes, feature_channels=(256, 512, 1024)):
        super().__init__()
        self.levels, self.outputs, self.transitions = nn.LayerList(), nn.LayerList(), nn.LayerList()
        for i in range(3):
            ch = 512 >> i
            cin = feature_channels[2 - i] + (0 if i == 0 else (512 >> (i - 1)) // 2)
            self.levels.append(nn.LayerList([
                conv_bn(cin, ch, 1), conv_bn(ch, 2 * ch, 3), conv_bn(2 * ch, ch, 1),
                conv_bn(ch, 2 * ch, 3), conv_bn(2 * ch, ch, 1), conv_bn(ch, 2 * ch, 3)]))
            self.outputs.append(nn.Conv2D(2 * ch, 3 * (num_classes + 5), 1))
            if i < 2:
                self.transitions.append(conv_bn(ch, ch // 2, 1))

    def forward(self, feats):
        outs, route = [], None
        for i in range(3):
            x = feats[2 - i] if route is None else paddle.concat([route, feats[2 - i]], 1)
            for unit in self.levels[i][:5]:
                x = unit(x)
            route = x
            outs.append(self.outputs[i](self.levels[i][5](x)))
            if i < 2:
                route = F.interpolate(self.transitions[i](route), scale_factor=2, mode="nearest")
        return outs


def main():
    paddle.set_device("cpu")
    paddle.seed(0)
    backbone, head = MobileNetV1(), Yolov3Head(args.classes)
    params = backbone.parameters() + head.parameters()
    opt = paddle.optimizer.Momentum(learning_rate=1e-4, momentum=0.9, parameters=params,
                                    weight_decay=paddle.regularizer.L2Decay(5e-4))
    images = paddle.rand([args.batch, 3, args.size, args.size])
    boxes, labels = synthetic_boxes(args.batch, args.classes)
    gt_box, gt_label = paddle.to_tensor(boxes), paddle.to_tensor(labels)

    def step():
        outs = head(backbone(images))
        loss = 0
        for level, out in enumerate(outs):
            loss = loss + paddle.vision.ops.yolo_loss(
                out, gt_box, gt_label, ANCHORS, MASKS[level], args.classes, 0.7,
                32 >> level, use_label_smooth=False).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    elapsed = time.perf_counter() - start
    ips = args.batch * args.steps / elapsed
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"paddle {paddle.__version__}: {ips:.2f} images/s, peak RSS {rss / 2**20:.0f} MiB, last loss {loss:.2f}")
    if args.pulsefocus:
        cmd = [args.pulsefocus, "bench", "train-step", "--device", "cpu", "--model", "yolov3_mobilenet_v1", "--classes",
               str(args.classes), "--batch", str(args.batch), "--size", str(args.size),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--json"]
        pf = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"pulsefocus: {pf['images_per_second']:.2f} images/s, peak RSS {pf['peak_rss_bytes'] / 2**20:.0f} MiB")
        print(f"ratio pulsefocus/paddle: speed {pf['images_per_second'] / ips:.2f}, memory {pf['peak_rss_bytes'] / rss:.2f}")


if __name__ == "__main__":
    main()

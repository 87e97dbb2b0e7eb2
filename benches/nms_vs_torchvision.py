"""NMS side by side: torchvision.ops.nms (CPU) against pulsefocus's
multiclass_nms in the same setting (one class, IoU 0.5, no threshold, no
top-k, boxes from the same distribution as `benches/nms.rs`).

    CARGO_TARGET_DIR=... cargo bench -p pulsefocus-benches --bench nms -- torchvision_setting
    python3 benches/nms_vs_torchvision.py [--threads 2]

Both times are medians; pulsefocus's are criterion's estimates, read from
$CARGO_TARGET_DIR/criterion (default target/criterion). Prints each time and
the ratio torchvision / pulsefocus (above 1: pulsefocus is faster).
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torchvision


def random_boxes(rng, n):
    xy = rng.uniform(0.0, 1000.0, (n, 2))
    wh = rng.uniform(10.0, 110.0, (n, 2))
    return torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)


def time_torchvision(n, repeats):
    rng = np.random.default_rng(n)
    boxes = random_boxes(rng, n)
    scores = torch.tensor(rng.uniform(0.0, 1.0, n), dtype=torch.float32)
    torchvision.ops.nms(boxes, scores, 0.5)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torchvision.ops.nms(boxes, scores, 0.5)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def pulsefocus_time(n):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
    path = os.path.join(target, "criterion", "nms", "torchvision_setting", str(n), "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"] * 1e-9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads")
    for n in (1000, 10000, 20000):
        tv = time_torchvision(n, args.repeats)
        ours = pulsefocus_time(n)
        if ours is None:
            print(f"{n:>6} boxes: torchvision {tv * 1e3:8.2f} ms, pulsefocus: run the criterion bench first")
        else:
            print(f"{n:>6} boxes: torchvision {tv * 1e3:8.2f} ms, pulsefocus {ours * 1e3:8.2f} ms, "
                  f"ratio {tv / ours:5.2f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch + cuDNN side of benches/gpu_kernels.rs, on the same GPU.

Times the same convolution passes (YOLOv3-MobileNetV1 shapes, batch 8, 320x320
input) with cuDNN autotuning, GEMM with cuBLAS, and NMS with
torchvision.ops.nms at 1k/5k/20k boxes. With --criterion DIR (criterion's
output folder, $CARGO_TARGET_DIR/criterion) it prints pulsefocus / PyTorch
throughput ratios for every case both sides measured.

    python3 benches/gpu_kernels_torch.py --criterion "$CARGO_TARGET_DIR/criterion"
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

BATCH = 8
# (name, c_in, c_out, k, stride, size, depthwise): same list as gpu_kernels.rs.
CONV_SHAPES = [
    ("conv1_3x3s2_3_32_320", 3, 32, 3, 2, 320, False),
    ("dw_3x3_32_160", 32, 32, 3, 1, 160, True),
    ("pw_32_64_160", 32, 64, 1, 1, 160, False),
    ("dw_3x3s2_64_160", 64, 64, 3, 2, 160, True),
    ("pw_128_128_80", 128, 128, 1, 1, 80, False),
    ("pw_256_256_40", 256, 256, 1, 1, 40, False),
    ("pw_512_512_20", 512, 512, 1, 1, 20, False),
    ("dw_3x3_512_20", 512, 512, 3, 1, 20, True),
    ("pw_1024_1024_10", 1024, 1024, 1, 1, 10, False),
    ("head_3x3_512_1024_10", 512, 1024, 3, 1, 10, False),
]


def seconds(fn, warmup=5, repeat=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def conv_cases():
    torch.backends.cudnn.benchmark = True
    # Full fp32 (no TF32), as our kernels compute.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    out = {}
    for name, cin, cout, k, stride, size, depthwise in CONV_SHAPES:
        groups = cin if depthwise else 1
        x = torch.randn(BATCH, cin, size, size, device="cuda")
        w = torch.randn(cout, cin // groups, k, k, device="cuda")
        y = F.conv2d(x, w, stride=stride, padding=k // 2, groups=groups)
        dy = torch.randn_like(y)
        flops = 2 * y.numel() * (cin // groups) * k * k
        passes = {
            "forward": lambda: F.conv2d(x, w, stride=stride, padding=k // 2, groups=groups),
            "backward_data": lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=stride, padding=k // 2, groups=groups),
            "backward_filter": lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=k // 2, groups=groups),
        }
        for pass_name, fn in passes.items():
            out[(f"conv_{pass_name}", name)] = flops / seconds(fn)
    for n in (256, 1024, 2048):
        a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
        out[("gemm", str(n))] = 2 * n ** 3 / seconds(lambda: a @ b)
    return out


def nms_cases():
    import torchvision
    out = {}
    for count in (1000, 5000, 20000):
        i = torch.arange(count, dtype=torch.float64)
        x, y = (i * 7919) % 600, (i * 104729) % 600
        size = 20 + i % 37
        boxes = torch.stack([x, y, x + size, y + size], 1).float().cuda()
        scores = (((i * 2654435761) % 1000003) / 1000003).float().cuda()
        out[("nms", str(count))] = count / seconds(lambda: torchvision.ops.nms(boxes, scores, 0.5).cpu())
    return out


def criterion_rate(root, group, case):
    """Elements (FLOP or boxes) per second from criterion's estimates."""
    base = os.path.join(root, group, case, "new")
    try:
        with open(os.path.join(base, "estimates.json")) as f:
            mean_ns = json.load(f)["mean"]["point_estimate"]
        with open(os.path.join(base, "benchmark.json")) as f:
            throughput = json.load(f)["throughput"]
    except (OSError, KeyError, ValueError):
        return None
    elements = throughput.get("Elements") if throughput else None
    return None if elements is None else elements / (mean_ns * 1e-9)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--criterion", help="criterion output folder of a gpu_kernels run")
    args = parser.parse_args()
    print(f"PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    results = conv_cases()
    try:
        results.update(nms_cases())
    except ImportError as err:
        print(f"nms: skipped ({err})")
    print(f"{'case':48} {'torch':>12} {'pulsefocus':>12} {'ratio':>7}")
    for (group, case), rate in results.items():
        unit = "boxes/s" if group == "nms" else "GFLOP/s"
        scale = 1 if group == "nms" else 1e9
        theirs = criterion_rate(args.criterion, group, case) if args.criterion else None
        mine = f"{theirs / scale:12.1f}" if theirs else f"{'-':>12}"
        ratio = f"{theirs / rate:7.2f}" if theirs else f"{'-':>7}"
        print(f"{group + '/' + case:48} {rate / scale:12.1f} {mine} {ratio}  {unit}")


if __name__ == "__main__":
    main()

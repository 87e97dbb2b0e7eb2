"""What the PyTorch training-step scripts share (`train_step_torch.py`,
`train_step_ssd_torch.py`, `train_step_faster_rcnn_torch.py`): the command
line, timing a step function against `pulsefocus bench train-step` in
alternating rounds, and the report (medians, peak memory, the pulsefocus /
torch ratios)."""
import argparse
import json
import resource
import statistics
import subprocess
import time

import torch


def arguments(size, classes):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--classes", type=int, default=classes)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pulsefocus", help="path to a release pulsefocus binary to compare against")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: PyTorch + cuDNN on the GPU against `pulsefocus --device gpu`, "
                         "comparing device memory (torch.cuda.max_memory_allocated / the pool's peak)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate torch and pulsefocus this many times and compare medians "
                         "(the machine's speed drifts; back-to-back pairs see the same drift)")
    return ap


def setup(args):
    """Threads, seed and, with --device cuda, every new tensor on the GPU."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device == "cuda":
        torch.set_default_device("cuda")
        torch.backends.cudnn.benchmark = True


def run_pulsefocus(binary, args, model_args):
    device = "gpu" if args.device == "cuda" else "cpu"
    cmd = [binary, "bench", "train-step", "--device", device, *model_args,
           "--batch", str(args.batch), "--size", str(args.size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rate(images_per_second):
    """Two decimals, or three significant digits below 1 (Faster R-CNN's
    seconds-long steps)."""
    if images_per_second >= 1:
        return f"{images_per_second:.2f}"
    return f"{images_per_second:.3g}"


def compare(args, step, model_args):
    """Times `step` (one training step, returning the loss) after the warm-up,
    alternating with `pulsefocus bench train-step MODEL_ARGS` when
    --pulsefocus is given, and prints the medians and the ratios."""
    on_gpu = args.device == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    for _ in range(args.warmup):
        step()
    torch_ips, pf_ips = [], []
    for round_ in range(args.rounds):
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        sync()
        torch_ips.append(args.batch * args.steps / (time.perf_counter() - start))
        line = f"round {round_ + 1}: torch {rate(torch_ips[-1])} images/s"
        if args.pulsefocus:
            pf = run_pulsefocus(args.pulsefocus, args, model_args)
            pf_ips.append(pf["images_per_second"])
            line += f", pulsefocus {rate(pf_ips[-1])} images/s"
        if args.rounds > 1:
            print(line, flush=True)
    ips = statistics.median(torch_ips)
    if on_gpu:
        memory, what, pf_key = torch.cuda.max_memory_allocated(), "peak device memory", "peak_device_bytes"
        name = f"torch {torch.__version__} on {torch.cuda.get_device_name()}"
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        what, pf_key, name = "peak RSS", "peak_rss_bytes", f"torch {torch.__version__}"
    print(f"{name}: {rate(ips)} images/s, {what} {memory / 2**20:.0f} MiB, last loss {loss:.4g}")
    if args.pulsefocus:
        pf_median = statistics.median(pf_ips)
        print(f"pulsefocus: {rate(pf_median)} images/s, {what} {pf[pf_key] / 2**20:.0f} MiB")
        print(f"ratio pulsefocus/torch: speed {pf_median / ips:.2f}, "
              f"memory {pf[pf_key] / memory:.2f}")

"""Times pulsefocus against paddlepaddle on the same DarkNet53 + YOLOv3-head
checkpoint (366 tensors, about 248 MB of float32), in every format.

    python3 benches/checkpoint_vs_paddle.py [--keep] [--dir /tmp/pulsefocus_ckpt_bench]

1. writes the checkpoint as a .pdparams with paddle.save, then converts it with
   the release `pulsefocus convert-weights` to a per-variable directory, a
   model-zoo .tar, safetensors and combined params (paddle reads all of these:
   tests/checkpoints.rs checks it);
2. times, best of 5 with a warm page cache, paddle.static.load_program_state on
   the directory, paddle.load and load_program_state on the .pdparams, and a
   plain read of the same bytes into new buffers;
3. runs the criterion bench `checkpoint_io` (groups load and load_and_read) on
   the same files and prints each pulsefocus time with its ratios.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

os.environ.setdefault("FLAGS_enable_pir_api", "0")
import numpy as np  # noqa: E402
import paddle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def darknet53_yolov3_shapes():
    """The tensors of checkpoint_io.rs, in the same order."""
    shapes = []

    def unit(name, cout, cin, k):
        shapes.append((f"{name}.conv.weights", [cout, cin, k, k]))
        for part in ("scale", "offset", "mean", "var"):
            shapes.append((f"{name}.bn.{part}", [cout]))

    unit("yolo_input", 32, 3, 3)
    unit("yolo_input.downsample", 64, 32, 3)
    for s, blocks in enumerate([1, 2, 8, 8, 4]):
        ch = 32 << s
        for b in range(blocks):
            unit(f"stage.{s}.{b}.0", ch, 2 * ch, 1)
            unit(f"stage.{s}.{b}.1", 2 * ch, ch, 3)
        if s < 4:
            unit(f"stage.{s}.downsample", 4 * ch, 2 * ch, 3)
    outputs = []
    for i, (channel, cin0) in enumerate([(512, 1024), (256, 768), (128, 384)]):
        for j in range(2):
            unit(f"yolo_block.{i}.{j}.0", channel, cin0 if j == 0 else 2 * channel, 1)
            unit(f"yolo_block.{i}.{j}.1", 2 * channel, channel, 3)
        unit(f"yolo_block.{i}.2", channel, 2 * channel, 1)
        unit(f"yolo_block.{i}.tip", 2 * channel, channel, 3)
        if i < 2:
            unit(f"yolo_transition.{i}", channel // 2, channel, 1)
        outputs.append((f"yolo_output.{i}.conv.weights", [255, 2 * channel, 1, 1]))
        outputs.append((f"yolo_output.{i}.conv.bias", [255]))
    shapes.extend(outputs)
    assert len(shapes) == 366
    return shapes


def best_of(n, fn):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_read(paths):
    return [open(p, "rb").read() for p in paths]


def criterion_times(bench_dir):
    """Runs the criterion bench on bench_dir; returns {id: median seconds}."""
    env = dict(os.environ, PULSEFOCUS_BENCH_DIR=bench_dir)
    cmd = ["cargo", "bench", "-p", "pulsefocus-benches", "--bench", "checkpoint_io",
           "--", "--noplot", "load"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    units = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    times, current = {}, None
    for line in out.splitlines():
        head = line.split("time:")[0].strip()
        if head:
            current = head
        m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if m and current:
            times[current] = float(m.group(1)) * units[m.group(2)]
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default="/tmp/pulsefocus_ckpt_bench")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = parser.parse_args()
    d = args.dir
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)

    rng = np.random.default_rng(0)
    state = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in darknet53_yolov3_shapes()}
    total = sum(a.nbytes for a in state.values())
    paddle.save(state, os.path.join(d, "m.pdparams"))
    del state
    subprocess.run(["cargo", "build", "--release", "-p", "pulsefocus"], cwd=ROOT, check=True)
    binary = os.path.join(TARGET, "release", "pulsefocus")
    for out, to in (("m_dir", "dir"), ("m.tar", "tar"), ("m.safetensors", "safetensors"), ("comb", "params")):
        subprocess.run([binary, "convert-weights", os.path.join(d, "m.pdparams"), os.path.join(d, out),
                        "--to", to], check=True, capture_output=True)
    print(f"checkpoint: 366 tensors, {total / 1e6:.0f} MB float32, in {d}")

    paddle.enable_static()
    var_dir = os.path.join(d, "m_dir")
    var_files = [os.path.join(var_dir, f) for f in sorted(os.listdir(var_dir))]
    python = {
        "plain read of the directory's files": best_of(5, lambda: plain_read(var_files)),
        "plain read of the .pdparams": best_of(5, lambda: plain_read([os.path.join(d, "m.pdparams")])),
        "load_program_state(directory)": best_of(5, lambda: paddle.static.load_program_state(var_dir)),
        "load_program_state(.pdparams)": best_of(5, lambda: paddle.static.load_program_state(os.path.join(d, "m"))),
        "paddle.load(.pdparams)": best_of(5, lambda: paddle.load(os.path.join(d, "m.pdparams"), return_numpy=True)),
    }
    for what, t in python.items():
        print(f"  python  {what:<40} {t * 1000:8.1f} ms")

    ours = criterion_times(d)
    plain = python["plain read of the directory's files"]
    print(f"\n  pulsefocus (criterion median)            ms   x plain read  vs load_program_state(dir)  vs paddle.load")
    for bench_id, t in sorted(ours.items()):
        print(f"  {bench_id:<36} {t * 1000:8.1f}   {t / plain:6.2f}x      "
              f"{python['load_program_state(directory)'] / t:6.1f}x faster        "
              f"{python['paddle.load(.pdparams)'] / t:6.1f}x faster")
    if not args.keep:
        shutil.rmtree(d)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""ptxas figures per kernel and the occupancy the host's block sizes give.

Runs `ptxas -v` (PyPI nvidia-cuda-nvcc-cu12, as gpu-kernels/ci.sh does) on
the committed PTX for sm_53, sm_72, sm_87 and sm_90, and prints a Markdown
table: registers per arch, static shared memory, spills and stack frame, the
block size the host launches the kernel with (read from the Rust constants),
and the theoretical occupancy on a Jetson Nano (sm_53) and a Jetson Orin
(sm_87).

Occupancy follows the arithmetic of CUDA's occupancy calculator
(cuda_occupancy.h): resident blocks per SM are the least of the limits set by
warps, blocks, registers and shared memory, with
- registers allocated per warp in units of 256, each of the 4 sub-partitions
  of an SM holding regs_per_SM / 4 of them, whole warps only;
- shared memory allocated per block in units of 256 bytes (128 from sm_80),
  plus 1 KiB the driver reserves per block from sm_80;
- the default shared-memory carveout (the most shared memory per SM).

Usage: python3 scripts/ptxas-occupancy.py [--ptx FILE] [--ptxas PATH]
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ["sm_53", "sm_72", "sm_87", "sm_90"]


class Sm:
    """Per-SM limits of one compute capability (CUDA C Programming Guide,
    "Technical Specifications per Compute Capability")."""

    def __init__(self, name, max_threads, max_blocks, regs, smem, smem_unit, smem_reserved):
        self.name = name
        self.max_warps = max_threads // 32
        self.max_blocks = max_blocks
        self.regs = regs
        self.smem = smem
        self.smem_unit = smem_unit
        self.smem_reserved = smem_reserved


# Jetson Nano: Maxwell GM20B, 64 KiB shared memory per SM (48 KiB per block).
NANO = Sm("Jetson Nano (sm_53)", 2048, 32, 65536, 64 * 1024, 256, 0)
# Jetson Orin: Ampere GA10B, up to 164 KiB shared memory per SM.
ORIN = Sm("Jetson Orin (sm_87)", 1536, 16, 65536, 164 * 1024, 128, 1024)
OCCUPANCY = [("sm_53", NANO), ("sm_87", ORIN)]

REG_UNIT = 256  # registers, per warp
SUB_PARTITIONS = 4
MAX_REGS_PER_THREAD = 255


def round_up(x, unit):
    return (x + unit - 1) // unit * unit


def occupancy(sm, regs, smem, block):
    """(resident blocks per SM, fraction of max warps, limiting factors)."""
    warps = (block + 31) // 32
    limits = {"warps": sm.max_warps // warps, "blocks": sm.max_blocks}
    regs_per_warp = round_up(max(regs, 1) * 32, REG_UNIT)
    if regs > MAX_REGS_PER_THREAD or regs_per_warp * round_up(warps, SUB_PARTITIONS) > sm.regs:
        limits["registers"] = 0
    else:
        warps_per_partition = (sm.regs // SUB_PARTITIONS) // regs_per_warp
        limits["registers"] = warps_per_partition * SUB_PARTITIONS // warps
    smem_block = round_up(smem + sm.smem_reserved, sm.smem_unit)
    limits["shared memory"] = sm.smem // smem_block if smem_block else sm.max_blocks
    blocks = min(limits.values())
    limiting = [k for k, v in limits.items() if v == blocks]
    return blocks, blocks * warps / sm.max_warps, limiting


def rust_const(path, name):
    """The integer value of `pub const NAME: u32 = <literal>;` in a source file."""
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    m = re.search(r"pub const %s: u32 = ([0-9_]+);" % name, text)
    if not m:
        sys.exit("ptxas-occupancy: no `pub const %s: u32 = <number>;` in %s" % (name, path))
    return int(m.group(1).replace("_", ""))


def block_sizes():
    """Threads per block of every kernel, as the launch modules in
    gpu-kernels/src/ops/ launch it. A kernel missing here stops the script."""
    tile = "gpu-kernels/device/src/tile.rs"
    tiled = (rust_const(tile, "BM") // rust_const(tile, "TM")) * (
        rust_const(tile, "BN") // rust_const(tile, "TN")
    )
    elementwise = rust_const("gpu-kernels/src/ops/mod.rs", "ELEMENTWISE_THREADS")
    reduce = rust_const("gpu-kernels/device/src/reduce.rs", "REDUCE_THREADS")
    nms = "gpu-kernels/device/src/nms.rs"
    groups = [
        # ops::elementwise: grid-stride, one element per thread per step.
        (elementwise, [
            "fill", "scale", "add", "axpy", "activation_forward", "activation_backward",
            "sigmoid_forward", "sigmoid_backward", "momentum_sgd", "rmsprop",
            "batch_norm_eval_forward", "batch_norm_eval_backward",
            "max_pool_forward", "max_pool_backward",
            "upsample_nearest_forward", "upsample_nearest_backward", "copy_channels",
            "head_rows_forward", "head_rows_backward", "l2_norm_forward", "l2_norm_backward_data",
            "roi_align_forward", "roi_align_backward",
            "global_avg_pool_forward", "global_avg_pool_backward", "sigmoid_focal_loss", "retina_box_loss", "mask_loss",
            "mask_paste", "polygon_masks", "rpn_loss_anchors", "rpn_anchor_candidates", "bbox_loss_rows",
            "yolo_decode", "ssd_decode", "softmax_rows", "bitonic_sort_step", "nms_bounds", "nms_rank_keys", "nms_keep_top",
            "proposal_keys", "proposal_decode",
            "ssd_mining_keys", "ssd_select_negatives", "ssd_loss_rows",
            "retina_decode", "retina_write",
            "rcnn_decode", "rcnn_order_keys", "rcnn_write", "gt_best_overlaps", "retina_fg_num",
            "depthwise_conv2d_forward", "depthwise_conv2d_backward_data",
        ]),
        # ops::tiled: the tile engine, (BM / TM) * (BN / TN) threads.
        (tiled, ["gemm", "fc_forward", "conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"]),
        # ops::block_per_item, Gpu::sum, ssd_match and the matching of ops::retinanet_targets:
        # block_reduce per block.
        (reduce, [
            "sum_blocks", "channel_sum", "batch_norm_train_forward",
            "batch_norm_train_backward", "depthwise_conv2d_backward_filter",
            "l2_norm_backward_scale", "ssd_match", "gt_best_overlap_blocks", "retina_target_rows", "rpn_sample",
        ]),
        # ops::nms: NMS_THREADS blocks (per span of entries, (image, class) or image).
        (rust_const(nms, "NMS_THREADS"), [
            "nms_count_candidates", "nms_compact_candidates", "retina_count_candidates",
            "retina_compact_candidates", "nms_suppress", "nms_write",
        ]),
    ]
    return {kernel: threads for threads, kernels in groups for kernel in kernels}


def find_ptxas():
    try:
        import nvidia.cuda_nvcc as m
    except ImportError:
        sys.exit("ptxas-occupancy: no ptxas: pip install nvidia-cuda-nvcc-cu12, or pass --ptxas")
    return os.path.join(list(m.__path__)[0], "bin", "ptxas")


def ptxas_figures(ptxas, ptx, arch):
    """{kernel: (registers, static shared bytes, spill store+load bytes, stack bytes)}."""
    out = subprocess.run(
        [ptxas, "-arch=" + arch, "-v", ptx, "-o", os.devnull],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit("ptxas-occupancy: ptxas failed for %s:\n%s" % (arch, out.stderr))
    figures, name, spill, stack = {}, None, 0, 0
    for line in out.stderr.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            stack, spill = int(m.group(1)), int(m.group(2)) + int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            smem = re.search(r"(\d+) bytes smem", line)
            figures[name] = (int(m.group(1)), int(smem.group(1)) if smem else 0, spill, stack)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ptx", default=os.path.join(ROOT, "gpu-kernels/ptx/kernels_sm53.ptx"))
    parser.add_argument("--ptxas", default=None)
    args = parser.parse_args()
    ptxas = args.ptxas or find_ptxas()
    per_arch = {arch: ptxas_figures(ptxas, args.ptx, arch) for arch in ARCHS}
    blocks = block_sizes()
    kernels = sorted(per_arch[ARCHS[0]])
    missing = [k for k in kernels if k not in blocks]
    if missing:
        sys.exit("ptxas-occupancy: no block size for %s: add it to block_sizes()" % ", ".join(missing))

    print("| kernel | block | registers %s | static smem (B) | spills / stack (B) | %s | %s |" % (
        "/".join(a[3:] for a in ARCHS), NANO.name, ORIN.name))
    print("|---|---:|---:|---:|---:|---|---|")
    for k in kernels:
        regs = "/".join(str(per_arch[a][k][0]) for a in ARCHS)
        smems = {per_arch[a][k][1] for a in ARCHS}
        smem = "/".join(str(per_arch[a][k][1]) for a in ARCHS) if len(smems) > 1 else str(smems.pop())
        spill = max(per_arch[a][k][2] for a in ARCHS)
        stack = max(per_arch[a][k][3] for a in ARCHS)
        cells = []
        for arch, sm in OCCUPANCY:
            r, s = per_arch[arch][k][0], per_arch[arch][k][1]
            n, frac, limiting = occupancy(sm, r, s, blocks[k])
            cells.append("%d%% (%d blocks; %s)" % (round(frac * 100), n, ", ".join(limiting)))
        print("| `%s` | %d | %s | %s | %d / %d | %s | %s |" % (k, blocks[k], regs, smem, spill, stack, *cells))


if __name__ == "__main__":
    main()

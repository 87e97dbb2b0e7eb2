"""Loading a val2017-sized COCO instances JSON: pulsefocus vs pycocotools.

Generates ~25 MB of instances JSON shaped like instances_val2017.json (5000
images, 36781 annotations with polygons, 80 categories) under /tmp, times
`pycocotools.coco.COCO(path)` (best of 3), runs the criterion bench
`coco_parse` on the same file (pulsefocus: read + parse + records, with an
existence check per image), and prints the ratio.

Run from the repository root:
    python3 benches/coco_vs_pycocotools.py
"""
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import time

try:
    from pycocotools.coco import COCO
except ImportError as e:
    if os.environ.get("CI"):
        raise
    print(f"skipping: pycocotools not importable ({e})")
    sys.exit(0)

ROOT = "/tmp/pulsefocus-coco-vs-pycocotools"


def generate():
    rng = random.Random(0)
    os.makedirs(f"{ROOT}/images", exist_ok=True)
    os.makedirs(f"{ROOT}/annotations", exist_ok=True)
    images = []
    for i in range(1, 5001):
        name = f"{i:012d}.jpg"
        open(f"{ROOT}/images/{name}", "wb").close()
        images.append({"license": 1, "file_name": name,
                       "coco_url": f"http://images.cocodataset.org/val2017/{name}",
                       "height": 480, "width": 640, "date_captured": "2013-11-14 17:02:52", "id": i})
    annotations = []
    for i in range(1, 36782):
        x, y = rng.uniform(0, 600), rng.uniform(0, 440)
        w, h = rng.uniform(1, 640 - x), rng.uniform(1, 480 - y)
        poly = [round(rng.uniform(0, 600), 2) for _ in range(rng.choice([24, 48, 72, 96, 120]))]
        annotations.append({"segmentation": [poly], "area": round(w * h * 0.6, 4), "iscrowd": 0,
                            "image_id": rng.randint(1, 5000), "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                            "category_id": rng.randint(1, 80), "id": i})
    categories = [{"supercategory": "thing", "id": i, "name": f"class{i}"} for i in range(1, 81)]
    path = f"{ROOT}/annotations/instances.json"
    with open(path, "w") as f:
        json.dump({"info": {"description": "synthetic"}, "images": images,
                   "annotations": annotations, "categories": categories}, f)
    return path


def main():
    path = generate()
    size_mb = os.path.getsize(path) / 1e6
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            COCO(path)
        best = min(best, time.perf_counter() - start)
    print(f"file: {path} ({size_mb:.1f} MB)")
    print(f"pycocotools COCO(path): {best * 1000:.1f} ms (best of 3)")

    env = dict(os.environ, PULSEFOCUS_COCO_JSON=path)
    subprocess.run(["cargo", "bench", "-p", "pulsefocus-benches", "--bench", "coco_parse", "--", "--noplot"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    with open(f"{target}/criterion/coco_parse/instances_val2017_size/new/estimates.json") as f:
        ours = json.load(f)["mean"]["point_estimate"] / 1e9
    print(f"pulsefocus CocoDataSet::load: {ours * 1000:.1f} ms (criterion mean)")
    print(f"ratio (pycocotools / pulsefocus): {best / ours:.1f}x")


if __name__ == "__main__":
    main()

"""Side-by-side for benches/pipeline.rs `train_416_one_thread`: PaddleDetection's
YOLOv3 train sample pipeline (release/0.5 operators: DecodeImage, MixupImage,
ColorDistort, RandomExpand, RandomCrop, RandomFlipImage, NormalizeBox, PadBox,
BboxXYXY2XYWH, RandomShape, NormalizeImage, Permute), one image at a time on one
thread, on the same photos with the same three boxes each (tests/data/photos, or
the folder PULSEFOCUS_BENCH_PHOTOS names).

ppdet and OpenCV are not installed here, so the operators below are
PaddleDetection's numpy code transcribed, with PIL standing in for cv2 in
decoding and resizing (PIL resizes uint8, cv2 would resize the float image).

Prints images/s and, if the Rust benchmark has run, the ratio Rust / Python:
    cargo bench -p pulsefocus-benches --bench pipeline
    python3 benches/pipeline_paddle.py
"""
import glob
import json
import os
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def photos():
    d = os.environ.get("PULSEFOCUS_BENCH_PHOTOS") or os.path.join(HERE, "..", "tests", "data", "photos")
    return sorted(glob.glob(os.path.join(d, "*")))


def decode(path):
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.3, 0.9, 0.9], [0.3, 0.6, 0.45, 0.8]],
                     dtype=np.float32) * np.array([w, h, w, h], dtype=np.float32)
    return {"image": img, "h": h, "w": w, "gt_bbox": boxes,
            "gt_class": np.zeros((3, 1), np.int32), "gt_score": np.ones((3, 1), np.float32)}


def mixup(sample, other):
    factor = np.clip(np.random.beta(1.5, 1.5), 0.0, 1.0)
    img1, img2 = sample["image"], other["image"]
    h = max(img1.shape[0], img2.shape[0])
    w = max(img1.shape[1], img2.shape[1])
    img = np.zeros((h, w, 3), "float32")
    img[:img1.shape[0], :img1.shape[1], :] = img1.astype("float32") * factor
    img[:img2.shape[0], :img2.shape[1], :] += img2.astype("float32") * (1.0 - factor)
    sample["image"] = img.astype("uint8")
    sample["gt_bbox"] = np.concatenate((sample["gt_bbox"], other["gt_bbox"]), 0)
    sample["gt_class"] = np.concatenate((sample["gt_class"], other["gt_class"]), 0)
    sample["gt_score"] = np.concatenate(
        (sample["gt_score"] * factor, other["gt_score"] * (1.0 - factor)), 0)
    sample["h"], sample["w"] = h, w


def color_distort(sample):
    def hue(img):
        if np.random.uniform(0., 1.) < 0.5:
            return img
        img = img.astype(np.float32)
        delta = np.random.uniform(-18, 18)
        u, w = np.cos(delta * np.pi), np.sin(delta * np.pi)
        bt = np.array([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]])
        tyiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
        ityiq = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])
        t = np.dot(np.dot(ityiq, bt), tyiq).T
        return np.dot(img, t)

    def saturation(img):
        if np.random.uniform(0., 1.) < 0.5:
            return img
        delta = np.random.uniform(0.5, 1.5)
        img = img.astype(np.float32)
        gray = img * np.array([[[0.299, 0.587, 0.114]]], dtype=np.float32)
        gray = gray.sum(axis=2, keepdims=True)
        gray *= (1.0 - delta)
        img *= delta
        img += gray
        return img

    def contrast(img):
        if np.random.uniform(0., 1.) < 0.5:
            return img
        img = img.astype(np.float32)
        img *= np.random.uniform(0.5, 1.5)
        return img

    def brightness(img):
        if np.random.uniform(0., 1.) < 0.5:
            return img
        img = img.astype(np.float32)
        img += np.random.uniform(0.5, 1.5)
        return img

    img = sample["image"]
    for f in np.random.permutation([brightness, contrast, saturation, hue]):
        img = f(img)
    sample["image"] = img


def random_expand(sample, fill=(123.675, 116.28, 103.53)):
    if np.random.uniform(0., 1.) < 0.5:
        return
    height, width = sample["h"], sample["w"]
    ratio = np.random.uniform(1., 4.)
    h, w = int(height * ratio), int(width * ratio)
    if not h > height or not w > width:
        return
    y = np.random.randint(0, h - height)
    x = np.random.randint(0, w - width)
    canvas = np.ones((h, w, 3), dtype=np.uint8)
    canvas *= np.array(fill, dtype=np.uint8)
    canvas[y:y + height, x:x + width, :] = sample["image"].astype(np.uint8)
    sample["h"], sample["w"], sample["image"] = h, w, canvas
    sample["gt_bbox"] += np.array([x, y] * 2, dtype=np.float32)


def iou_matrix(a, b):
    tl_i = np.maximum(a[:, np.newaxis, :2], b[:, :2])
    br_i = np.minimum(a[:, np.newaxis, 2:], b[:, 2:])
    area_i = np.prod(br_i - tl_i, axis=2) * (tl_i < br_i).all(axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return area_i / (area_a[:, np.newaxis] + area_b - area_i + 1e-10)


def random_crop(sample):
    h, w, gt_bbox = sample["h"], sample["w"], sample["gt_bbox"]
    thresholds = [.0, .1, .3, .5, .7, .9, "no_crop"]
    np.random.shuffle(thresholds)
    for thresh in thresholds:
        if thresh == "no_crop":
            return
        for _ in range(50):
            scale = np.random.uniform(.3, 1.)
            ar = np.random.uniform(max(.5, scale ** 2), min(2., scale ** -2))
            crop_h, crop_w = int(h * scale / np.sqrt(ar)), int(w * scale * np.sqrt(ar))
            crop_y = np.random.randint(0, max(h - crop_h, 1))
            crop_x = np.random.randint(0, max(w - crop_w, 1))
            crop = np.array([crop_x, crop_y, crop_x + crop_w, crop_y + crop_h], np.float32)
            if iou_matrix(gt_bbox, crop[None]).max() < float(thresh):
                continue
            cropped = gt_bbox.copy()
            cropped[:, :2] = np.maximum(gt_bbox[:, :2], crop[:2]) - crop[:2]
            cropped[:, 2:] = np.minimum(gt_bbox[:, 2:], crop[2:]) - crop[:2]
            centers = (gt_bbox[:, :2] + gt_bbox[:, 2:]) / 2
            valid = np.logical_and(crop[:2] <= centers, centers < crop[2:]).all(axis=1)
            valid = np.logical_and(valid, (cropped[:, :2] < cropped[:, 2:]).all(axis=1))
            ids = np.where(valid)[0]
            if ids.size > 0:
                sample["image"] = sample["image"][crop_y:crop_y + crop_h, crop_x:crop_x + crop_w]
                sample["gt_bbox"] = cropped[ids]
                sample["gt_class"] = sample["gt_class"][ids]
                sample["gt_score"] = sample["gt_score"][ids]
                sample["w"], sample["h"] = crop_w, crop_h
                return


def random_flip(sample):
    if np.random.uniform(0, 1) < 0.5:
        sample["image"] = sample["image"][:, ::-1, :]
        b = sample["gt_bbox"]
        x1 = b[:, 0].copy()
        b[:, 0] = sample["w"] - b[:, 2]
        b[:, 2] = sample["w"] - x1


def targets(sample, num_max_boxes=50):
    b = sample["gt_bbox"].copy()
    b[:, 0::2] /= sample["w"]
    b[:, 1::2] /= sample["h"]
    padded = np.zeros((num_max_boxes, 4), np.float32)
    n = min(num_max_boxes, len(b))
    padded[:n] = b[:n]
    padded[:, 2:4] = padded[:, 2:4] - padded[:, :2]
    padded[:, :2] = padded[:, :2] + padded[:, 2:4] / 2.
    return padded


def resize_normalize(sample, size=416):
    img = np.clip(np.asarray(sample["image"]), 0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), np.float32)
    img = img / 255.0
    img -= np.array([0.485, 0.456, 0.406], np.float32)[None, None]
    img /= np.array([0.229, 0.224, 0.225], np.float32)[None, None]
    return img.transpose((2, 0, 1))


def one_image(paths, i):
    sample = decode(paths[i])
    mixup(sample, decode(paths[(i + 1) % len(paths)]))
    color_distort(sample)
    random_expand(sample)
    random_crop(sample)
    random_flip(sample)
    return resize_normalize(sample), targets(sample)


def rust_images_per_s():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    path = os.path.join(target, "criterion", "pipeline", "train_416_one_thread", "new",
                        "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        ns_per_iter = json.load(f)["median"]["point_estimate"]
    return len(photos()) / (ns_per_iter * 1e-9)


def main():
    np.random.seed(0)
    paths = photos()
    one_image(paths, 0)  # warm up
    rounds = 10
    start = time.perf_counter()
    for _ in range(rounds):
        for i in range(len(paths)):
            one_image(paths, i)
    python = rounds * len(paths) / (time.perf_counter() - start)
    print(f"python (PaddleDetection 0.5 operators, PIL for cv2): {python:.1f} images/s")
    rust = rust_images_per_s()
    if rust is None:
        print("run `cargo bench -p pulsefocus-benches --bench pipeline` for the ratio")
    else:
        print(f"rust train_416_one_thread: {rust:.1f} images/s, ratio rust/python {rust / python:.2f}")


if __name__ == "__main__":
    main()

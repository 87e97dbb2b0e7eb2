"""Writes the small image fixtures that formats/src/image.rs tests decode.

Each `NAME.png`/`NAME.jpg` comes with `NAME.rgb`: the expected decoded pixels,
raw RGB8 rows, top to bottom. PNGs are written by the tiny encoder below (so
every colour type and bit depth is covered, which PIL cannot write); the
expected pixels follow from the known source arrays. JPEG references are
PIL's (libjpeg) decode; decoders may differ by a few levels, so the test
compares JPEGs with a tolerance.

Run from this folder: python3 make_fixtures.py
"""
import struct
import zlib
import io

import numpy as np
from PIL import Image

W, H = 37, 23  # odd sizes exercise chroma subsampling and filter edges


def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png(rows, color_type, depth, palette=None):
    """rows: one bytes object per row, already packed for the colour type."""
    raw = b"".join(b"\x00" + r for r in rows)  # filter type 0 (None) per row
    out = b"\x89PNG\r\n\x1a\n"
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, depth, color_type, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    out += chunk(b"IDAT", zlib.compress(raw))
    out += chunk(b"IEND", b"")
    return out


y, x = np.mgrid[0:H, 0:W]
rgb16 = np.stack([x * 1771 + 3, y * 2843 + 11, (x * y * 97) % 65536], -1).astype(np.uint16)
gray16 = ((x * 1500 + y * 900) % 65536).astype(np.uint16)
rgb8 = (rgb16 >> 8).astype(np.uint8)
gray8 = (gray16 >> 8).astype(np.uint8)
alpha8 = ((x * 7 + y * 5) % 256).astype(np.uint8)


def save(name, data, expected_rgb):
    with open(name, "wb") as f:
        f.write(data)
    with open(name.rsplit(".", 1)[0] + ".rgb", "wb") as f:
        f.write(np.ascontiguousarray(expected_rgb, dtype=np.uint8).tobytes())


def gray_to_rgb(g):
    return np.repeat(g[..., None], 3, -1)


# 16-bit samples become 8-bit by rounding v / 257 (what the decoder does); the
# test allows one level of difference for decoders that take the high byte.
def to8(v):
    return ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)


save("rgb8.png", png([r.tobytes() for r in rgb8], 2, 8), rgb8)
save("rgba8.png", png([np.dstack([rgb8, alpha8])[i].tobytes() for i in range(H)], 6, 8), rgb8)
save("gray8.png", png([r.tobytes() for r in gray8], 0, 8), gray_to_rgb(gray8))
save("gray_alpha8.png",
     png([np.dstack([gray8, alpha8])[i].tobytes() for i in range(H)], 4, 8), gray_to_rgb(gray8))
save("rgb16.png", png([r.astype(">u2").tobytes() for r in rgb16], 2, 16), to8(rgb16))
save("gray16.png", png([r.astype(">u2").tobytes() for r in gray16], 0, 16), gray_to_rgb(to8(gray16)))
palette = np.array([[(i * 37) % 256, (i * 91) % 256, (255 - i * 13) % 256] for i in range(16)])
index = ((x + 2 * y) % 16).astype(np.uint8)
save("palette8.png", png([r.tobytes() for r in index], 3, 8, palette), palette[index])

photo = np.stack([x * 6, y * 10, 128 + 60 * np.sin(x / 3.0) * np.cos(y / 4.0)], -1)
photo = np.clip(photo, 0, 255).astype(np.uint8)
for name, kwargs in [("baseline.jpg", {}), ("progressive.jpg", {"progressive": True})]:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90, **kwargs)
    data = buf.getvalue()
    save(name, data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))

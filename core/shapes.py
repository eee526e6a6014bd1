"""The built-in ``shapes`` dataset: coloured shapes on plain backgrounds, five classes, fully synthetic.

Each image is one vivid shape (circle, square, triangle, star or cross) of one of seven palette colours, near
the centre, on a plain muted background; its size and position are jittered and it is turned by at most
``MAX_TILT_DEGREES`` from its upright pose (a square sits on an edge, a triangle and a star point up, a
cross is a plus sign). Upright shapes on flat backgrounds are what a few CPU minutes of diffusion training
can learn to draw with recognisable outlines, at 16² and even 12².

Each image is a pure function of (seed, split, index): it is drawn with its own ``numpy`` generator, so
any subset can be regenerated in any order and the dataset needs no download. Shapes are drawn at 4× the
target size and box-filtered down, which gives anti-aliased edges.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ["circle", "square", "triangle", "star", "cross"]
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SUPERSAMPLE = 4
MAX_TILT_DEGREES = 15.0
# the rotation (radians) at which each polygon is upright; the circle's is irrelevant
UPRIGHT = {"circle": 0.0, "square": math.pi / 4, "triangle": -math.pi / 2, "star": -math.pi / 2, "cross": 0.0}


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        radii, n = [r] * 4, 4
    elif kind == "triangle":
        radii, n = [r * 1.1] * 3, 3
    elif kind == "star":
        radii, n = [r * 1.15 if i % 2 == 0 else r * 0.45 for i in range(10)], 10
    elif kind == "cross":
        # a plus sign: 12 vertices alternating between arm tips and inner corners
        w = 0.36 * r
        pts = [
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
        ]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return [
        (cx + rad * math.cos(angle + 2 * math.pi * i / n), cy + rad * math.sin(angle + 2 * math.pi * i / n))
        for i, rad in enumerate(radii)
    ]


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


# vivid foreground colours (RGB); backgrounds are plain muted colours, so shapes always stand out
PALETTE = np.array(
    [
        [230, 40, 40],
        [40, 170, 60],
        [40, 90, 220],
        [245, 200, 30],
        [200, 60, 200],
        [30, 190, 200],
        [250, 130, 20],
    ],
    dtype=np.float64,
)


def render(rng: np.random.Generator, label: int, image_size: int) -> np.ndarray:
    """One uint8 (H, W, 3) image of class ``label``."""
    size = image_size * SUPERSAMPLE
    # background: one plain muted colour (low saturation, any hue, mid to high value)
    bg = _rgb(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.9))
    img = Image.new("RGB", (size, size), tuple(int(c) for c in bg.clip(0, 255)))
    # foreground: a palette colour, darkened on light backgrounds so the shape keeps its contrast
    fg_rgb = PALETTE[rng.integers(len(PALETTE))] * (0.55 if float(bg.mean()) > 170 else 1.0)
    fg = tuple(int(c) for c in fg_rgb)
    r = rng.uniform(0.32, 0.42) * size
    cx, cy = rng.uniform(0.5 * size - 0.08 * size, 0.5 * size + 0.08 * size, size=2)
    kind = CLASS_NAMES[label]
    angle = UPRIGHT[kind] + math.radians(rng.uniform(-MAX_TILT_DEGREES, MAX_TILT_DEGREES))
    draw = ImageDraw.Draw(img)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=fg)
    return np.asarray(img.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.uint8)


def generate(split: str, start: int, count: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start .. start+count`` of a split; labels cycle through the classes so splits are balanced."""
    if split not in SPLIT_IDS:
        raise ValueError(f"shapes split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    for j, i in enumerate(range(start, start + count)):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], i])
        labels[j] = i % len(CLASS_NAMES)
        images[j] = render(rng, int(labels[j]), image_size)
    return images, labels

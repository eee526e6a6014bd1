"""Synthetic stand-in image trees for the rehearsal: the exact folder layouts of the real datasets
(``core.folders.LAYOUTS`` ``imagenet100`` and ``sysu-shapes``), filled with cheap seeded drawings, so that the real
ingestion path (``core.folders`` checks, ``core.ingest``, ``core.stages.make_dataset``) runs on them unchanged.

``imagenet100``
    ``root/train/<wnid>/<wnid>_<n>.JPEG`` and ``root/validation/<wnid>/ILSVRC2012_val_<n>.JPEG``: 100 classes with
    synthetic WordNet-style ids (``n`` + 8 digits, the same for every spec), JPEGs of ImageNet's usual photo sizes
    (500×375, 375×500, 500×333, 333×500, 500×400, 128×128), one in ~20 greyscale and one in ~50 CMYK (both occur
    in ImageNet and take ``core.ingest.to_rgb``'s conversions).
``sysu-shapes``
    SYSU-Shapes' five categories, ``root/<category>/images/<category>_<n>.jpg`` at a few hundred pixels a side,
    one in ~20 greyscale, plus ``annotations/`` (a text file) and ``contours/`` (a PNG mask) in each category: the
    layout ignores them, and a stand-in that still counts its images proves it.

Each image is a coloured shape (ellipse, rectangle or triangle by class) of a class-dependent hue on a seeded
gradient background: images differ, classes differ, and ~500 JPEGs take a few seconds. Every image has its own
generator, ``numpy.random.default_rng([seed, layout, split, class, index])``, so the bytes depend only on the spec.

The root holds ``STANDIN.txt`` (what it is: never real data) and ``standin.json`` (layout, spec and summary; no
time stamps, so a rewrite gives identical bytes). Files at the root are not folders, so neither layout takes them.
A tree is written under ``<root>.partial-<pid>`` and renamed into place; a complete tree with the same layout and
spec is left alone, one with another is replaced, and a folder without ``STANDIN.txt`` is never touched (it may be a
user's real data). No torch: numpy and Pillow only.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

LAYOUTS = ("imagenet100", "sysu-shapes")
MARKER = "STANDIN.txt"
MARKER_TEXT = "synthetic stand-in written by the rehearsal (core/standin.py); not real data\n"
SPEC_FILE = "standin.json"
FORMAT = 1  # bump when the drawing or the layout changes: an older tree is then replaced

SYSU_CATEGORIES = ("airplane", "bicycle", "boat", "car", "motorbike")
IMAGENET_CLASSES = 100
IMAGENET_SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 400), (128, 128))
IMAGENET_SIZE_P = (0.4, 0.15, 0.15, 0.05, 0.15, 0.1)
SYSU_SIZES = ((300, 200), (400, 300), (250, 250), (320, 240), (200, 300), (350, 260))
_SPEC_KEYS = {
    "imagenet100": {"train_per_class": True, "val_per_class": True, "seed": False},
    "sysu-shapes": {"per_class": True, "seed": False},
}
_LAYOUT_ID = {"imagenet100": 0, "sysu-shapes": 1}


def wordnet_ids(n: int = IMAGENET_CLASSES) -> list[str]:
    """``n`` distinct synthetic WordNet-style ids (``n`` + 8 digits), sorted; fixed (not seeded by the spec)."""
    numbers = np.random.default_rng(20260922).choice(np.arange(1_000_000, 5_000_000), size=n, replace=False)
    return [f"n{int(k):08d}" for k in sorted(numbers)]


def check_spec(layout: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with ``seed`` filled in (0); ValueError naming the key for a missing, unknown or invalid one."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown stand-in layout {layout!r}; known: {', '.join(LAYOUTS)}")
    keys = _SPEC_KEYS[layout]
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise ValueError(f"stand-in spec for {layout}: unknown key(s) {', '.join(unknown)} (known: {', '.join(keys)})")
    missing = [k for k, required in keys.items() if required and k not in spec]
    if missing:
        raise ValueError(f"stand-in spec for {layout}: missing key(s) {', '.join(missing)}")
    out = {"seed": 0, **spec}
    for k, v in out.items():
        least = 0 if k == "seed" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ValueError(f"stand-in spec for {layout}: {k} must be an integer >= {least}, got {v!r}")
    return dict(sorted(out.items()))


def _draw(rng: np.random.Generator, size: tuple[int, int], hue: float, shape: int) -> Image.Image:
    """A shape of ``hue`` (jittered) on a two-colour gradient in a random direction, RGB, ``size`` = (w, h)."""
    w, h = size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    sw, sh = -(-w // 8), -(-h // 8)  # drawn at 1/8 and resized: a smooth gradient, ~10× cheaper
    x = np.linspace(0.0, 1.0, sw, dtype=np.float32)[None, :] * math.cos(angle)
    y = np.linspace(0.0, 1.0, sh, dtype=np.float32)[:, None] * math.sin(angle)
    t = x + y
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    small = Image.fromarray((c0 + t[..., None] * (c1 - c0)).astype(np.uint8), "RGB")
    img = small.resize((w, h), Image.Resampling.BILINEAR)
    r, g, b = colorsys.hsv_to_rgb((hue + rng.uniform(-0.03, 0.03)) % 1.0, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    fill = (int(r * 255), int(g * 255), int(b * 255))
    side = min(w, h)
    radius = side * rng.uniform(0.2, 0.4)
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    draw = ImageDraw.Draw(img)
    if shape == 0:
        draw.ellipse((cx - radius, cy - radius * rng.uniform(0.6, 1.0), cx + radius, cy + radius), fill=fill)
    elif shape == 1:
        draw.rectangle((cx - radius, cy - radius * rng.uniform(0.5, 1.0), cx + radius, cy + radius), fill=fill)
    else:
        turn = rng.uniform(0, 2 * math.pi)
        angles = [turn + k * 2 * math.pi / 3 for k in range(3)]
        corners = [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]
        draw.polygon(corners, fill=fill)
    return img


def _write_image(
    path: Path,
    ids: list[int],
    size_choices: tuple[tuple[int, int], ...],
    p: tuple[float, ...] | None,
    hue: float,
    shape: int,
    mode: str,
) -> None:
    rng = np.random.default_rng(ids)
    size = size_choices[int(rng.choice(len(size_choices), p=p))]
    img = _draw(rng, size, hue, shape)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format="JPEG", quality=90)


def _mode(label: int, index: int, cmyk: bool) -> str:
    """About one image in 20 greyscale ("L") and, where ``cmyk``, one in 50 CMYK; the rest RGB."""
    if (7 * label + index) % 20 == 0:
        return "L"
    if cmyk and (11 * label + index) % 50 == 25:
        return "CMYK"
    return "RGB"


def _write_imagenet(root: Path, spec: dict[str, Any]) -> dict[str, Any]:
    classes = wordnet_ids()
    counts = {"train": 0, "val": 0}
    modes = {"L": 0, "CMYK": 0, "RGB": 0}
    for split, folder, per in (
        ("train", "train", spec["train_per_class"]),
        ("val", "validation", spec["val_per_class"]),
    ):
        for label, wnid in enumerate(classes):
            d = root / folder / wnid
            d.mkdir(parents=True)
            for i in range(per):
                n = counts[split] + 1  # ImageNet numbers its validation files across classes
                name = f"{wnid}_{i + 1}.JPEG" if split == "train" else f"ILSVRC2012_val_{n:08d}.JPEG"
                mode = _mode(label, i + (split == "val") * 10, cmyk=True)
                ids = [spec["seed"], _LAYOUT_ID["imagenet100"], int(split == "val"), label, i]
                _write_image(d / name, ids, IMAGENET_SIZES, IMAGENET_SIZE_P, label / len(classes), label % 3, mode)
                modes[mode] += 1
                counts[split] += 1
    return {"classes": len(classes), "splits": counts, "modes": modes}


def _write_sysu(root: Path, spec: dict[str, Any]) -> dict[str, Any]:
    modes = {"L": 0, "RGB": 0}
    for label, cat in enumerate(SYSU_CATEGORIES):
        images = root / cat / "images"
        images.mkdir(parents=True)
        for i in range(spec["per_class"]):
            mode = _mode(label, i, cmyk=False)
            ids = [spec["seed"], _LAYOUT_ID["sysu-shapes"], 0, label, i]
            _write_image(images / f"{cat}_{i + 1:04d}.jpg", ids, SYSU_SIZES, None, label / 5, label % 3, mode)
            modes[mode] += 1
        # siblings the layout must ignore: an annotation and an image-like contour mask
        (root / cat / "annotations").mkdir()
        (root / cat / "annotations" / f"{cat}_0001.txt").write_text("stand-in annotation: 10 10 90 90\n")
        (root / cat / "contours").mkdir()
        Image.new("L", (16, 16), 255).save(root / cat / "contours" / f"{cat}_0001.png")
    n = len(SYSU_CATEGORIES) * spec["per_class"]
    return {"classes": len(SYSU_CATEGORIES), "splits": {"train": n}, "modes": modes}


def _record(layout: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "layout": layout, "spec": spec}


def _read_record(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return None  # a tree interrupted before its record: replaced


def _same(found: dict[str, Any] | None, layout: str, spec: dict[str, Any]) -> bool:
    return found is not None and {k: found.get(k) for k in ("format", "layout", "spec")} == _record(layout, spec)


def _check_ours(root: Path) -> None:
    """Raise unless ``root`` is a folder this module wrote (it holds ``STANDIN.txt``)."""
    if root.is_symlink() or not root.is_dir():
        raise FileExistsError(
            f"{root} exists and is not a folder (or is a symbolic link); not replacing it with a stand-in tree"
        )
    if not (root / MARKER).is_file():
        raise FileExistsError(
            f"{root} exists and has no {MARKER}: it may be real data, so the stand-in is not written there; "
            "choose another path for the stand-in tree or remove that folder yourself"
        )


def write_tree(layout: str, root: str | os.PathLike[str], spec: dict[str, Any]) -> dict[str, Any]:
    """Write the stand-in tree of ``layout`` at ``root`` (see the module docstring) unless the same one is there;
    return its summary: layout, spec, class count, images per split, image modes, and ``reused``."""
    spec = check_spec(layout, spec)
    root = Path(root)
    if root.exists() or root.is_symlink():
        _check_ours(root)
        found = _read_record(root)
        if _same(found, layout, spec):
            return {**found["summary"], "reused": True}  # type: ignore[index]
    partial = root.parent / f"{root.name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        (partial / MARKER).write_text(MARKER_TEXT)
        summary = {"layout": layout, "spec": spec}
        summary |= _write_imagenet(partial, spec) if layout == "imagenet100" else _write_sysu(partial, spec)
        (partial / SPEC_FILE).write_text(json.dumps({**_record(layout, spec), "summary": summary}, indent=1) + "\n")
        _install(partial, root, layout, spec)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return {**summary, "reused": False}


def _install(partial: Path, root: Path, layout: str, spec: dict[str, Any]) -> None:
    """Rename ``partial`` onto ``root``, moving an older stand-in aside first (and removing it after)."""
    old = root.parent / f"{root.name}.old-{os.getpid()}"
    if root.exists() or root.is_symlink():
        _check_ours(root)
        if _same(_read_record(root), layout, spec):
            return  # a concurrent writer installed the same tree meanwhile: keep it (it may be read already)
        os.rename(root, old)
    try:
        os.rename(partial, root)
    except OSError:
        # another writer installed a tree in between: fine if it is the same one, else the OSError naming both
        if root.is_dir() and (root / MARKER).is_file() and _same(_read_record(root), layout, spec):
            return
        raise
    finally:
        if old.exists():
            shutil.rmtree(old)

"""Ingest a folder of images into the HDF5 image layout (``core.data``): ImageNet-100, SYSU-Shapes or any
class-per-folder tree.

Layouts (``LAYOUTS``; ``root`` is the spec's ``path``):

``imagenet100``
    ``root/train/<class>/*`` → split ``train``; ``root/validation/<class>/*`` → split ``val``.
``sysu-shapes``
    ``root/<category>/images/*`` → split ``train`` (the data has no split). The sibling annotation and contour
    folders of each category are ignored; every category folder must hold ``images/``.
``folder``
    Split mode when the sub-folders of ``root`` are ``train`` alone or ``train`` plus one of ``val`` /
    ``validation``: ``root/train/<class>/*`` → ``train`` and ``root/val[idation]/<class>/*`` → ``val``.
    Otherwise flat, ``root/<class>/*`` → split ``train`` (a class may be called ``train`` if no folder is called
    ``val``, ``validation`` or ``test``; mixing those with other folders is an error, not a guess).

Rules shared by all layouts:

* Classes are the sub-folders of the train split, sorted by name (Python string order: Unicode code points,
  case-sensitive); label = index in that order; ``class_names`` is stored. A val split may lack classes but
  not have extra ones. Folders whose names start with ``.`` and ``__MACOSX`` are ignored.
* Files are taken from the class folder itself (not from its sub-folders), in sorted name order.
  Image files are those whose extension, compared case-insensitively, is in ``IMAGE_EXTENSIONS``
  (.jpg .jpeg .png .bmp .webp .gif .tif .tiff; GIF and multi-page TIFF give their first frame). Other files
  are skipped and counted as ``skipped_non_image``.
* Where the data has no val split, ``val_fraction`` > 0 holds out ``round(val_fraction · n)`` files of each
  class (n files of that class), chosen by ``numpy.random.default_rng([seed, label])``; both splits keep
  sorted file order. The hold-out is drawn among the files found, before decoding.
* Each image is decoded with Pillow, turned upright by its EXIF orientation, converted to RGB (grey, CMYK and
  palette by Pillow; 16-bit grey scaled by 1/257; transparency composited onto white) and resized to
  ``image_size`` square: ``stretch`` (ignore the aspect ratio; the reference's choice for SYSU-Shapes) or
  ``center-crop`` (short side to ``image_size``, long side ``int(image_size · long / short)``, then the
  centred square, as torchvision's ``Resize(s)`` + ``CenterCrop(s)``), with a ``resample`` filter
  (``bicubic`` default, ``bilinear``, ``lanczos``, ``box``). The method is recorded in the provenance.
* An unreadable image fails the run with a message listing the bad paths (up to ``MAX_LISTED``; decoding
  stops once more than that are found) unless ``on_error: skip``, which logs each path to stderr and skips it.
  Per split, ``found`` (image files), ``written``, ``skipped_corrupt`` and ``skipped_non_image`` go into the
  split group's attributes and the provenance ``counts``.

Decoding runs in ``workers`` processes; rows are written in file order, in blocks of one HDF5 chunk (~1 MiB),
so the output does not depend on ``workers``. The file is written under a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import PIL
from PIL import Image, ImageOps

from core import data
from core.provenance import atomic_path, provenance

LAYOUTS = ("imagenet100", "sysu-shapes", "folder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
RESIZE_MODES = ("stretch", "center-crop")
RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
ON_ERROR = ("fail", "skip")
MAX_LISTED = 20
DEFAULTS: dict[str, Any] = {
    "resize": "stretch",
    "resample": "bicubic",
    "on_error": "fail",
    "workers": None,
    "val_fraction": 0.0,
    "seed": 0,
    "compression": "none",
}
SPEC_KEYS = frozenset({"source", "path", "image_size", *DEFAULTS})
_IGNORED_DIRS = ("__MACOSX",)

_TREES = {
    "imagenet100": "{root}/\n  ├── train/<class>/*.JPEG\n  └── validation/<class>/*.JPEG",
    "sysu-shapes": (
        "{root}/\n  └── <category>/\n        ├── images/*.jpg      (taken)\n"
        "        └── annotations/, contours/, ...   (ignored)"
    ),
    "folder": (
        "{root}/<class>/*.jpg\n  or\n{root}/\n  ├── train/<class>/*.jpg\n  └── val/<class>/*.jpg   "
        "(optional; `validation/` also accepted)"
    ),
}


def expected_layout(layout: str, root: str | os.PathLike[str]) -> str:
    """A small tree drawing of ``layout`` under ``root``, for error messages."""
    return f"expected layout '{layout}':\n" + _TREES[layout].format(root=str(root).rstrip("/"))


def _source_error(kind: type[Exception], what: str, layout: str, root: Path, config_key: str) -> Exception:
    return kind(f"{what} (config key {config_key} = {str(root)!r})\n{expected_layout(layout, root)}")


def _subdirs(path: Path) -> list[str]:
    """Names of the visible sub-folders of ``path``, sorted."""
    return sorted(
        e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".") and e.name not in _IGNORED_DIRS
    )


def _folder_split_dirs(root: Path) -> dict[str, str] | None:
    """For the ``folder`` layout: ``{split: folder}`` when ``root`` holds split folders, else None (flat)."""
    subs = set(_subdirs(root))
    if "train" not in subs:
        return None
    if not subs & {"val", "validation", "test"}:
        return None if subs != {"train"} else {"train": "train"}
    if not subs <= {"train", "val", "validation"} or {"val", "validation"} <= subs:
        return {"train": "train", "val": "ambiguous"}
    val = next((v for v in ("val", "validation") if v in subs), None)
    return {"train": "train"} | ({"val": val} if val else {})


@dataclasses.dataclass
class Source:
    """Where each split's classes live: ``class_dirs[split][class] = folder of its image files``."""

    layout: str
    root: Path
    class_names: list[str]
    class_dirs: dict[str, dict[str, Path]]
    has_val: bool


def _resolve(layout: str, root: str | os.PathLike[str], config_key: str) -> Source:
    """Check the folder structure (folders only; no file listing, no decoding) and map splits to class folders."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset source {layout!r} (config key {config_key}); known: {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise _source_error(FileNotFoundError, f"dataset folder {root} does not exist", layout, root, config_key)
    if layout == "sysu-shapes":
        categories = _subdirs(root)
        if not categories:
            raise _source_error(FileNotFoundError, f"no category folders in {root}", layout, root, config_key)
        missing = [c for c in categories if not (root / c / "images").is_dir()]
        if missing:
            raise _source_error(
                FileNotFoundError,
                f"category folder(s) without an images/ folder: {', '.join(str(root / c / 'images') for c in missing)}",
                layout,
                root,
                config_key,
            )
        dirs = {"train": {c: root / c / "images" for c in categories}}
        return Source(layout, root, categories, dirs, has_val=False)
    if layout == "imagenet100":
        split_dirs = {"train": "train", "val": "validation"}
    else:
        split_dirs = _folder_split_dirs(root) or {"train": "."}
        if split_dirs.get("val") == "ambiguous":
            raise _source_error(
                ValueError,
                f"{root} mixes split folders with other folders ({', '.join(_subdirs(root))}): split mode takes "
                "train/ plus one of val/ or validation/ and nothing else (rename test/ to val/ to use it)",
                layout,
                root,
                config_key,
            )
    dirs: dict[str, dict[str, Path]] = {}
    for split, folder in split_dirs.items():
        base = root / folder if folder != "." else root
        if not base.is_dir():
            raise _source_error(FileNotFoundError, f"split folder {root / folder} is missing", layout, root, config_key)
        classes = _subdirs(base)
        if not classes:
            raise _source_error(FileNotFoundError, f"no class folders in {base}", layout, root, config_key)
        dirs[split] = {c: base / c for c in classes}
    class_names = list(dirs["train"])
    if "val" in dirs:
        extra = sorted(set(dirs["val"]) - set(class_names))
        if extra:
            raise _source_error(
                ValueError,
                f"class folder(s) in {root / split_dirs['val']} but not in {root / 'train'}: {', '.join(extra[:10])}",
                layout,
                root,
                config_key,
            )
    return Source(layout, root, class_names, dirs, has_val="val" in dirs)


def check_source(layout: str, root: str | os.PathLike[str], config_key: str) -> None:
    """Raise FileNotFoundError/ValueError naming the missing folder, the expected layout and ``config_key``
    unless ``root`` has the folder structure of ``layout``. Cheap (lists folders only): runs at planning time."""
    _resolve(layout, root, config_key)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_files(folder: Path) -> tuple[list[Path], int]:
    """The image files directly in ``folder`` in sorted name order, and the number of other files skipped."""
    names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    images = [folder / n for n in names if is_image_name(n)]
    return images, len(names) - len(images)


def holdout(n: int, fraction: float, seed: int, label: int) -> np.ndarray:
    """Boolean mask of the ``round(fraction · n)`` files of class ``label`` held out as ``val``."""
    mask = np.zeros(n, dtype=bool)
    k = round(fraction * n)
    if k:
        mask[np.random.default_rng([seed, label]).permutation(n)[:k]] = True
    return mask


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB: 16-bit grey scaled to 8 bits, transparency composited onto white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def resize(img: Image.Image, size: int, mode: str, resample: str) -> Image.Image:
    """``stretch``: to size × size ignoring the aspect ratio; ``center-crop``: short side to ``size``, then the
    centred square (torchvision's Resize + CenterCrop arithmetic)."""
    flt = RESAMPLE[resample]
    if mode == "stretch":
        return img.resize((size, size), flt)
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = img.resize((nw, nh), flt)
    left, top = round((nw - size) / 2.0), round((nh - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | os.PathLike[str], size: int, mode: str = "stretch", resample: str = "bicubic") -> np.ndarray:
    """Decode one image file to uint8 (size, size, 3); raises on unreadable or truncated files."""
    with Image.open(path) as img:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        img = resize(to_rgb(img), size, mode, resample)
        arr = np.asarray(img, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise ValueError(f"decoded to shape {arr.shape}, expected {(size, size, 3)}")
    return arr


def _load_or_error(path: str, size: int, mode: str, resample: str) -> np.ndarray | str:
    """Worker: the image, or the error as text (exceptions do not cross the process boundary untouched)."""
    try:
        return load_image(path, size, mode, resample)
    except Exception as err:  # any decoder failure makes the file unreadable for us
        return f"{type(err).__name__}: {err}"


def _decode(
    paths: list[str], size: int, mode: str, resample: str, pool: Executor | None, workers: int
) -> Iterator[np.ndarray | str]:
    """Decoded images (or error texts) in the order of ``paths``, in this process or over ``pool``."""
    fn = partial(_load_or_error, size=size, mode=mode, resample=resample)
    if pool is None or len(paths) < 2:
        yield from map(fn, paths)
        return
    chunksize = max(1, min(32, len(paths) // (workers * 8)))
    yield from pool.map(fn, paths, chunksize=chunksize)


def validate_spec(spec: dict[str, Any], config_key: str) -> dict[str, Any]:
    """The spec with defaults filled in; ValueError naming the key for anything out of range."""
    key = config_key.rsplit(".", 1)[0] if config_key.endswith(".path") else config_key
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SPEC_KEYS))}")
    missing = [k for k in ("source", "path", "image_size") if k not in spec]
    if missing:
        raise ValueError(f"{key}: missing key(s) {', '.join(missing)}")
    s = DEFAULTS | dict(spec)
    checks = [
        ("source", s["source"] in LAYOUTS, f"one of {', '.join(LAYOUTS)}"),
        ("path", isinstance(s["path"], str | os.PathLike) and str(s["path"]) != "", "a folder path"),
        ("image_size", isinstance(s["image_size"], int) and s["image_size"] >= 1, "a positive integer"),
        ("resize", s["resize"] in RESIZE_MODES, f"one of {', '.join(RESIZE_MODES)}"),
        ("resample", s["resample"] in RESAMPLE, f"one of {', '.join(RESAMPLE)}"),
        ("on_error", s["on_error"] in ON_ERROR, f"one of {', '.join(ON_ERROR)}"),
        ("workers", s["workers"] is None or (isinstance(s["workers"], int) and s["workers"] >= 1), "null or ≥ 1"),
        ("val_fraction", isinstance(s["val_fraction"], int | float) and 0 <= s["val_fraction"] < 1, "in [0, 1)"),
        ("seed", isinstance(s["seed"], int), "an integer"),
        ("compression", s["compression"] in ("none", "lzf", "gzip", None), "none, lzf or gzip"),
    ]
    for name, ok, want in checks:
        if not ok:
            raise ValueError(f"{key}.{name} must be {want}, got {s[name]!r}")
    return s


def plan(src: Source, val_fraction: float, seed: int, config_key: str) -> tuple[dict[str, list], dict[str, int]]:
    """Per split, the (path, label) list in write order, and the non-image files skipped per split."""
    items: dict[str, list[tuple[Path, int]]] = {"train": [], "val": []}
    non_image = {"train": 0, "val": 0}
    if src.has_val and val_fraction:
        raise ValueError(
            f"{config_key.rsplit('.', 1)[0]}.val_fraction must be 0 for {src.root}: its data has a val split"
        )
    for split, dirs in src.class_dirs.items():
        for cls, folder in dirs.items():
            label = src.class_names.index(cls)
            files, skipped = list_files(folder)
            non_image[split] += skipped
            if split == "train" and not src.has_val:
                held = holdout(len(files), val_fraction, seed, label)
                items["val"] += [(p, label) for p, h in zip(files, held, strict=True) if h]
                files = [p for p, h in zip(files, held, strict=True) if not h]
            items[split] += [(p, label) for p in files]
    if not items["train"]:
        raise _source_error(
            FileNotFoundError, f"no image files ({' '.join(IMAGE_EXTENSIONS)})", src.layout, src.root, config_key
        )
    return items, non_image


def _write_split(
    f: h5py.File,
    split: str,
    items: list[tuple[Path, int]],
    s: dict[str, Any],
    pool: Executor | None,
    workers: int,
) -> tuple[int, list[tuple[str, str]]]:
    """Decode and write one split in file order; returns rows written and the (path, error) of bad files."""
    size = s["image_size"]
    images, labels = data.create_split(f, split, len(items), size, s["compression"])
    block = data.chunk_rows(size)
    buf_img: list[np.ndarray] = []
    buf_lab: list[int] = []
    written = 0
    bad: list[tuple[str, str]] = []

    def flush() -> None:
        nonlocal written
        if buf_img:
            images[written : written + len(buf_img)] = np.stack(buf_img)
            labels[written : written + len(buf_lab)] = np.asarray(buf_lab, dtype=np.int64)
            written += len(buf_img)
            buf_img.clear()
            buf_lab.clear()

    decoded = _decode([str(p) for p, _ in items], size, s["resize"], s["resample"], pool, workers)
    try:
        for (path, label), out in zip(items, decoded, strict=False):
            if isinstance(out, str):
                bad.append((str(path), out))
                if s["on_error"] == "skip":
                    print(f"[ingest] skipped unreadable image {path} ({out})", file=sys.stderr, flush=True)
                elif len(bad) > MAX_LISTED:
                    break  # enough to report; do not decode the rest
                continue
            if s["on_error"] == "fail" and bad:
                continue  # failing anyway: only keep looking for bad files
            buf_img.append(out)
            buf_lab.append(label)
            if len(buf_img) == block:
                flush()
        flush()
    finally:
        decoded.close()
    return written, bad


def _compact(src: Path, dst: Path, counts: dict[str, dict[str, int]], compression: str | None) -> None:
    """Copy ``src`` into ``dst`` keeping only the first ``written`` rows of each split (after skips)."""
    with h5py.File(src, "r") as fi, h5py.File(dst, "w") as fo:
        for k, v in fi.attrs.items():
            fo.attrs[k] = v
        size = int(fi.attrs["image_size"])
        step = data.chunk_rows(size) * 16
        for split, c in counts.items():
            n = c["written"]
            images, labels = data.create_split(fo, split, n, size, compression)
            for a in range(0, n, step):
                b = min(n, a + step)
                images[a:b] = fi[f"{split}/images"][a:b]
                labels[a:b] = fi[f"{split}/labels"][a:b]
            for k, v in fi[split].attrs.items():
                fo[split].attrs[k] = v


def ingest(spec: dict[str, Any], out: str | os.PathLike[str], config_key: str | None = None) -> dict[str, Any]:
    """Write the image folder described by ``spec`` to ``out`` in the HDF5 image layout; return the counts
    ``{split: {found, written, skipped_corrupt, skipped_non_image}}``.

    ``config_key`` names ``spec['path']`` in error messages (default ``datasets.<name>.path``).
    """
    config_key = config_key or "datasets.<name>.path"
    s = validate_spec(spec, config_key)
    workers = s["workers"] or os.cpu_count() or 1
    t0 = time.time()
    src = _resolve(s["source"], s["path"], config_key)
    items, non_image = plan(src, float(s["val_fraction"]), s["seed"], config_key)
    splits = ["train", "val"] if src.has_val or s["val_fraction"] > 0 else ["train"]
    counts: dict[str, dict[str, int]] = {}
    bad_all: list[tuple[str, str]] = []
    method = {
        "library": f"Pillow {PIL.__version__}",
        "resize": s["resize"],
        "resample": s["resample"],
        "image_size": s["image_size"],
        "to_rgb": "EXIF orientation applied; grey/CMYK/palette via Pillow convert; 16-bit grey / 257; "
        "alpha composited onto white",
        "center_crop": "short side to image_size, long int(image_size*long/short), centred square"
        if s["resize"] == "center-crop"
        else None,
    }
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out))
        # one pool for all splits; a worker that dies (decoder crash, OOM) raises BrokenProcessPool, not a hang;
        # leaving the block cancels queued work, so a run that fails early does not decode the rest
        pool = None
        if workers > 1:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context())
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            pool.submit(int).result()  # start the workers now, before the HDF5 file is open (no inherited lock)
        with h5py.File(tmp, "w") as f:
            class_counts: dict[str, list[int]] = {}
            for split in splits:
                if not items[split]:
                    counts[split] = {"found": 0, "written": 0}
                    continue  # reported as an empty split below
                written, bad = _write_split(f, split, items[split], s, pool, workers)
                bad_all += bad
                if s["on_error"] == "fail" and bad:
                    if len(bad_all) > MAX_LISTED:
                        break
                    continue  # look for more bad files in the next split
                counts[split] = {
                    "found": len(items[split]),
                    "written": written,
                    "skipped_corrupt": len(bad),
                    "skipped_non_image": non_image[split],
                }
                for k, v in counts[split].items():
                    f[split].attrs[k] = v
                f[split].attrs["count"] = written
                bad_set = {p for p, _ in bad}
                per_class = np.bincount(
                    [lab for p, lab in items[split] if str(p) not in bad_set], minlength=len(src.class_names)
                )
                class_counts[split] = per_class.tolist()
                print(f"[ingest] {split}: {counts[split]}", flush=True)
            if s["on_error"] == "fail" and bad_all:
                listed = "\n  ".join(f"{p}: {e}" for p, e in bad_all[:MAX_LISTED])
                more = (
                    f" (stopped after more than {MAX_LISTED}; first {MAX_LISTED} listed)"
                    if len(bad_all) > MAX_LISTED
                    else ""
                )
                raise ValueError(
                    f"{len(bad_all)} unreadable image file(s) under {src.root}{more}:\n  {listed}\n"
                    f"Fix or remove them, or set {config_key.rsplit('.', 1)[0]}.on_error: skip to skip them."
                )
            empty = [sp for sp, c in counts.items() if c["written"] == 0]
            if empty:
                raise ValueError(
                    f"no readable images in split(s) {', '.join(empty)} under {src.root} "
                    f"(val_fraction {s['val_fraction']} of the files of each class, rounded, is held out as val)"
                    if empty == ["val"] and not src.has_val
                    else f"no readable images in split(s) {', '.join(empty)} under {src.root}"
                )
            prov = provenance(
                s,
                source=f"{s['source']} image folder at {src.root.resolve()}",
                layout=s["source"],
                method=method,
                counts=counts,
                class_counts=class_counts,
                skipped_corrupt=[os.path.relpath(p, src.root) for p, _ in bad_all[:100]],
                extensions=list(IMAGE_EXTENSIONS),
            )
            data.write_root_attrs(f, "dataset", s["image_size"], src.class_names, prov)
        if any(c["written"] < c["found"] for c in counts.values()):
            with atomic_path(tmp) as compact:
                _compact(tmp, compact, counts, s["compression"])
    print(f"[ingest] wrote {out} in {time.time() - t0:.1f}s ({workers} workers)", flush=True)
    return counts

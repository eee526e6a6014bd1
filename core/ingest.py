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

* The dataset folder and its split folders must exist, be folders and be listable; anything else is an error
  naming the folder and the config key (whatever ``on_error`` says).
* Classes are the sub-folders of the train split, sorted by name (Python string order: Unicode code points,
  case-sensitive); label = index in that order among the classes kept (below); ``class_names`` lists the
  kept classes. A val split may lack classes but not have extra ones. Folders whose names start with ``.``
  and ``__MACOSX`` are ignored.
* Files are taken from the class folder itself (not from its sub-folders), in sorted name order.
  Image files are the regular files whose extension, compared case-insensitively, is in ``IMAGE_EXTENSIONS``
  (.jpg .jpeg .png .bmp .webp .gif .tif .tiff; GIF and multi-page TIFF give their first frame). Other regular
  files are skipped and counted as ``skipped_non_image``; other entries without an image extension
  (sub-folders, links that do not resolve, pipes, ...) are never opened and not counted.
* Unreadable entries: an entry with an image extension that is a broken symbolic link, a symbolic link loop,
  one whose ``stat`` fails (e.g. permission denied) or that is not a regular file (a FIFO, socket or device:
  never opened), a class folder that cannot be listed, and an entry of a split folder whose type cannot be
  determined (a symbolic link loop or broken link where a class folder could be: it counts as a class whose
  folder is unreadable). They are found while listing, before any decoding: with ``on_error: fail`` they fail
  the run in one message listing each path and reason; with ``on_error: skip`` each is logged to stderr,
  skipped and counted as ``skipped_unreadable`` of the split whose folder holds it (``train`` where ``val`` is
  a hold-out). ``check_source`` reports an unreadable class folder at planning time by name.
* Empty classes: a class with no image files in its train split (none found, or, after ``on_error: skip``,
  none readable) is an error naming its folder unless ``empty_classes: drop``, which drops it: labels stay
  contiguous (0..K−1 over the remaining classes, in sorted order), ``class_names`` lists the kept classes and
  the dropped names are printed and recorded (provenance ``dropped_classes``). A class whose images are all in
  the val split (none in train) is an error either way.
* Where the data has no val split, ``val_fraction`` > 0 holds out ``round(val_fraction · n)`` files of each
  class (n files of that class), chosen by ``numpy.random.default_rng([seed, i])``, i the index of the class
  folder among all class folders in sorted order (its label unless classes are dropped); both splits keep
  sorted file order. The hold-out is drawn among the files found, before decoding.
* Each image is decoded with Pillow, turned upright by its EXIF orientation, converted to RGB (grey, CMYK and
  palette by Pillow; 16-bit grey scaled by 1/257; transparency composited onto white) and resized to
  ``image_size`` square: ``stretch`` (ignore the aspect ratio; the reference's choice for SYSU-Shapes) or
  ``center-crop`` (short side to ``image_size``, long side ``int(image_size · long / short)``, then the
  centred square, as torchvision's ``Resize(s)`` + ``CenterCrop(s)``), with a ``resample`` filter
  (``bicubic`` default, ``bilinear``, ``lanczos``, ``box``). The method is recorded in the provenance.
* Channels (``channels``): ``3`` writes RGB; ``1`` writes grey, Pillow's ``convert("L")`` of the resized RGB
  image; ``auto`` (default) writes 1 channel when every written image is grey (R == G == B exactly after
  decoding and resizing; then the grey channel equals what ``1`` writes) and RGB otherwise. Images are
  (N, H, W, C) with C ∈ {1, 3}; the root attribute ``channels`` and the provenance (``method.channels``: the
  rule and the result) record it.
* An unreadable image fails the run with a message listing the bad paths (up to ``MAX_LISTED``; decoding
  stops once more than that are found) unless ``on_error: skip``, which logs each path to stderr and skips it.
  Per split, ``found`` (image files), ``written``, ``skipped_corrupt``, ``skipped_unreadable`` and
  ``skipped_non_image`` go into the split group's attributes and the provenance ``counts``.

Decoding runs in ``workers`` processes; rows are written in file order, in blocks of one HDF5 chunk (~1 MiB),
so the output does not depend on ``workers``. The file is written under a temporary name and renamed; where
rows were skipped, classes dropped after decoding or ``auto`` found grey data, it is compacted into the final
file (relabelled, 1 channel) first.

Planning helpers (cheap: folders only, no file listing): ``check_source`` and ``source_summary`` (classes and
whether the data has a val split), ``source_fingerprint`` (changes when files are added, removed or renamed);
``check_requirements`` checks split sizes against what the configuration needs.
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
from core.folders import (
    IMAGE_EXTENSIONS,
    Source,
    file_kind,
    os_reason,
    resolve,
    source_error,
    spec_key,
)
from core.provenance import atomic_path, provenance

RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
MAX_LISTED = 20


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclasses.dataclass
class Listing:
    """What one class folder holds: image files (sorted), the count of other regular files, and the
    ``(path, reason)`` of unreadable entries (see the module's rules)."""

    images: list[Path]
    non_image: int
    unreadable: list[tuple[str, str]]


def list_files(folder: Path) -> Listing:
    """The image files directly in ``folder`` in sorted name order, the number of other regular files skipped,
    and the entries that look like images but cannot be read as files. Never opens a file; never raises for
    an entry (a folder that cannot be listed is one unreadable entry)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        return Listing([], 0, [(str(folder), f"class folder cannot be listed ({os_reason(folder, err)})")])
    images: list[Path] = []
    non_image = 0
    unreadable: list[tuple[str, str]] = []
    for e in entries:
        image = is_image_name(e.name)
        try:
            if e.is_file():
                if image:
                    images.append(folder / e.name)
                else:
                    non_image += 1
                continue
            if e.is_dir() or not image:
                continue  # sub-folders are not taken; other non-files are never opened
            kind = file_kind(e.stat().st_mode)  # stat does not open: safe on a FIFO
            unreadable.append((e.path, f"not a regular file ({kind})"))
        except OSError as err:
            if image:
                unreadable.append((e.path, os_reason(e.path, err)))
    return Listing(images, non_image, unreadable)


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


def load_image(
    path: str | os.PathLike[str], size: int, mode: str = "stretch", resample: str = "bicubic", channels: int = 3
) -> np.ndarray:
    """Decode one image file to uint8 (size, size, channels): RGB, or for ``channels=1`` Pillow's grey ("L") of
    the resized RGB image; raises on unreadable or truncated files."""
    with Image.open(path) as img:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        img = resize(to_rgb(img), size, mode, resample)
        if channels == 1:
            img = img.convert("L")
        arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape != (size, size, channels):
        raise ValueError(f"decoded to shape {arr.shape}, expected {(size, size, channels)}")
    return arr


def _load_or_error(path: str, size: int, mode: str, resample: str, channels: int = 3) -> np.ndarray | str:
    """Worker: the image, or the error as text (exceptions do not cross the process boundary untouched)."""
    try:
        return load_image(path, size, mode, resample, channels)
    except Exception as err:  # any decoder failure makes the file unreadable for us
        return f"{type(err).__name__}: {err}"


def _decode(
    paths: list[str], size: int, mode: str, resample: str, channels: int, pool: Executor | None, workers: int
) -> Iterator[np.ndarray | str]:
    """Decoded images (or error texts) in the order of ``paths``, in this process or over ``pool``."""
    fn = partial(_load_or_error, size=size, mode=mode, resample=resample, channels=channels)
    if pool is None or len(paths) < 2:
        yield from map(fn, paths)
        return
    chunksize = max(1, min(32, len(paths) // (workers * 8)))
    yield from pool.map(fn, paths, chunksize=chunksize)


def complete_spec(spec: dict[str, Any], config_key: str) -> dict[str, Any]:
    """``spec`` checked against the config schema (``$defs/dataset_folder``) and completed with its defaults (the
    schema is their one home); ValueError naming the key for anything missing, unknown or out of range."""
    from core import config

    key = spec_key(config_key)
    try:
        config.check(spec, config.defs_ref("dataset_folder"), key.split("."))
    except config.ConfigError as err:
        raise ValueError(str(err)) from None
    return config.fill(spec, config.defs_ref("dataset_folder"))


@dataclasses.dataclass
class Plan:
    """Per split, the (path, label) list in write order; per split, the non-image files and the unreadable
    entries skipped; the kept classes (label order), the train folder of each, and the dropped classes."""

    items: dict[str, list[tuple[Path, int]]]
    non_image: dict[str, int]
    unreadable: dict[str, list[tuple[str, str]]]
    class_names: list[str]
    class_dirs: dict[str, Path]
    dropped: list[str]


def _list_error(bad: list[tuple[str, str]], what: str, root: Path, key: str, more: str = "") -> ValueError:
    listed = "\n  ".join(f"{p}: {e}" for p, e in bad[:MAX_LISTED])
    if not more and len(bad) > MAX_LISTED:
        more = f" (first {MAX_LISTED} listed)"
    return ValueError(
        f"{len(bad)} {what} under {root}{more}:\n  {listed}\n"
        f"Fix or remove them, or set {key}.on_error: skip to skip them."
    )


def _empty_class_error(empty: list[tuple[str, str]], key: str) -> ValueError:
    listed = "\n  ".join(f"{folder}: {why}" for folder, why in empty)
    return ValueError(
        f"{len(empty)} empty class folder(s):\n  {listed}\n"
        f"Add images, remove the folder(s), or set {key}.empty_classes: drop to drop these classes "
        "(the labels of the later classes then shift down)."
    )


def _val_only_error(names: list[str], dirs: dict[str, Path], why: str) -> ValueError:
    return ValueError(
        "\n".join(f"class {n} ({dirs[n]}) {why}, none in train: a class must have train images" for n in names)
    )


def plan(src: Source, s: dict[str, Any], config_key: str) -> Plan:
    """List every class folder, hold out ``val_fraction``, apply ``on_error`` to unreadable entries and
    ``empty_classes`` to classes without files in train; label the kept classes 0..K−1."""
    key = spec_key(config_key)
    val_fraction, seed = float(s["val_fraction"]), s["seed"]
    if src.has_val and val_fraction:
        raise ValueError(f"{key}.val_fraction must be 0 for {src.root}: its data has a val split")
    files: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
    non_image = {"train": 0, "val": 0}
    unreadable: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    why_empty: dict[str, str] = {}  # train class → why it has no files, for the message
    for split, dirs in src.class_dirs.items():
        for cls, folder in dirs.items():
            entry = src.unreadable.get(split, {}).get(cls)
            listing = Listing([], 0, [entry]) if entry else list_files(folder)
            if split == "train":
                why_empty[cls] = (
                    f"unreadable ({listing.unreadable[0][1]}), skipped"
                    if listing.unreadable and listing.unreadable[0][0] in (str(folder), str(folder.parent))
                    else f"no image files ({len(listing.unreadable)} unreadable entries skipped)"
                    if listing.unreadable
                    else "no image files"
                )
            non_image[split] += listing.non_image
            unreadable[split] += listing.unreadable
            found = listing.images
            if split == "train" and not src.has_val:
                held = holdout(len(found), val_fraction, seed, src.class_names.index(cls))
                files["val"][cls] = [p for p, h in zip(found, held, strict=True) if h]
                found = [p for p, h in zip(found, held, strict=True) if not h]
            files[split][cls] = found
    bad = unreadable["train"] + unreadable["val"]
    if bad and s["on_error"] == "fail":
        raise _list_error(bad, "unreadable entr(y/ies)", src.root, key)
    for path, why in bad:
        print(f"[ingest] skipped unreadable entry {path} ({why})", file=sys.stderr, flush=True)
    train_dirs = src.class_dirs["train"]
    if not any(files["train"].values()) and not any(files["val"].values()):
        raise source_error(
            FileNotFoundError, f"no image files ({' '.join(IMAGE_EXTENSIONS)})", src.layout, src.root, config_key
        )
    val_only = [c for c in src.class_names if not files["train"][c] and files["val"].get(c)]
    if val_only:
        why = (
            "has image files only in split val"
            if src.has_val
            else f"has all its files held out as val ({key}.val_fraction {val_fraction}; lower it or add images)"
        )
        raise _val_only_error(val_only, train_dirs, why)
    empty = [c for c in src.class_names if not files["train"][c]]
    if empty and s["empty_classes"] == "fail":
        raise _empty_class_error([(str(train_dirs[c]), why_empty[c]) for c in empty], key)
    kept = [c for c in src.class_names if c not in empty]
    if empty:
        print(f"[ingest] dropped empty class(es) {', '.join(empty)} (no image files)", file=sys.stderr, flush=True)
    items: dict[str, list[tuple[Path, int]]] = {"train": [], "val": []}
    for label, cls in enumerate(kept):
        for split in ("train", "val"):
            items[split] += [(p, label) for p in files[split].get(cls, [])]
    return Plan(items, non_image, unreadable, kept, {c: train_dirs[c] for c in kept}, empty)


def _write_split(
    f: h5py.File,
    split: str,
    items: list[tuple[Path, int]],
    s: dict[str, Any],
    channels: int,
    pool: Executor | None,
    workers: int,
) -> tuple[int, list[tuple[str, str]], bool]:
    """Decode and write one split in file order (``channels`` per image); returns rows written, the
    (path, error) of bad files and, for ``channels: auto``, whether every written image is grey (R == G == B)."""
    size = s["image_size"]
    images, labels = data.create_split(f, split, len(items), size, s["compression"], channels)
    block = data.chunk_rows(size)
    buf_img: list[np.ndarray] = []
    buf_lab: list[int] = []
    written = 0
    bad: list[tuple[str, str]] = []
    grey = True

    def flush() -> None:
        nonlocal written, grey
        if buf_img:
            rows = np.stack(buf_img)
            if grey and channels == 3 and s["channels"] == "auto":
                grey = bool((rows[..., 0] == rows[..., 1]).all() and (rows[..., 1] == rows[..., 2]).all())
            images[written : written + len(buf_img)] = rows
            labels[written : written + len(buf_lab)] = np.asarray(buf_lab, dtype=np.int64)
            written += len(buf_img)
            buf_img.clear()
            buf_lab.clear()

    decoded = _decode([str(p) for p, _ in items], size, s["resize"], s["resample"], channels, pool, workers)
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
    return written, bad, grey


def _compact(
    src: Path,
    dst: Path,
    counts: dict[str, dict[str, int]],
    compression: str | None,
    relabel: np.ndarray | None = None,
    channels: int | None = None,
) -> None:
    """Copy ``src`` into ``dst`` keeping only the first ``written`` rows of each split (after skips), mapping
    label l to ``relabel[l]`` (after classes were dropped) and keeping the first ``channels`` channels (3 → 1
    where every image is grey, R == G == B)."""
    with h5py.File(src, "r") as fi, h5py.File(dst, "w") as fo:
        for k, v in fi.attrs.items():
            fo.attrs[k] = v
        size = int(fi.attrs["image_size"])
        step = data.chunk_rows(size) * 16
        for split, c in counts.items():
            n = c["written"]
            src_images, src_labels = fi[f"{split}/images"], fi[f"{split}/labels"]
            c_out = channels or src_images.shape[3]
            images, labels = data.create_split(fo, split, n, size, compression, c_out)
            for a in range(0, n, step):
                b = min(n, a + step)
                images[a:b] = src_images[a:b][..., :c_out]
                lab = src_labels[a:b]
                labels[a:b] = lab if relabel is None else relabel[lab]
            for k, v in fi[split].attrs.items():
                fo[split].attrs[k] = v


def ingest(spec: dict[str, Any], out: str | os.PathLike[str], config_key: str | None = None) -> dict[str, Any]:
    """Write the image folder described by ``spec`` to ``out`` in the HDF5 image layout; return the counts
    ``{split: {found, written, skipped_corrupt, skipped_unreadable, skipped_non_image}}``.

    ``config_key`` names ``spec['path']`` in error messages (default ``datasets.<name>.path``).
    """
    config_key = config_key or "datasets.<name>.path"
    key = spec_key(config_key)
    s = complete_spec(spec, config_key)
    workers = s["workers"] or os.cpu_count() or 1
    t0 = time.time()
    src = resolve(s["source"], s["path"], config_key)
    if s["val_fraction"] is None:  # the schema's rule: hold out 10% where the data has no val split of its own
        s["val_fraction"] = 0.0 if src.has_val else 0.1
    p = plan(src, s, config_key)
    splits = ["train", "val"] if src.has_val or s["val_fraction"] > 0 else ["train"]
    decode_channels = 1 if s["channels"] == 1 else 3
    counts: dict[str, dict[str, int]] = {}
    bad_all: list[tuple[str, str]] = []
    grey_all = True
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
            per_class: dict[str, np.ndarray] = {}
            for split in splits:
                if not p.items[split]:
                    counts[split] = {"found": 0, "written": 0}
                    continue  # reported as an empty split below
                written, bad, grey = _write_split(f, split, p.items[split], s, decode_channels, pool, workers)
                bad_all += bad
                grey_all &= grey
                if s["on_error"] == "fail" and bad:
                    if len(bad_all) > MAX_LISTED:
                        break
                    continue  # look for more bad files in the next split
                counts[split] = {
                    "found": len(p.items[split]),
                    "written": written,
                    "skipped_corrupt": len(bad),
                    "skipped_unreadable": len(p.unreadable[split]),
                    "skipped_non_image": p.non_image[split],
                }
                for k, v in counts[split].items():
                    f[split].attrs[k] = v
                f[split].attrs["count"] = written
                bad_set = {path for path, _ in bad}
                per_class[split] = np.bincount(
                    [lab for path, lab in p.items[split] if str(path) not in bad_set], minlength=len(p.class_names)
                )
                print(f"[ingest] {split}: {counts[split]}", flush=True)
            if s["on_error"] == "fail" and bad_all:
                more = f" (stopped after more than {MAX_LISTED}; first {MAX_LISTED} listed)"
                raise _list_error(
                    bad_all, "unreadable image file(s)", src.root, key, more if len(bad_all) > MAX_LISTED else ""
                )
            empty = [sp for sp, c in counts.items() if c["written"] == 0]
            if empty:
                raise ValueError(
                    f"no readable images in split(s) {', '.join(empty)} under {src.root} "
                    f"(val_fraction {s['val_fraction']} of the files of each class, rounded, is held out as val)"
                    if empty == ["val"] and not src.has_val
                    else f"no readable images in split(s) {', '.join(empty)} under {src.root}"
                )
            class_names, dropped, relabel = list(p.class_names), list(p.dropped), None
            gone = [i for i, n in enumerate(per_class["train"]) if n == 0]  # every file of the class skipped
            if gone:
                names = [p.class_names[i] for i in gone]
                val_only = [p.class_names[i] for i in gone if "val" in per_class and per_class["val"][i]]
                if val_only:
                    raise _val_only_error(val_only, p.class_dirs, "has readable images only in split val")
                if s["empty_classes"] == "fail":
                    raise _empty_class_error(
                        [(str(p.class_dirs[n]), "no readable image files left after on_error: skip") for n in names],
                        key,
                    )
                print(
                    f"[ingest] dropped class(es) {', '.join(names)} (no readable images)", file=sys.stderr, flush=True
                )
                keep = np.array([i not in gone for i in range(len(class_names))])
                relabel = np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)
                class_names = [n for n, k in zip(class_names, keep, strict=True) if k]
                dropped = sorted(dropped + names)
                per_class = {sp: v[keep] for sp, v in per_class.items()}
            channels = decode_channels if s["channels"] != "auto" else (1 if grey_all else 3)
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
                "channels": {
                    "rule": s["channels"],
                    "result": channels,
                    "how": {
                        1: "grey: Pillow convert('L') of the resized RGB image",
                        3: "RGB",
                        "auto": "1 channel (R == G == B exactly in every written image) else RGB",
                    }[s["channels"]],
                },
            }
            prov = provenance(
                s,
                source=f"{s['source']} image folder at {src.root.resolve()}",
                layout=s["source"],
                method=method,
                counts=counts,
                class_counts={sp: v.tolist() for sp, v in per_class.items()},
                dropped_classes=dropped,
                skipped_corrupt=[os.path.relpath(path, src.root) for path, _ in bad_all[:100]],
                skipped_unreadable=[
                    f"{os.path.relpath(path, src.root)}: {why}"
                    for path, why in (p.unreadable["train"] + p.unreadable["val"])[:100]
                ],
                extensions=list(IMAGE_EXTENSIONS),
            )
            data.write_root_attrs(f, "dataset", s["image_size"], class_names, prov)
            f.attrs["channels"] = channels
        if (
            any(c["written"] < c["found"] for c in counts.values())
            or relabel is not None
            or channels != decode_channels
        ):
            with atomic_path(tmp) as compact:
                _compact(tmp, compact, counts, s["compression"], relabel, channels)
    print(f"[ingest] wrote {out} in {time.time() - t0:.1f}s ({workers} workers, {channels} channel(s))", flush=True)
    return counts

"""Ingestion of image folders (core.ingest): the three layouts round-trip, bad files are reported or skipped and
counted, planning-time checks name the config key and layout, output is deterministic, resizing is as stated."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from core import data, folders, ingest

RED, BLUE, GREEN, GREY = (200, 30, 40), (20, 40, 220), (30, 180, 60), (128, 128, 128)


def solid(path: Path, colour: tuple[int, ...], size: tuple[int, int] = (12, 10), mode: str = "RGB", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **kw)
    return path


def read(path: Path) -> tuple[dict, list[str], dict]:
    """Splits as {split: (images, labels)}, class names and provenance of an ingested file."""
    with h5py.File(path, "r") as f:
        splits = {sp: (f[f"{sp}/images"][:], f[f"{sp}/labels"][:]) for sp in ("train", "val") if sp in f}
        return splits, data.class_names(f), json.loads(f.attrs["provenance"])


def spec(source: str, root: Path, **kw) -> dict:
    """A dataset entry as config.yaml holds it; no hold-out unless asked (the schema's null would hold out 10%)."""
    val = {} if source == "imagenet100" else {"val_fraction": 0.0}
    return {"source": source, "path": str(root), "image_size": 8, "workers": 1} | val | kw


def test_imagenet100_round_trip(tmp_path):
    root = tmp_path / "imagenet100_128x128"
    for i in range(3):
        solid(root / "train" / "n02" / f"x{i}.JPEG", BLUE, quality=95)
    for i in range(2):
        solid(root / "train" / "n01" / f"x{i}.jpeg", RED, quality=95)
    solid(root / "validation" / "n01" / "v.JPEG", RED, quality=95)
    solid(root / "validation" / "n02" / "v.JPG", BLUE, quality=95)
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    out = tmp_path / "in100.h5"
    counts = ingest.ingest(spec("imagenet100", root), out)
    assert counts == {
        "train": {"found": 5, "written": 5, "skipped_corrupt": 0, "skipped_unreadable": 0, "skipped_non_image": 1},
        "val": {"found": 2, "written": 2, "skipped_corrupt": 0, "skipped_unreadable": 0, "skipped_non_image": 0},
    }
    splits, names, prov = read(out)
    assert names == ["n01", "n02"]
    (tr, tl), (va, vl) = splits["train"], splits["val"]
    assert tr.shape == (5, 8, 8, 3) and tl.tolist() == [0, 0, 1, 1, 1] and vl.tolist() == [0, 1]
    # solid colours survive JPEG and resizing to within JPEG's rounding
    assert np.abs(tr[:2].astype(int) - RED).max() <= 3 and np.abs(tr[2:].astype(int) - BLUE).max() <= 3
    assert np.abs(va[1].astype(int) - BLUE).max() <= 3
    assert prov["counts"] == counts and prov["class_counts"] == {"train": [2, 3], "val": [1, 1]}
    assert prov["method"]["resize"] == "stretch" and prov["method"]["resample"] == "bicubic"
    assert prov["method"]["library"].startswith("Pillow")
    with h5py.File(out, "r") as f:
        assert f["train"].attrs["skipped_non_image"] == 1 and f["val"].attrs["written"] == 2
        assert f.attrs["image_size"] == 8 and f.attrs["kind"] == "dataset"
    data.open_images(out, "val").close()  # the loader accepts it


def sysu_tree(root: Path) -> dict[str, list[tuple[int, int, int]]]:
    """Two categories with distinct colours per image, plus annotation/contour folders holding decoys."""
    colours = {"car": [(10 * i, 200, 0) for i in range(4)], "airplane": [(10 * i, 0, 200) for i in range(5)]}
    for cat, cols in colours.items():
        for i, c in enumerate(cols):
            solid(root / cat / "images" / f"{i:03d}.png", c)
        solid(root / cat / "annotations" / "000.png", (255, 255, 255))
        solid(root / cat / "contours" / "000.png", (0, 0, 0))
        (root / cat / "readme.txt").write_text("decoy")
    return colours


def test_sysu_takes_images_folders_only(tmp_path):
    root = tmp_path / "SYSU-Shapes"
    colours = sysu_tree(root)
    counts = ingest.ingest(spec("sysu-shapes", root, resize="stretch"), tmp_path / "s.h5")
    assert counts == {
        "train": {"found": 9, "written": 9, "skipped_corrupt": 0, "skipped_unreadable": 0, "skipped_non_image": 0}
    }
    splits, names, _ = read(tmp_path / "s.h5")
    assert names == ["airplane", "car"] and "val" not in splits
    images, labels = splits["train"]
    assert labels.tolist() == [0] * 5 + [1] * 4
    assert [tuple(im[0, 0]) for im in images] == colours["airplane"] + colours["car"]


def test_sysu_val_fraction_is_a_seeded_per_class_holdout(tmp_path):
    root = tmp_path / "SYSU-Shapes"
    colours = sysu_tree(root)
    counts = ingest.ingest(spec("sysu-shapes", root, val_fraction=0.4, seed=3), tmp_path / "s.h5")
    # round(0.4 * 5) = 2 airplanes, round(0.4 * 4) = 2 cars
    assert counts["val"]["found"] == 4 and counts["train"]["found"] == 5
    splits, _, _ = read(tmp_path / "s.h5")
    for label, cat in enumerate(["airplane", "car"]):
        held = ingest.holdout(len(colours[cat]), 0.4, 3, label)
        for split, keep in (("val", held), ("train", ~held)):
            images, labels = splits[split]
            got = [tuple(im[0, 0]) for im, lab in zip(images, labels, strict=True) if lab == label]
            assert got == [c for c, k in zip(colours[cat], keep, strict=True) if k]  # sorted order kept
    other = ingest.holdout(5, 0.4, 4, 0), ingest.holdout(5, 0.4, 3, 1)
    assert any(not np.array_equal(o, ingest.holdout(5, 0.4, 3, 0)) for o in other)


def test_folder_layout_flat_and_with_splits(tmp_path):
    flat = tmp_path / "flat"
    solid(flat / "train" / "a.png", RED)  # a class that happens to be called "train"
    solid(flat / "zebra" / "a.PNG", BLUE)
    solid(flat / "zebra" / "b.bmp", BLUE)
    counts = ingest.ingest(spec("folder", flat), tmp_path / "flat.h5")
    splits, names, _ = read(tmp_path / "flat.h5")
    assert names == ["train", "zebra"] and counts["train"]["written"] == 3 and "val" not in splits
    assert np.array_equal(splits["train"][0][0], np.full((8, 8, 3), RED, np.uint8))  # PNG: exact

    split = tmp_path / "split"
    for cls, col in (("cat", RED), ("dog", BLUE)):
        solid(split / "train" / cls / "1.png", col)
        solid(split / "train" / cls / "2.webp", col, lossless=True)
    solid(split / "val" / "dog" / "1.png", BLUE)  # val may lack a class
    counts = ingest.ingest(spec("folder", split), tmp_path / "split.h5")
    splits, names, _ = read(tmp_path / "split.h5")
    assert names == ["cat", "dog"] and counts["train"]["written"] == 4 and counts["val"]["written"] == 1
    assert splits["val"][1].tolist() == [1]
    assert np.array_equal(splits["train"][0][3], np.full((8, 8, 3), BLUE, np.uint8))

    mixed = tmp_path / "mixed"
    solid(mixed / "train" / "cat" / "1.png", RED)
    solid(mixed / "test" / "cat" / "1.png", RED)
    with pytest.raises(ValueError, match=r"(?s)mixes split folders.*test.*datasets\.pets\.path"):
        folders.check_source("folder", mixed, "datasets.pets.path")

    solid(split / "val" / "eel" / "1.png", GREEN)
    with pytest.raises(ValueError, match=r"eel"):
        folders.check_source("folder", split, "datasets.pets.path")


def truncated_jpeg(path: Path) -> Path:
    solid(path, GREY, size=(64, 64), quality=90)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def test_corrupt_image_fails_by_default_and_is_skipped_on_request(tmp_path, capsys, monkeypatch):
    root = tmp_path / "imgs"
    for i in range(3):
        solid(root / "a" / f"{i}.png", RED)
    bad = truncated_jpeg(root / "a" / "1b.jpg")
    also_bad = root / "b" / "x.png"
    also_bad.parent.mkdir()
    also_bad.write_text("a text file with an image extension")
    solid(root / "b" / "y.png", BLUE)
    folders.check_source("folder", root, "datasets.mine.path")  # planning-time check decodes nothing
    out = tmp_path / "o.h5"
    with pytest.raises(ValueError, match=r"2 unreadable") as err:
        ingest.ingest(spec("folder", root), out, config_key="datasets.mine.path")
    assert str(bad) in str(err.value) and str(also_bad) in str(err.value)
    assert "datasets.mine.on_error: skip" in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".o.h5.*"))  # nothing half-written left behind

    monkeypatch.setattr(ingest, "MAX_LISTED", 1)
    with pytest.raises(ValueError, match=r"2 unreadable .* \(stopped after more than 1; first 1 listed\)") as err:
        ingest.ingest(spec("folder", root), out)
    assert str(bad) in str(err.value) and str(also_bad) not in str(err.value)
    monkeypatch.undo()

    counts = ingest.ingest(spec("folder", root, on_error="skip"), out)
    assert counts["train"] == {
        "found": 6,
        "written": 4,
        "skipped_corrupt": 2,
        "skipped_unreadable": 0,
        "skipped_non_image": 0,
    }
    assert str(bad) in capsys.readouterr().err
    splits, _, prov = read(out)
    images, labels = splits["train"]
    assert images.shape == (4, 8, 8, 3) and labels.tolist() == [0, 0, 0, 1]  # compacted, order kept
    assert np.array_equal(images[3], np.full((8, 8, 3), BLUE, np.uint8))
    assert prov["skipped_corrupt"] == ["a/1b.jpg", "b/x.png"] and prov["class_counts"] == {"train": [3, 1]}
    # the same over 2 worker processes
    with pytest.raises(ValueError, match=r"2 unreadable"):
        ingest.ingest(spec("folder", root, workers=2), tmp_path / "p.h5")
    assert ingest.ingest(spec("folder", root, on_error="skip", workers=2), tmp_path / "p.h5") == counts
    assert np.array_equal(read(tmp_path / "p.h5")[0]["train"][0], images)


def test_missing_folders_name_config_key_and_layout(tmp_path):
    key = "datasets.imagenet100.path"
    with pytest.raises(
        FileNotFoundError, match=r"(?s)nowhere does not exist.*datasets\.imagenet100\.path.*validation/"
    ):
        folders.check_source("imagenet100", tmp_path / "nowhere", key)
    root = tmp_path / "in100"
    solid(root / "train" / "n01" / "a.JPEG", RED)
    with pytest.raises(FileNotFoundError, match=r"(?s)split folder .*in100/validation is missing.*imagenet100\.path"):
        folders.check_source("imagenet100", root, key)
    with pytest.raises(FileNotFoundError, match=r"validation is missing"):
        ingest.ingest(spec("imagenet100", root), tmp_path / "x.h5", config_key=key)
    (root / "validation").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no class folders in .*validation"):
        folders.check_source("imagenet100", root, key)

    sysu = tmp_path / "sysu"
    solid(sysu / "car" / "images" / "1.png", RED)
    solid(sysu / "boat" / "contours" / "1.png", RED)
    with pytest.raises(FileNotFoundError, match=r"(?s)boat/images.*datasets\.sysu\.path.*<category>/"):
        folders.check_source("sysu-shapes", sysu, "datasets.sysu.path")
    with pytest.raises(ValueError, match=r"known: imagenet100, sysu-shapes, folder"):
        folders.check_source("cifar", sysu, "datasets.sysu.source")


def test_spec_errors_name_the_key(tmp_path):
    root = tmp_path / "r"
    solid(root / "a" / "1.png", RED)
    with pytest.raises(ValueError, match=r"config key datasets\.r\.resize: 'fit' is not one of \['stretch', 'c"):
        ingest.ingest(spec("folder", root, resize="fit"), tmp_path / "o.h5", config_key="datasets.r.path")
    with pytest.raises(ValueError, match=r"config key datasets\.<name>\.path: None is not of type 'string'"):
        ingest.ingest(spec("folder", root) | {"path": None}, tmp_path / "o.h5")
    with pytest.raises(ValueError, match=r"config key datasets\.<name>: .*'splitz' was unexpected"):
        ingest.ingest(spec("folder", root, splitz=1), tmp_path / "o.h5")
    solid(root / "a" / "2.png", RED)
    with pytest.raises(ValueError, match=r"no readable images in split\(s\) val"):
        ingest.ingest(spec("folder", root, val_fraction=0.1), tmp_path / "o.h5")  # round(0.2) = 0 held out
    in100 = tmp_path / "in100"
    solid(in100 / "train" / "a" / "1.png", RED)
    solid(in100 / "validation" / "a" / "1.png", RED)
    with pytest.raises(ValueError, match=r"val_fraction must be 0"):
        ingest.ingest(spec("imagenet100", in100, val_fraction=0.2), tmp_path / "o.h5")


@pytest.mark.parametrize("grey", [False, True])
def test_deterministic_bytes_and_independent_of_workers(tmp_path, monkeypatch, grey):
    """Also for grey data, which ``channels: auto`` writes with one channel (through the compaction)."""
    monkeypatch.setattr("core.provenance.now_iso", lambda: "2026-01-01T00:00:00+00:00")
    root = tmp_path / "SYSU"
    sysu_tree(root)
    for i in range(20):
        colour = tuple(int(v) for v in np.random.default_rng(i).integers(0, 255, 3))
        solid(root / "car" / "images" / f"r{i:02d}.jpg", colour[0] if grey else colour, mode="L" if grey else "RGB")
    if grey:
        for path in root.glob("*/images/*.png"):
            solid(path, 7 * int(path.stem), mode="L")
    s = spec("sysu-shapes", root, val_fraction=0.25, seed=1, resize="center-crop", on_error="skip")
    (root / "car" / "images" / "r99.png").write_text("unreadable: the skip compaction runs too")
    ingest.ingest(s, tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f.attrs["channels"] == (1 if grey else 3) and f["train/images"].shape[3] == f.attrs["channels"]
    ingest.ingest(s, tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    ingest.ingest(s | {"workers": 2}, tmp_path / "c.h5")
    a, _, _ = read(tmp_path / "a.h5")
    c, _, _ = read(tmp_path / "c.h5")
    for split in ("train", "val"):
        assert np.array_equal(a[split][0], c[split][0]) and np.array_equal(a[split][1], c[split][1])


def banded(path: Path, w: int, h: int) -> Path:
    """A non-square image: GREEN outer quarters along the long side, GREY middle half."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = GREEN
    if w >= h:
        arr[:, w // 4 : 3 * w // 4] = GREY
    else:
        arr[h // 4 : 3 * h // 4, :] = GREY
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize(("w", "h"), [(40, 20), (20, 40)])
def test_stretch_keeps_everything_center_crop_keeps_the_middle(tmp_path, w, h):
    path = banded(tmp_path / "b.png", w, h)
    stretched = ingest.load_image(path, 8, "stretch", "box")
    cropped = ingest.load_image(path, 8, "center-crop", "box")
    # centre crop of a 2:1 image = its middle half = all GREY (box filter: no ringing across band edges)
    assert np.array_equal(cropped, np.full((8, 8, 3), GREY, np.uint8))
    # stretch squeezes the whole image: quarters of the long side stay GREEN
    along = stretched[4] if w > h else stretched[:, 4]
    assert np.array_equal(along[:2], np.full((2, 3), GREEN, np.uint8))
    assert np.array_equal(along[2:6], np.full((4, 3), GREY, np.uint8))
    assert np.array_equal(along[6:], np.full((2, 3), GREEN, np.uint8))
    # torchvision Resize + CenterCrop arithmetic on an odd ratio still gives a square
    odd = banded(tmp_path / "odd.png", 31, 17)
    for flt in ingest.RESAMPLE:
        assert ingest.load_image(odd, 8, "center-crop", flt).shape == (8, 8, 3)


def test_modes_convert_to_rgb(tmp_path):
    cases = {
        "grey.png": (solid(tmp_path / "grey.png", 100, mode="L"), (100, 100, 100)),
        "rgba.png": (solid(tmp_path / "rgba.png", (10, 20, 30, 0), mode="RGBA"), (255, 255, 255)),
        "opaque.png": (solid(tmp_path / "opaque.png", (10, 20, 30, 255), mode="RGBA"), (10, 20, 30)),
        "cmyk.tif": (solid(tmp_path / "cmyk.tif", (0, 0, 0, 0), mode="CMYK"), (255, 255, 255)),
        "anim.gif": (solid(tmp_path / "anim.gif", RED), RED),
    }
    pal = Image.new("RGB", (6, 6), BLUE).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "pal.png")
    cases["pal.png"] = (tmp_path / "pal.png", BLUE)
    pal.save(tmp_path / "pal-clear.png", transparency=pal.getpixel((0, 0)))
    cases["pal-clear.png"] = (tmp_path / "pal-clear.png", (255, 255, 255))
    Image.fromarray(np.full((6, 6), 40000, np.uint16)).save(tmp_path / "deep.png")
    cases["deep.png"] = (tmp_path / "deep.png", (156, 156, 156))  # round(40000 / 257)
    for name, (path, want) in cases.items():
        got = ingest.load_image(path, 4)
        assert got.shape == (4, 4, 3) and np.abs(got.astype(int) - want).max() <= 1, name


def grey_png(path: Path, value: int) -> Path:
    return solid(path, (value, value, value))


def test_empty_class_fails_or_is_dropped_with_contiguous_labels(tmp_path, capsys):
    root = tmp_path / "pets"
    solid(root / "ant" / "1.png", RED)
    solid(root / "ant" / "2.png", RED)
    (root / "bee").mkdir()
    (root / "bee" / "notes.txt").write_text("no images here")
    solid(root / "cat" / "1.png", BLUE)
    out = tmp_path / "o.h5"
    with pytest.raises(ValueError, match=r"(?s)empty class folder.*pets/bee: no image files.*datasets\.pets\.empty_c"):
        ingest.ingest(spec("folder", root), out, config_key="datasets.pets.path")
    assert not out.exists()
    assert folders.source_summary("folder", root, "datasets.pets.path")["classes"] == ["ant", "bee", "cat"]

    counts = ingest.ingest(spec("folder", root, empty_classes="drop"), out)
    assert "bee" in capsys.readouterr().err
    assert counts["train"]["written"] == 3 and counts["train"]["skipped_non_image"] == 1
    splits, names, prov = read(out)
    assert names == ["ant", "cat"] and splits["train"][1].tolist() == [0, 0, 1]
    assert prov["dropped_classes"] == ["bee"] and prov["class_counts"] == {"train": [2, 1]}
    assert np.array_equal(splits["train"][0][2], np.full((8, 8, 3), BLUE, np.uint8))

    # the hold-out of a kept class does not depend on whether an earlier class was dropped
    for i in range(4):
        solid(root / "cat" / f"{i + 2}.png", (i, 0, 200))
    ingest.ingest(spec("folder", root, empty_classes="drop", val_fraction=0.5, seed=2), out)
    splits, _, _ = read(out)
    held = ingest.holdout(5, 0.5, 2, 2)  # cat is class folder 2 of ant, bee, cat
    want = [i for i in range(5) if held[i]]
    assert splits["val"][1].tolist() == [0, *[1] * len(want)]
    assert [int(im[0, 0, 0]) for im in splits["val"][0][1:]] == [BLUE[0] if i == 0 else i - 1 for i in want]


def test_val_may_lack_a_class_but_no_class_may_lack_train_images(tmp_path):
    root = tmp_path / "split"
    solid(root / "train" / "a" / "1.png", RED)
    (root / "train" / "b").mkdir(parents=True)
    solid(root / "train" / "c" / "1.png", GREEN)
    solid(root / "val" / "c" / "1.png", GREEN)  # val lacks a (and b): allowed
    out = tmp_path / "o.h5"
    counts = ingest.ingest(spec("folder", root, empty_classes="drop"), out)
    splits, names, prov = read(out)
    assert names == ["a", "c"] and splits["val"][1].tolist() == [1] and counts["val"]["written"] == 1
    assert prov["class_counts"] == {"train": [1, 1], "val": [0, 1]}
    solid(root / "val" / "b" / "1.png", BLUE)  # b: images only in val
    for how in ("fail", "drop"):
        with pytest.raises(ValueError, match=r"class b \(.*train/b\) has image files only in split val"):
            ingest.ingest(spec("folder", root, empty_classes=how), out)
    # a hold-out that takes every file of a class is the same mistake
    flat = tmp_path / "flat"
    solid(flat / "a" / "1.png", RED)
    solid(flat / "a" / "2.png", RED)
    solid(flat / "b" / "1.png", BLUE)
    with pytest.raises(ValueError, match=r"class b .* all its files held out as val \(datasets\.<name>\.val_fr"):
        ingest.ingest(spec("folder", flat, val_fraction=0.6), out)  # round(0.6 * 1) = 1 of b's 1 file


def test_class_without_readable_images_after_skip_fails_or_is_dropped_and_relabelled(tmp_path, capsys):
    root = tmp_path / "imgs"
    solid(root / "a" / "1.png", RED)
    solid(root / "a" / "2.png", RED)
    (root / "b").mkdir()
    (root / "b" / "x.png").write_text("not a png")
    truncated_jpeg(root / "b" / "y.jpg")
    solid(root / "c" / "1.png", BLUE)
    solid(root / "c" / "2.png", GREEN)
    out = tmp_path / "o.h5"
    with pytest.raises(ValueError, match=r"(?s)imgs/b: no readable image files left.*datasets\.d\.empty_classes: d"):
        ingest.ingest(spec("folder", root, on_error="skip"), out, config_key="datasets.d.path")
    capsys.readouterr()
    counts = ingest.ingest(spec("folder", root, on_error="skip", empty_classes="drop"), out)
    assert "dropped class(es) b" in capsys.readouterr().err
    assert counts["train"] == {
        "found": 6,
        "written": 4,
        "skipped_corrupt": 2,
        "skipped_unreadable": 0,
        "skipped_non_image": 0,
    }
    splits, names, prov = read(out)
    images, labels = splits["train"]
    assert names == ["a", "c"] and labels.tolist() == [0, 0, 1, 1]  # c relabelled 2 → 1 by the compaction
    assert np.array_equal(images[2], np.full((8, 8, 3), BLUE, np.uint8))
    assert prov["dropped_classes"] == ["b"] and prov["class_counts"] == {"train": [2, 2]}

    # a class whose only readable images are in val cannot be dropped
    split = tmp_path / "split"
    solid(split / "train" / "a" / "1.png", RED)
    (split / "train" / "b").mkdir()
    (split / "train" / "b" / "x.png").write_text("not a png")
    solid(split / "val" / "b" / "1.png", BLUE)
    with pytest.raises(ValueError, match=r"class b .*train/b\) has readable images only in split val"):
        ingest.ingest(spec("folder", split, on_error="skip", empty_classes="drop"), out)


def unreadable_tree(root: Path) -> dict[str, str]:
    """Class ``a`` with one good image and four unreadable entries; class ``loop``, a folder symlink loop;
    class ``z`` fine. Returns {path: reason fragment} of the unreadable entries."""
    solid(root / "a" / "1.png", RED)
    solid(root / "z" / "1.png", BLUE)
    os.symlink("self.png", root / "a" / "self.png")  # a file symlink loop
    os.symlink("missing.jpg", root / "a" / "gone.jpg")  # broken
    os.mkfifo(root / "a" / "pipe.png")  # would block if opened
    os.symlink("notes", root / "a" / "notes")  # a loop without an image extension: never taken, ignored
    os.symlink("loop", root / "loop")  # a class folder that is a symlink loop
    return {
        str(root / "a" / "self.png"): "symbolic link loop",
        str(root / "a" / "gone.jpg"): "broken symbolic link",
        str(root / "a" / "pipe.png"): "not a regular file (FIFO)",
        str(root / "loop"): "symbolic link loop",
    }


def test_unreadable_entries_follow_on_error(tmp_path, capsys):
    root = tmp_path / "imgs"
    bad = unreadable_tree(root)
    key = "datasets.mine.path"
    # planning: no crash; the looping class folder is named (on stderr, or raised for on_error: fail)
    assert folders.source_summary("folder", root, key) == {"classes": ["a", "loop", "z"], "has_val": False}
    assert str(root / "loop") in capsys.readouterr().err
    folders.check_source("folder", root, key)
    with pytest.raises(OSError, match=r"(?s)imgs/loop: symbolic link loop.*datasets\.mine\.on_error: skip"):
        folders.check_source("folder", root, key, on_error="fail")

    out = tmp_path / "o.h5"
    with pytest.raises(ValueError, match=r"4 unreadable entr") as err:
        ingest.ingest(spec("folder", root), out, config_key=key)
    for path, why in bad.items():
        assert f"{path}: {why}" in str(err.value)
    assert "datasets.mine.on_error: skip" in str(err.value) and "notes" not in str(err.value)
    assert not out.exists()
    # skipped, the looping class is a class without images: the empty-class rule applies
    with pytest.raises(ValueError, match=r"(?s)imgs/loop: unreadable \(symbolic link loop\).*empty_classes: drop"):
        ingest.ingest(spec("folder", root, on_error="skip"), out, config_key=key)
    capsys.readouterr()
    counts = ingest.ingest(spec("folder", root, on_error="skip", empty_classes="drop"), out)
    assert counts["train"] == {
        "found": 2,
        "written": 2,
        "skipped_corrupt": 0,
        "skipped_unreadable": 4,
        "skipped_non_image": 0,
    }
    logged = capsys.readouterr().err
    assert all(path in logged for path in bad)
    splits, names, prov = read(out)
    assert names == ["a", "z"] and splits["train"][1].tolist() == [0, 1] and prov["dropped_classes"] == ["loop"]
    assert prov["counts"]["train"]["skipped_unreadable"] == 4
    assert "a/pipe.png: not a regular file (FIFO)" in prov["skipped_unreadable"]
    with h5py.File(out, "r") as f:
        assert f["train"].attrs["skipped_unreadable"] == 4

    # sysu-shapes: a category whose images/ loops is a class folder that cannot be read
    sysu = tmp_path / "sysu"
    solid(sysu / "car" / "images" / "1.png", RED)
    (sysu / "boat").mkdir()
    os.symlink("images", sysu / "boat" / "images")
    assert folders.source_summary("sysu-shapes", sysu, "datasets.s.path")["classes"] == ["boat", "car"]
    with pytest.raises(ValueError, match=r"(?s)1 unreadable entr.*boat/images: cannot be read \(symbolic link loop"):
        ingest.ingest(spec("sysu-shapes", sysu), out)


class _Denied:
    """A directory entry whose ``stat`` fails with permission denied (as for an entry of a folder without
    search permission; root, which runs these tests in some places, is never denied, so this is simulated)."""

    def __init__(self, entry: os.DirEntry) -> None:
        self.name, self.path = entry.name, entry.path

    def _deny(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", self.path)

    is_file = is_dir = stat = _deny

    def is_symlink(self) -> bool:
        return False


class _Listing:
    def __init__(self, entries: list) -> None:
        self.entries = entries

    def __enter__(self):
        return iter(self.entries)

    def __exit__(self, *exc) -> None:
        return None


def test_denied_stat_and_unlistable_class_folder_follow_on_error(tmp_path, monkeypatch, capsys):
    root = tmp_path / "imgs"
    solid(root / "a" / "1.png", RED)
    solid(root / "a" / "2.png", RED)
    solid(root / "b" / "1.png", BLUE)
    solid(root / "c" / "1.png", GREEN)
    real_scandir = os.scandir

    def scandir(path):
        path = Path(path)
        if path == root / "c":
            raise PermissionError(13, "Permission denied", str(path))
        with real_scandir(path) as it:
            entries = list(it)
        return _Listing([_Denied(e) if e.name in ("2.png", "b") else e for e in entries])

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ValueError, match=r"3 unreadable entr") as err:
        ingest.ingest(spec("folder", root), tmp_path / "o.h5")
    text = str(err.value)
    assert f"{root / 'a' / '2.png'}: PermissionError: Permission denied" in text
    assert f"{root / 'b'}: PermissionError: Permission denied" in text  # the class folder's own entry
    assert f"{root / 'c'}: class folder cannot be listed (PermissionError: Permission denied)" in text
    counts = ingest.ingest(spec("folder", root, on_error="skip", empty_classes="drop"), tmp_path / "o.h5")
    monkeypatch.undo()
    assert counts["train"]["skipped_unreadable"] == 3 and counts["train"]["written"] == 1
    _, names, prov = read(tmp_path / "o.h5")
    assert names == ["a"] and prov["dropped_classes"] == ["b", "c"]

    def unlistable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", unlistable)  # the dataset folder itself: an error whatever on_error says
    with pytest.raises(OSError, match=r"(?s)folder .*imgs cannot be listed \(PermissionError.*datasets\.m\.path"):
        folders.check_source("folder", root, "datasets.m.path")
    with pytest.raises(OSError, match=r"imgs cannot be listed"):
        ingest.ingest(spec("folder", root, on_error="skip"), tmp_path / "o.h5")


def test_dataset_path_that_is_a_file_is_not_a_folder(tmp_path):
    path = tmp_path / "data.zip"
    path.write_bytes(b"PK")
    with pytest.raises(NotADirectoryError, match=r"(?s)dataset folder .*data\.zip is not a folder.*datasets\.z\.path"):
        folders.check_source("folder", path, "datasets.z.path")
    with pytest.raises(NotADirectoryError, match=r"data\.zip is not a folder"):
        ingest.ingest(spec("folder", path), tmp_path / "o.h5", config_key="datasets.z.path")
    root = tmp_path / "in100"
    solid(root / "train" / "n01" / "a.JPEG", RED)
    (root / "validation").write_text("")
    with pytest.raises(NotADirectoryError, match=r"split folder .*in100/validation is not a folder.*in100\.path"):
        folders.check_source("imagenet100", root, "datasets.in100.path")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(OSError, match=r"dangling cannot be read \(broken symbolic link\).*datasets\.d\.path"):
        folders.check_source("folder", tmp_path / "dangling", "datasets.d.path")


def test_channels_follow_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr("core.provenance.now_iso", lambda: "2026-01-01T00:00:00+00:00")
    root = tmp_path / "grey"
    for i in range(3):
        solid(root / "a" / f"{i}.png", 40 * i + 10, mode="L")
    grey_png(root / "b" / "1.png", 200)  # an RGB file whose pixels are grey
    (root / "b" / "2.png").write_text("broken")
    s = spec("folder", root, on_error="skip")
    counts = ingest.ingest(s, tmp_path / "auto.h5")
    assert counts["train"]["written"] == 4
    with h5py.File(tmp_path / "auto.h5", "r") as f:
        images = f["train/images"][:]
        assert images.shape == (4, 8, 8, 1) and f.attrs["channels"] == 1
        assert f["train/images"].chunks[3] == 1
        prov = json.loads(f.attrs["provenance"])
    assert [int(im[0, 0, 0]) for im in images] == [10, 50, 90, 200]
    assert prov["method"]["channels"]["rule"] == "auto" and prov["method"]["channels"]["result"] == 1
    data.open_images(tmp_path / "auto.h5", "train").close()  # the loader accepts one channel
    ingest.ingest(s | {"channels": 1}, tmp_path / "one.h5")
    auto, _, _ = read(tmp_path / "auto.h5")
    one, _, prov_one = read(tmp_path / "one.h5")
    assert np.array_equal(auto["train"][0], one["train"][0]) and prov_one["method"]["channels"]["result"] == 1
    ingest.ingest(s | {"channels": 3}, tmp_path / "three.h5")
    three, _, _ = read(tmp_path / "three.h5")
    assert np.array_equal(three["train"][0], np.repeat(auto["train"][0], 3, axis=3))

    solid(root / "b" / "3.png", RED)  # one colour image makes the whole dataset RGB
    ingest.ingest(s, tmp_path / "auto.h5")
    auto, _, prov = read(tmp_path / "auto.h5")
    assert auto["train"][0].shape == (5, 8, 8, 3) and prov["method"]["channels"]["result"] == 3
    ingest.ingest(s | {"channels": 1}, tmp_path / "one.h5")
    one, _, _ = read(tmp_path / "one.h5")
    red_luma = round((RED[0] * 299 + RED[1] * 587 + RED[2] * 114) / 1000)
    assert one["train"][0].shape == (5, 8, 8, 1) and abs(int(one["train"][0][4, 0, 0, 0]) - red_luma) <= 1
    for bad in ("rgb", 2, True):
        with pytest.raises(
            ValueError, match=r"config key datasets\.<name>\.channels: .* is not one of \[.auto., 1, 3\]"
        ):
            ingest.ingest(s | {"channels": bad}, tmp_path / "x.h5")
    with pytest.raises(ValueError, match=r"config key datasets\.<name>\.empty_classes: 'keep' is not one of"):
        ingest.ingest(s | {"empty_classes": "keep"}, tmp_path / "x.h5")


def test_source_summary(tmp_path):
    in100 = tmp_path / "in100"
    solid(in100 / "train" / "n02" / "a.JPEG", RED)
    solid(in100 / "train" / "n01" / "a.JPEG", RED)
    solid(in100 / "validation" / "n01" / "a.JPEG", RED)
    assert folders.source_summary("imagenet100", in100, "k") == {"classes": ["n01", "n02"], "has_val": True}
    flat = tmp_path / "flat"
    solid(flat / "only" / "a.png", RED)
    assert folders.source_summary("folder", flat, "k") == {"classes": ["only"], "has_val": False}
    sysu = tmp_path / "sysu"
    sysu_tree(sysu)
    assert folders.source_summary("sysu-shapes", sysu, "k") == {"classes": ["airplane", "car"], "has_val": False}
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*datasets\.x\.path"):
        folders.source_summary("folder", tmp_path / "nowhere", "datasets.x.path")


def test_source_fingerprint_notices_added_removed_and_renamed_files(tmp_path):
    root = tmp_path / "split"
    solid(root / "train" / "a" / "1.png", RED)
    solid(root / "train" / "b" / "1.png", BLUE)
    solid(root / "val" / "a" / "1.png", RED)

    def settle() -> str:
        """Give every folder an old mtime (timestamps are coarser than the test's steps), then fingerprint."""
        for folder in (
            root,
            root / "train",
            root / "train" / "a",
            root / "train" / "b",
            root / "val",
            root / "val" / "a",
        ):
            if folder.exists():
                os.utime(folder, ns=(10**18, 10**18))
        return folders.source_fingerprint("folder", root)

    base = settle()
    assert len(base) == 64 and settle() == base
    changed = []
    solid(root / "train" / "a" / "2.png", RED)  # added
    changed.append(folders.source_fingerprint("folder", root))
    settle()
    (root / "train" / "a" / "2.png").rename(root / "train" / "a" / "3.png")  # renamed
    changed.append(folders.source_fingerprint("folder", root))
    settle()
    (root / "val" / "a" / "1.png").unlink()  # removed
    changed.append(folders.source_fingerprint("folder", root))
    assert all(c != base for c in changed)
    fixed = settle()
    solid(root / "train" / "b" / "1.png", GREEN)  # edited in place: the documented limit
    assert folders.source_fingerprint("folder", root) == fixed
    (root / "train" / "b").rename(root / "train" / "c")  # a renamed class folder
    assert settle() != fixed


def test_check_requirements_names_key_split_and_counts():
    reqs = [
        {"key": "studies.x.evaluation.kid_subset_size", "split": "val", "min": 1000, "why": "kid subsets"},
        {"key": "studies.x.evaluation.reference_num", "split": "train", "min": 100},
    ]
    folders.check_requirements({"train": 100, "val": 1000}, reqs, "mine")
    with pytest.raises(ValueError) as err:
        folders.check_requirements({"train": 100, "val": 300}, reqs, "mine")
    assert str(err.value) == (
        "config key studies.x.evaluation.kid_subset_size: needs 1000 images of split 'val' of dataset 'mine' "
        "(kid subsets), but it has 300"
    )
    with pytest.raises(ValueError) as err:
        folders.check_requirements({"train": 99}, reqs, "mine")
    lines = str(err.value).splitlines()
    assert lines == [
        "config key studies.x.evaluation.kid_subset_size: needs 1000 images of split 'val' of dataset 'mine' "
        "(kid subsets), but it has no split 'val' (splits: 'train')",
        "config key studies.x.evaluation.reference_num: needs 100 images of split 'train' of dataset 'mine', "
        "but it has 99",
    ]
    folders.check_requirements({"train": {"written": 100}, "val": {"written": 1000}}, reqs, "mine")  # ingest's counts
    with pytest.raises(ValueError, match=r"lacks min"):
        folders.check_requirements({"train": 1}, [{"key": "k", "split": "train"}], "mine")

"""Ingestion of image folders (core.ingest): the three layouts round-trip, bad files are reported or skipped and
counted, planning-time checks name the config key and layout, output is deterministic, resizing is as stated."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from core import data, ingest

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
    return {"source": source, "path": str(root), "image_size": 8, "workers": 1} | kw


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
        "train": {"found": 5, "written": 5, "skipped_corrupt": 0, "skipped_non_image": 1},
        "val": {"found": 2, "written": 2, "skipped_corrupt": 0, "skipped_non_image": 0},
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
    assert counts == {"train": {"found": 9, "written": 9, "skipped_corrupt": 0, "skipped_non_image": 0}}
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
        ingest.check_source("folder", mixed, "datasets.pets.path")

    solid(split / "val" / "eel" / "1.png", GREEN)
    with pytest.raises(ValueError, match=r"eel"):
        ingest.check_source("folder", split, "datasets.pets.path")


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
    ingest.check_source("folder", root, "datasets.mine.path")  # planning-time check decodes nothing
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
    assert counts["train"] == {"found": 6, "written": 4, "skipped_corrupt": 2, "skipped_non_image": 0}
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
        ingest.check_source("imagenet100", tmp_path / "nowhere", key)
    root = tmp_path / "in100"
    solid(root / "train" / "n01" / "a.JPEG", RED)
    with pytest.raises(FileNotFoundError, match=r"(?s)split folder .*in100/validation is missing.*imagenet100\.path"):
        ingest.check_source("imagenet100", root, key)
    with pytest.raises(FileNotFoundError, match=r"validation is missing"):
        ingest.ingest(spec("imagenet100", root), tmp_path / "x.h5", config_key=key)
    (root / "validation").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no class folders in .*validation"):
        ingest.check_source("imagenet100", root, key)

    sysu = tmp_path / "sysu"
    solid(sysu / "car" / "images" / "1.png", RED)
    solid(sysu / "boat" / "contours" / "1.png", RED)
    with pytest.raises(FileNotFoundError, match=r"(?s)boat/images.*datasets\.sysu\.path.*<category>/"):
        ingest.check_source("sysu-shapes", sysu, "datasets.sysu.path")
    with pytest.raises(ValueError, match=r"known: imagenet100, sysu-shapes, folder"):
        ingest.check_source("cifar", sysu, "datasets.sysu.source")


def test_spec_errors_name_the_key(tmp_path):
    root = tmp_path / "r"
    solid(root / "a" / "1.png", RED)
    with pytest.raises(ValueError, match=r"datasets\.r\.resize must be one of stretch, center-crop"):
        ingest.ingest(spec("folder", root, resize="fit"), tmp_path / "o.h5", config_key="datasets.r.path")
    with pytest.raises(ValueError, match=r"datasets\.<name>\.path must be a folder path, got None"):
        ingest.ingest(spec("folder", root) | {"path": None}, tmp_path / "o.h5")
    with pytest.raises(ValueError, match=r"unknown key\(s\) splitz"):
        ingest.ingest(spec("folder", root, splitz=1), tmp_path / "o.h5")
    solid(root / "a" / "2.png", RED)
    with pytest.raises(ValueError, match=r"no readable images in split\(s\) val"):
        ingest.ingest(spec("folder", root, val_fraction=0.1), tmp_path / "o.h5")  # round(0.2) = 0 held out
    in100 = tmp_path / "in100"
    solid(in100 / "train" / "a" / "1.png", RED)
    solid(in100 / "validation" / "a" / "1.png", RED)
    with pytest.raises(ValueError, match=r"val_fraction must be 0"):
        ingest.ingest(spec("imagenet100", in100, val_fraction=0.2), tmp_path / "o.h5")


def test_deterministic_bytes_and_independent_of_workers(tmp_path, monkeypatch):
    monkeypatch.setattr("core.provenance.now_iso", lambda: "2026-01-01T00:00:00+00:00")
    root = tmp_path / "SYSU"
    sysu_tree(root)
    for i in range(20):
        solid(
            root / "car" / "images" / f"r{i:02d}.jpg",
            tuple(int(v) for v in np.random.default_rng(i).integers(0, 255, 3)),
        )
    s = spec("sysu-shapes", root, val_fraction=0.25, seed=1, resize="center-crop")
    ingest.ingest(s, tmp_path / "a.h5")
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

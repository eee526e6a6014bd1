"""The rehearsal's stand-ins: synthetic trees in the real datasets' layouts (through the real ingestion path) and the
random-weights FID Inception, labelled so that its numbers never pass for FID."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from core import config, folders, metrics, standin
from core.data import read_split
from core.features import load_extractor, load_reference
from core.ingest import load_image
from core.reporting.notes import provenance_note
from core.stages import make_dataset, standin_data
from core.stages.evaluate import run as evaluate
from core.stages.reference_stats import run as reference_stats
from tests.conftest import ROOT
from tests.test_evaluate import opts, write_samples

STANDIN_SPEC = {"kind": "inception-standin", "preprocessing": "pytorch-fid", "seed": 0}
# the seed-0 stand-in's weights identity: pinned so that a change of the init (or of torch's normal_ stream) shows
# up here, not as every cached reference statistics file being refused by evaluate
SEED0_SHA256 = "3f0ae07020af8086"


def ingest_tree(layout: str, root: Path, size: int, out: Path, **kw: object) -> Path:
    """The tree through make_dataset (core.ingest, then sealed), with the entry completed as the plan does."""
    entry = config.fill(
        {"source": layout, "path": str(root), "image_size": size, "workers": 1, **kw}, config.defs_ref("dataset_folder")
    )
    make_dataset.run({"name": "x", **entry}, str(out), [])
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_imagenet100_tree_has_the_real_layout_and_ingests_at_128(tmp_path):
    root = tmp_path / "in100"
    s = standin.write_tree("imagenet100", root, {"train_per_class": 2, "val_per_class": 1})
    assert s["classes"] == 100 and s["splits"] == {"train": 200, "val": 100} and not s["reused"]
    summary = folders.source_summary("imagenet100", root, "datasets.x.path", "fail")
    wnids = standin.wordnet_ids()
    assert summary == {"classes": wnids, "has_val": True}
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    assert (root / standin.MARKER).read_text() == standin.MARKER_TEXT

    files = sorted((root / "train").glob("*/*")) + sorted((root / "validation").glob("*/*"))
    assert len(files) == 300 and all(p.suffix == ".JPEG" for p in files)
    assert all(len(list((root / "train" / w).iterdir())) == 2 for w in wnids)
    assert [p.name for p in (root / "validation" / wnids[1]).iterdir()] == ["ILSVRC2012_val_00000002.JPEG"]
    modes: dict[str, int] = {}
    sizes = set()
    for p in files:
        with Image.open(p) as im:
            assert im.format == "JPEG"
            modes[im.mode] = modes.get(im.mode, 0) + 1
            sizes.add(im.size)
    assert modes == {k: v for k, v in s["modes"].items() if v} and modes["L"] >= 10 and modes["CMYK"] >= 1
    assert sizes <= set(standin.IMAGENET_SIZES) and len(sizes) >= 4  # photo-like sizes, both orientations

    out = ingest_tree("imagenet100", root, 128, tmp_path / "in100.h5")
    with h5py.File(out) as f:
        assert f["train/images"].shape == (200, 128, 128, 3) and f["val/images"].shape == (100, 128, 128, 3)
        assert np.bincount(f["train/labels"][:], minlength=100).tolist() == [2] * 100
        assert np.bincount(f["val/labels"][:], minlength=100).tolist() == [1] * 100
        assert json.loads(f.attrs["class_names"]) == wnids
        # a greyscale file (class 0's first train image: 7·0 + 0 ≡ 0 mod 20) went through to_rgb as R = G = B
        with Image.open(root / "train" / wnids[0] / f"{wnids[0]}_1.JPEG") as im:
            assert im.mode == "L"
        grey = f["train/images"][0].astype(int)
        assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
        assert f["train/images"][1].std() > 5  # drawings, not flat images


def test_sysu_tree_ingests_at_64_ignoring_annotations_contours_and_root_files(tmp_path):
    root = tmp_path / "sysu"
    s = standin.write_tree("sysu-shapes", root, {"per_class": 6})
    assert s["classes"] == 5 and s["splits"] == {"train": 30}
    # STANDIN.txt and standin.json at the root are no categories; each category has the real siblings
    summary = folders.source_summary("sysu-shapes", root, "datasets.x.path", "fail")
    assert summary == {"classes": list(standin.SYSU_CATEGORIES), "has_val": False}
    for cat in standin.SYSU_CATEGORIES:
        assert len(list((root / cat / "images").glob("*.jpg"))) == 6
        assert any((root / cat / "annotations").iterdir()) and any((root / cat / "contours").glob("*.png"))

    out = ingest_tree("sysu-shapes", root, 64, tmp_path / "sysu.h5", val_fraction=0)
    with h5py.File(out) as f:
        assert list(f) == ["train"] and f["train/images"].shape == (30, 64, 64, 3)
        assert np.bincount(f["train/labels"][:]).tolist() == [6] * 5
        # the contour PNGs are image files, but outside images/: not found, not counted as skipped
        assert f["train"].attrs["found"] == 30 and f["train"].attrs["skipped_non_image"] == 0


@pytest.mark.parametrize(
    ("layout", "spec"), [("sysu-shapes", {"per_class": 3}), ("imagenet100", {"train_per_class": 1, "val_per_class": 1})]
)
def test_same_spec_gives_the_same_bytes(tmp_path, layout, spec):
    a, b = tmp_path / "a", tmp_path / "b"
    standin.write_tree(layout, a, spec)
    standin.write_tree(layout, b, dict(spec))
    assert tree_bytes(a) == tree_bytes(b)


def test_same_spec_is_kept_another_replaced(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    standin.write_tree("sysu-shapes", a, {"per_class": 3})
    standin.write_tree("sysu-shapes", b, {"per_class": 3, "seed": 1})
    marker = a / standin.MARKER
    os.utime(marker, ns=(1, 1))
    assert standin.write_tree("sysu-shapes", a, {"per_class": 3, "seed": 0})["reused"]
    assert marker.stat().st_mtime_ns == 1  # left alone, not rewritten

    s = standin.write_tree("sysu-shapes", a, {"per_class": 3, "seed": 1})
    assert not s["reused"] and json.loads((a / standin.SPEC_FILE).read_text())["spec"] == {"per_class": 3, "seed": 1}
    assert tree_bytes(a) == tree_bytes(b)  # the replacement is exactly the tree of the new spec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no partial or old tree left behind


def test_a_concurrent_writer_of_the_same_tree_wins_untouched(tmp_path, monkeypatch):
    root = tmp_path / "t"
    write_sysu = standin._write_sysu

    def racing(partial: Path, spec: dict) -> dict:
        monkeypatch.setattr(standin, "_write_sysu", write_sysu)
        with monkeypatch.context() as m:  # the other writer (another process: its own partial) finishes first
            m.setattr(os, "getpid", lambda: 4_000_000)
            standin.write_tree("sysu-shapes", root, spec)
        os.utime(root / standin.MARKER, ns=(1, 1))
        return write_sysu(partial, spec)

    monkeypatch.setattr(standin, "_write_sysu", racing)
    assert not standin.write_tree("sysu-shapes", root, {"per_class": 2})["reused"]
    assert (root / standin.MARKER).stat().st_mtime_ns == 1  # the installed tree was kept, not swapped under a reader
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_interrupted_tree_is_replaced(tmp_path):
    root = tmp_path / "t"
    standin.write_tree("sysu-shapes", root, {"per_class": 2})
    (root / standin.SPEC_FILE).unlink()  # as if killed before the record was written
    assert not standin.write_tree("sysu-shapes", root, {"per_class": 2})["reused"]


def test_a_folder_without_the_marker_is_never_touched(tmp_path):
    real = tmp_path / "imagenet100"
    (real / "train" / "n01440764").mkdir(parents=True)
    photo = real / "train" / "n01440764" / "n01440764_1.JPEG"
    photo.write_bytes(b"a user's photo")
    with pytest.raises(FileExistsError, match=f"{real}.*no STANDIN.txt"):
        standin.write_tree("imagenet100", real, {"train_per_class": 1, "val_per_class": 1})
    assert photo.read_bytes() == b"a user's photo" and sorted(p.name for p in tmp_path.iterdir()) == ["imagenet100"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        standin.write_tree("sysu-shapes", tmp_path / "file", {"per_class": 1})


@pytest.mark.parametrize(
    ("layout", "spec", "match"),
    [
        ("imagenet", {"per_class": 1}, "unknown stand-in layout 'imagenet'"),
        ("sysu-shapes", {"per_class": 1, "classes": 3}, "unknown key.*classes"),
        ("imagenet100", {"train_per_class": 1}, "missing key.*val_per_class"),
        ("sysu-shapes", {"per_class": 0}, "per_class must be an integer >= 1"),
        ("sysu-shapes", {"per_class": 2, "seed": "0"}, "seed must be an integer >= 0"),
    ],
)
def test_spec_errors_name_the_key(tmp_path, layout, spec, match):
    with pytest.raises(ValueError, match=match):
        standin.write_tree(layout, tmp_path / "t", spec)
    assert not (tmp_path / "t").exists()


def test_stage_writes_and_reports(tmp_path, capsys):
    out = tmp_path / "s"
    standin_data.main(["--layout", "sysu-shapes", "--spec", '{"per_class": 2}', "--out", str(out)])
    assert "5 classes, 10 train images; written in" in capsys.readouterr().out
    standin_data.main(["--layout", "sysu-shapes", "--spec", '{"per_class": 2}', "--out", str(out)])
    assert "kept (same spec)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        standin_data.main(["--layout", "folder", "--spec", "{}", "--out", str(out)])
    assert "invalid choice: 'folder'" in capsys.readouterr().err


def test_tree_writing_does_not_import_torch():
    code = "import sys, core.standin, core.stages.standin_data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------ the stand-in Inception


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Seed-0 extractor and the features of 8 images at 128² (categories 0–1 of a stand-in SYSU tree) and of 4
    others (category 2): 12 forward passes at 299², the bulk of this module's time."""
    root = tmp_path_factory.mktemp("standin") / "sysu"
    standin.write_tree("sysu-shapes", root, {"per_class": 4})
    paths = [p for cat in standin.SYSU_CATEGORIES[:3] for p in sorted((root / cat / "images").iterdir())]
    images = np.stack([load_image(p, 128) for p in paths])
    ex = load_extractor(STANDIN_SPEC)
    feats, logits = ex.extract(images, batch_size=8)
    return ex, images, feats, logits


def test_standin_extractor_is_labelled_never_as_fid(extracted):
    ex, _, _, _ = extracted
    assert not ex.is_inception
    assert ex.label == {
        "extractor": "inception-v3-random-standin",
        "display": "standin",
        "weights": "none: random (seed 0), rehearsal stand-in",
        "weights_sha256": ex.label["weights_sha256"],
        "preprocessing": "pytorch-fid",
        "feature_dim": 2048,
        "standin": True,
    }
    assert ex.label["weights_sha256"].startswith(SEED0_SHA256) and len(ex.label["weights_sha256"]) == 64
    # the report's note says what these numbers are (the Inception branch would call them FID)
    m = {"extractor": ex.label, "label": {"is": "IS_standin (2 splits)"}, "n_generated": 8, "n_real": 8}
    note = provenance_note({**m, "reference": {"split": "val"}})
    assert "random weights, a rehearsal stand-in" in note and "These are not FID/IS" in note
    assert "FID on the" not in note


def test_standin_features_are_deterministic_per_seed(extracted):
    ex, images, feats, _ = extracted
    again = load_extractor(dict(STANDIN_SPEC))
    other = load_extractor({**STANDIN_SPEC, "seed": 1})
    assert again.label == ex.label and other.label["weights_sha256"] != ex.label["weights_sha256"]
    assert other.label["weights"] == "none: random (seed 1), rehearsal stand-in"
    one = ex.extract(images[:1])[0]
    np.testing.assert_array_equal(again.extract(images[:1])[0], one)
    assert np.abs(other.extract(images[:1])[0] - one).max() > 1e-3
    np.testing.assert_allclose(one[0], feats[0], rtol=1e-4, atol=1e-6)  # batch size does not change features
    with pytest.raises(ValueError, match="seed must be an integer"):
        load_extractor({**STANDIN_SPEC, "seed": -1})
    with pytest.raises(ValueError, match=r"metrics\.preprocessing"):
        load_extractor({**STANDIN_SPEC, "preprocessing": "torchvision"})


def fd_pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """FD(a, b), FD(a, a) and tr Σ_a (core.metrics)."""
    mu_a, s_a = metrics.feature_statistics(a)
    mu_b, s_b = metrics.feature_statistics(b)
    return metrics.frechet_distance(mu_a, s_a, mu_b, s_b), metrics.frechet_distance(mu_a, s_a, mu_a, s_a), np.trace(s_a)


def test_standin_features_spread_and_give_a_usable_frechet_distance(extracted):
    _, _, feats, logits = extracted
    assert feats.shape == (12, 2048) and logits.shape == (12, 1008)
    assert np.isfinite(feats).all() and np.isfinite(logits).all()
    # PyTorch's default init gives pool features ~3e-8 with a spread across images of ~3e-10 (measured); He init
    # gives mean ~0.08 and spread ~0.03. Demand a spread of 1e-2 and 10% of the mean: O(1) features that differ.
    a, b = feats[:8], feats[8:]
    spread = a.std(axis=0).mean()
    assert spread > 1e-2 and spread > 0.1 * np.abs(a).mean()
    assert logits.std() > 1e-2
    # FD on the first 256 features (a 2048-d FD costs ~9 s of eigendecompositions on one core: the slow test below)
    fd_ab, fd_aa, trace = fd_pair(a[:, :256], b[:, :256])
    assert np.isfinite(fd_ab) and fd_ab > 0.05 * trace  # the sets' difference is a sizeable part of it
    assert fd_aa < 1e-9 * fd_ab


@pytest.mark.slow  # four 2048² eigendecompositions: ~20 s on one core
def test_standin_frechet_distance_at_2048_dimensions(extracted):
    _, _, feats, _ = extracted
    fd_ab, fd_aa, trace = fd_pair(feats[:8], feats[8:])
    assert np.isfinite(fd_ab) and fd_ab > 0.05 * trace and fd_aa < 1e-9 * fd_ab


@pytest.mark.slow  # 16 images through the stand-in at 299² and a 2048-d Fréchet distance: ~20 s on one core
def test_reference_and_evaluation_with_the_standin_are_labelled_standin(tiny_dataset, tmp_path):
    ref = tmp_path / "ref.npz"
    reference_stats(str(tiny_dataset), "val", 8, STANDIN_SPEC, str(ref), batch_size=8)
    _, meta = load_reference(str(ref))
    assert meta["extractor"]["standin"] and meta["extractor"]["weights_sha256"].startswith(SEED0_SHA256)
    images, _ = read_split(tiny_dataset, "train", 8)
    write_samples(tmp_path / "s.h5", images)
    out = tmp_path / "m.json"
    options = opts(is_splits=2, kid_subsets=2, kid_subset_size=4, bootstrap=0)
    evaluate(str(tmp_path / "s.h5"), str(ref), STANDIN_SPEC, str(out), options)
    m = json.loads(out.read_text())
    assert m["label"] == {"fid": "FD_standin@8", "is": "IS_standin (2 splits)", "kid": "KID_standin (2×4)"}
    assert m["extractor"]["extractor"] == "inception-v3-random-standin" and np.isfinite(m["fid"]) and m["fid"] > 0

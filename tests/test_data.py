import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from core import data, shapes
from core.stages.make_dataset import make_shapes


def test_shapes_are_deterministic_and_order_free():
    a, la = shapes.generate("train", 0, 10, 16, seed=7)
    b, lb = shapes.generate("train", 5, 5, 16, seed=7)
    assert np.array_equal(a[5:], b) and np.array_equal(la[5:], lb)
    c, _ = shapes.generate("train", 0, 10, 16, seed=8)
    assert not np.array_equal(a, c)
    v, _ = shapes.generate("val", 0, 10, 16, seed=7)
    assert not np.array_equal(a, v)  # splits do not share images
    assert a.dtype == np.uint8 and a.shape == (10, 16, 16, 3)
    assert sorted(set(la.tolist())) == [0, 1, 2, 3, 4]


def test_dataset_file_layout(tiny_dataset):
    with h5py.File(tiny_dataset, "r") as f:
        assert f.attrs["layout"] == data.LAYOUT and f.attrs["kind"] == "dataset"
        assert json.loads(f.attrs["class_names"]) == shapes.CLASS_NAMES
        prov = json.loads(f.attrs["provenance"])
        assert prov["spec"]["seed"] == 0 and "code_version" in prov and prov["counts"] == {"train": 64, "val": 32}
        images = f["train/images"]
        assert images.dtype == np.uint8 and images.shape == (64, 8, 8, 3)
        assert images.chunks[1:] == (8, 8, 3)
        assert f["val/labels"].dtype == np.int64 and f["val/labels"].shape == (32,)
    imgs, labels = data.read_split(tiny_dataset, "val")
    ref, ref_labels = shapes.generate("val", 0, 32, 8, seed=0)
    assert np.array_equal(imgs, ref) and np.array_equal(labels, ref_labels)


def test_chunks_are_about_one_mebibyte():
    assert data.chunk_rows(128) == 21
    assert data.chunk_rows(32) == 341


def test_missing_or_malformed_file_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.h5.*train/images"):
        data.open_images(tmp_path / "nowhere.h5", "train")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("train/images", data=np.zeros((2, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"bad\.h5.*uint8"):
        data.open_images(bad, "train")
    txt = tmp_path / "text.h5"
    txt.write_text("not hdf5")
    with pytest.raises(OSError, match=r"text\.h5"):
        data.open_images(txt, "train")


def test_one_or_three_channels(tmp_path):
    path = tmp_path / "grey.h5"
    with h5py.File(path, "w") as f:
        images, labels = data.create_split(f, "train", 5, 4, channels=1)
        images[:] = np.arange(5, dtype=np.uint8)[:, None, None, None]
        labels[:] = 0
        data.write_root_attrs(f, "dataset", 4, ["a"], {})
        assert images.shape == (5, 4, 4, 1) and images.chunks[3] == 1
    imgs, _ = data.read_split(path, "train")
    assert imgs.shape == (5, 4, 4, 1) and data.to_model_range(imgs).shape == (5, 1, 4, 4)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f.create_dataset("train/images", data=np.zeros((2, 4, 4, 2), dtype=np.uint8))
        f.create_dataset("train/labels", data=np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match=r"two\.h5 lacks a valid split 'train'.*C = 3 \(RGB\) or 1 \(grey\)"):
        data.open_images(tmp_path / "two.h5", "train")
    with h5py.File(tmp_path / "x.h5", "w") as f, pytest.raises(ValueError, match="channels must be 1 or 3"):
        data.create_split(f, "train", 1, 4, channels=2)


def test_uint8_round_trip():
    x = np.random.default_rng(0).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    assert np.array_equal(data.to_uint8(data.to_model_range(x)), x)


@pytest.mark.parametrize("in_memory", [True, False])
def test_batches_cover_each_epoch_and_resume(tiny_dataset, in_memory):
    limit = (1 << 40) if in_memory else 0
    loader = data.ImageBatches(tiny_dataset, "train", 16, torch.Generator().manual_seed(0), limit, buffer_chunks=1)
    assert loader.in_memory == in_memory
    _, all_labels = data.read_split(tiny_dataset, "train")
    all_images, _ = data.read_split(tiny_dataset, "train")
    seen = []
    for _ in range(4):  # one epoch of 64 images
        imgs, labs = loader.next()
        for im, lab in zip(imgs, labs, strict=True):
            idx = int(np.flatnonzero((all_images == im).all(axis=(1, 2, 3)))[0])
            assert all_labels[idx] == lab
            seen.append(idx)
    assert sorted(seen) == list(range(64))
    state, gen_state = loader.state_dict(), loader.generator.get_state()
    expected = [loader.next()[1] for _ in range(6)]
    loader.load_state_dict(state)
    loader.generator.set_state(gen_state)
    again = [loader.next()[1] for _ in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(expected, again, strict=True))
    loader.close()


@pytest.fixture(scope="module")
def chunked_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """53 distinct 4×4 images in chunks of 5 rows (the last chunk short), so that streaming has many chunks."""
    path = tmp_path_factory.mktemp("chunked") / "chunked.h5"
    images = np.random.default_rng(1).integers(0, 256, (53, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(53, dtype=np.int64)
    with h5py.File(path, "w") as f:
        f.create_dataset("train/images", data=images, chunks=(5, 4, 4, 3))
        f.create_dataset("train/labels", data=labels)
        data.write_root_attrs(f, "dataset", 4, [], {})
    return path, images, labels


@pytest.mark.parametrize("batch", [4, 7])
def test_streamed_batches_are_the_rows_of_the_visiting_order(chunked_file, batch):
    """The buffered read (whole chunks per shuffle buffer) returns exactly the rows the order names, also for
    batches that straddle two buffers (buffers of 2 chunks = 10 rows) and for the short last chunk."""
    path, images, labels = chunked_file
    loader = data.ImageBatches(path, "train", batch, torch.Generator().manual_seed(3), 0, buffer_chunks=2)
    assert not loader.in_memory and loader.chunk == 5
    seen = []
    for _ in range(3 * (53 // batch)):  # three epochs
        pos = 0 if loader.pos + batch > len(loader.order) else loader.pos
        imgs, labs = loader.next()
        idx = loader.order[pos : pos + batch].numpy()
        assert np.array_equal(labs, labels[idx]) and np.array_equal(imgs, images[idx])
        seen.extend(labs.tolist())
        assert len(loader.buffers) <= 2
    assert set(seen) == set(range(53))
    loader.close()


@pytest.mark.parametrize("in_memory", [True, False])
def test_prefetcher_gives_the_loaders_batches_and_resumes_where_the_loop_was(chunked_file, in_memory):
    path, _, _ = chunked_file
    limit = (1 << 40) if in_memory else 0

    def loader() -> data.ImageBatches:
        return data.ImageBatches(path, "train", 8, torch.Generator().manual_seed(5), limit, buffer_chunks=2)

    plain = loader()
    expected = [plain.next()[1] for _ in range(20)]  # 20 batches of 8 over 53 rows: three epochs
    plain.close()
    ahead = data.Prefetcher(loader(), depth=3)
    got = [ahead.next()[1] for _ in range(9)]
    state = ahead.state_dict()  # after 9 batches, while the thread has read further
    ahead.close()
    assert all(np.array_equal(a, b) for a, b in zip(got, expected[:9], strict=True))
    resumed = data.Prefetcher(loader())
    resumed.load_state_dict(state)
    rest = [resumed.next()[1] for _ in range(11)]
    assert all(np.array_equal(a, b) for a, b in zip(rest, expected[9:], strict=True))
    with pytest.raises(RuntimeError, match="before the first batch"):
        resumed.load_state_dict(state)
    resumed.close()
    assert not resumed.thread.is_alive()


def test_prefetcher_raises_the_readers_error(chunked_file):
    path, _, _ = chunked_file
    loader = data.ImageBatches(path, "train", 8, torch.Generator().manual_seed(5), 0, buffer_chunks=2)
    ahead = data.Prefetcher(loader)
    ahead.next()
    loader.images_ds.id.close()  # the file's dataset goes away under the reading thread
    with pytest.raises(RuntimeError, match=r"reading training batches from .*chunked\.h5 failed"):
        for _ in range(10):
            ahead.next()
    ahead.close()


def test_make_dataset_writes_atomically(tmp_path):
    out = tmp_path / "d.h5"
    out.write_bytes(b"previous result")
    with pytest.raises(KeyError):
        make_shapes({"source": "shapes", "image_size": 8, "seed": 0}, str(out))  # no 'splits'
    assert out.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def sealed_file(path: Path, images: np.ndarray, chunks: tuple[int, ...] | None, reverse: bool = False, **kw) -> Path:
    """A sealed split of ``images`` (labels = row numbers); ``reverse`` writes the chunks last to first, so that
    they lie in the file in the opposite order to their rows."""
    n, rows = len(images), (chunks or (len(images),))[0]
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("train/images", shape=images.shape, dtype=np.uint8, chunks=chunks, **kw)
        starts = list(range(0, n, rows))
        for a in reversed(starts) if reverse else starts:
            ds[a : a + rows] = images[a : a + rows]
        f.create_dataset("train/labels", data=np.arange(n, dtype=np.int64))
        data.write_root_attrs(f, "dataset", images.shape[1], [], {})
        data.seal(f)
    return path


@pytest.mark.parametrize("layout", ["chunks in row order", "chunks in reverse order", "contiguous"])
def test_rows_read_from_the_file_are_the_rows_of_the_order_and_its_checksum(tmp_path, layout):
    """An uncompressed split is read row by row at the rows' file offsets, whatever the order of its chunks in the
    file: batches are exactly the rows the permutation names, and the checksum read in blocks (here smaller than a
    row) is the one ``seal`` wrote."""
    images = np.random.default_rng(2).integers(0, 256, (53, 4, 4, 3), dtype=np.uint8)
    chunks = None if layout == "contiguous" else (5, 4, 4, 3)
    path = sealed_file(tmp_path / "m.h5", images, chunks, reverse=layout == "chunks in reverse order")
    loader = data.ImageBatches(path, "train", 7, torch.Generator().manual_seed(4))
    assert loader.rows_file is not None and loader.in_memory
    with h5py.File(path, "r") as f:
        if chunks:  # the chunks lie in the file in row order only if written in row order
            offsets = [f["train/images"].id.get_chunk_info(i).byte_offset for i in range(11)]
            assert (offsets == sorted(offsets)) == (layout == "chunks in row order")
        assert loader.rows_file.sha256(block_bytes=100) == f["train/images"].attrs["sha256"]
    for _ in range(20):  # nearly three epochs of 7 batches
        pos = 0 if loader.pos + 7 > len(loader.order) else loader.pos
        imgs, labs = loader.next()
        idx = loader.order[pos : pos + 7].numpy()
        assert np.array_equal(labs, idx) and np.array_equal(imgs, images[idx])
    loader.close()


def test_a_split_is_not_copied_into_the_process(tmp_path):
    """Building the loader of a 96 MiB split (checksum included) and drawing batches adds neither a private copy
    of it to the process nor its pages to the process's resident memory: the bytes stay in the page cache, shared
    by every rank on the node. Reading the split and hashing a copy, as the loader did before, added twice its
    size."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc to read the process's memory")
    images = np.zeros((2048, 128, 128, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(2048) % 256
    path = sealed_file(tmp_path / "big.h5", images, (21, 128, 128, 3))
    del images

    def mib() -> np.ndarray:  # private (anonymous) and all resident memory
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return np.array([int(status[k].split()[0]) / 1024 for k in ("RssAnon", "VmRSS")])

    before = mib()
    loader = data.ImageBatches(path, "train", 32, torch.Generator().manual_seed(0))
    for _ in range(64):  # a whole epoch
        loader.next()
    anon, rss = mib() - before
    loader.close()
    assert loader.in_memory and anon < 24 and rss < 24, f"the loader added {anon:.0f} MiB private, {rss:.0f} MiB RSS"


@pytest.mark.parametrize("in_memory", [True, False])
def test_ranks_shares_together_are_the_one_process_batch(chunked_file, in_memory):
    """World size 2: each rank's loader returns its half of every global batch (the second rank's half odd-sized
    for a batch of 7), and the two halves concatenated are the one-process batch, over epoch boundaries (53 rows:
    7 batches an epoch) and after a state_dict round trip, with and without the prefetch thread."""
    path, _, _ = chunked_file
    limit = (1 << 40) if in_memory else 0

    def loader(share: slice | None = None) -> data.ImageBatches:
        return data.ImageBatches(
            path, "train", 7, torch.Generator().manual_seed(6), limit, buffer_chunks=2, share=share
        )

    one = loader()
    assert one.in_memory == in_memory
    expected = [one.next() for _ in range(24)]
    one.close()
    shares = (slice(0, 3), slice(3, 7))
    ranks = [loader(shares[0]), data.Prefetcher(loader(shares[1]))]
    got = [[r.next() for r in ranks] for _ in range(10)]
    states = [r.state_dict() for r in ranks]
    for r in ranks:
        r.close()
    resumed = [data.Prefetcher(loader(shares[0])), loader(shares[1])]
    for r, state in zip(resumed, states, strict=True):
        r.load_state_dict(state)
    got += [[r.next() for r in resumed] for _ in range(14)]
    for r in resumed:
        r.close()
    for (a, b), (images, labels) in zip(got, expected, strict=True):
        assert (len(a[1]), len(b[1])) == (3, 4)
        assert np.array_equal(np.concatenate([a[0], b[0]]), images)
        assert np.array_equal(np.concatenate([a[1], b[1]]), labels)


@pytest.mark.parametrize("share", [slice(0, 8, 2), slice(5, 5), slice(9, 12), 3])
def test_a_share_that_is_not_a_run_of_the_batch_is_refused(chunked_file, share):
    with pytest.raises(ValueError, match=r"share must be a non-empty slice of consecutive rows of the batch of 8"):
        data.ImageBatches(chunked_file[0], "train", 8, torch.Generator(), share=share)


@pytest.mark.parametrize("compression", [None, "lzf"])
def test_a_changed_byte_is_named_before_the_first_batch(tmp_path, compression, capsys):
    """One changed byte of a sealed split is found when the loader is built: read from the file, and for a
    compressed split (whose rows cannot be read from the file; the loader says so and streams it) through h5py."""
    images = np.random.default_rng(3).integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    path = sealed_file(tmp_path / "c.h5", images, (5, 4, 4, 3), compression=compression)
    loader = data.ImageBatches(path, "train", 8, torch.Generator())
    assert loader.in_memory == (compression is None)
    loader.close()
    err = capsys.readouterr().err
    assert ("cannot be read row by row (it is stored with filters (lzf))" in err) == (compression == "lzf")
    with h5py.File(path, "a") as f:
        f["train/images"][17, 2, 1, 0] ^= 1
    with pytest.raises(data.CorruptFile, match=r"c\.h5: /train/images does not match the checksum"):
        data.ImageBatches(path, "train", 8, torch.Generator())


def test_latent_moments_are_read_from_the_file_bit_for_bit(tmp_path):
    """float32 rows (a latent cache's moments) are read at their offsets as exactly the bytes h5py returns,
    and their checksum is verified."""
    moments = np.random.default_rng(5).standard_normal((23, 6, 2, 2)).astype(np.float32)
    path = tmp_path / "lat.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train/moments", data=moments, chunks=(5, 6, 2, 2))
        f.create_dataset("train/labels", data=np.arange(23, dtype=np.int64))
        f.attrs["layout"] = data.LATENT_LAYOUT
        data.seal(f)
    loader = data.ImageBatches(path, "train", 4, torch.Generator().manual_seed(1), key="moments", share=slice(1, 3))
    assert loader.rows_file is not None
    for _ in range(12):  # two epochs of 5 batches
        rows, labels = loader.next()
        assert rows.dtype == np.float32 and rows.shape == (2, 6, 2, 2)
        assert np.array_equal(rows.view(np.uint32), moments[labels].view(np.uint32))
    loader.close()

"""The one HDF5 image layout, used for datasets and for generated samples alike, and batch loading from it.

Layout (``LAYOUT``)::

    /                 attrs: layout, kind ("dataset" | "samples"), image_size, class_names (JSON list),
                             provenance (JSON: code version, spec, seeds, counts)
    /<split>/images   uint8 (N, H, W, C), C = 3 (RGB) or 1 (grey), chunked by rows of about 1 MiB
                      (a third of that for C = 1: ``chunk_rows`` counts 3 channels), optional lzf compression
    /<split>/labels   int64 (N,)  (-1 where a sample has no label)

Datasets hold ``train`` and ``val`` splits; a sample file holds one split named ``samples`` and, optionally,
a ``/trajectory`` group.

Checksums: a file is ``seal``-ed when it is complete: each row array gets the SHA-256 of its bytes as the attribute
``sha256`` and the root ``content_sha256`` digests them all. ``verify`` recomputes them before a sample file is
evaluated or shown, the training loader (``ImageBatches``) before it draws from a split of up to 8 GiB, and
``content_sha256`` is the identity of the file's content that a model trained on it records
(``core.checksums``).

The latent cache of a dataset (``LATENT_LAYOUT``, written by ``core.stages.encode_latents``) has the same splits with
``/<split>/moments`` float32 (N, 2·C, h, w), the mean and log-variance of the autoencoder's posterior q(z|x)
(unscaled), beside the same ``labels``; its root attrs add ``latent_shape``, ``scale_factor`` and the
autoencoder's path and SHA-256. Chunks of ~1 MiB (e.g. 21 images at 128², 341 at 32²) keep random batches cheap:
the loader reads whole chunks in a shuffled order into a shuffle buffer rather than scattered rows.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from core import rowfile
from core.checksums import CorruptFile as CorruptFile
from core.checksums import array_sha256, check_digest
from core.checksums import content_sha256 as content_sha256
from core.checksums import seal as seal
from core.checksums import verify as verify

LAYOUT = "diffusion-study/images-v1"
LATENT_LAYOUT = "diffusion-study/latents-v1"
CHUNK_BYTES = 1 << 20


def chunk_rows(image_size: int) -> int:
    """Images per HDF5 chunk so that one chunk is about ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // (image_size * image_size * 3))


def create_split(
    f: h5py.File, split: str, count: int, image_size: int, compression: str | None = None, channels: int = 3
) -> tuple[h5py.Dataset, h5py.Dataset]:
    """Create ``/<split>/images`` (``channels`` 3 or 1) and ``/<split>/labels`` for ``count`` images."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if compression not in (None, "none", "lzf", "gzip"):
        raise ValueError(f"compression must be 'none', 'lzf' or 'gzip', got {compression!r}")
    comp = None if compression in (None, "none") else compression
    grp = f.require_group(split)
    rows = min(max(count, 1), chunk_rows(image_size))
    images = grp.create_dataset(
        "images",
        shape=(count, image_size, image_size, channels),
        dtype=np.uint8,
        chunks=(rows, image_size, image_size, channels),
        compression=comp,
    )
    labels = grp.create_dataset("labels", shape=(count,), dtype=np.int64, fillvalue=-1)
    return images, labels


def write_root_attrs(f: h5py.File, kind: str, image_size: int, class_names: list[str], prov: dict[str, Any]) -> None:
    f.attrs["layout"] = LAYOUT
    f.attrs["kind"] = kind
    f.attrs["image_size"] = image_size
    f.attrs["class_names"] = json.dumps(list(class_names))
    f.attrs["provenance"] = json.dumps(prov, default=str)


def expected_layout(split: str) -> str:
    writer = "core.stages.sample" if split == "samples" else "core.stages.make_dataset"
    return (
        f"an HDF5 file written by `python -m {writer}` (layout {LAYOUT}) with "
        f"/{split}/images uint8 (N, H, W, C), C = 3 (RGB) or 1 (grey), and /{split}/labels int64 (N,)"
    )


def open_images(path: str | os.PathLike[str], split: str) -> h5py.File:
    """Open an image file read-only and check it has ``split`` in the expected layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist; expected {expected_layout(split)}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise OSError(f"cannot read {path} as HDF5 ({err}); expected {expected_layout(split)}") from err
    images = f.get(f"{split}/images")
    labels = f.get(f"{split}/labels")
    ok = (
        images is not None
        and labels is not None
        and images.dtype == np.uint8
        and images.ndim == 4
        and images.shape[3] in (1, 3)
        and labels.shape == (images.shape[0],)
    )
    if not ok:
        f.close()
        raise ValueError(f"{path} lacks a valid split '{split}'; expected {expected_layout(split)}")
    return f


def open_latents(path: str | os.PathLike[str], split: str) -> h5py.File:
    """Open a latent cache read-only and check it has ``split`` in the expected layout."""
    path = Path(path)
    expected = (
        f"an HDF5 file written by `python -m core.stages.encode_latents` (layout {LATENT_LAYOUT}) with "
        f"/{split}/moments "
        f"float32 (N, 2·C, h, w) and /{split}/labels int64 (N,)"
    )
    if not path.is_file():
        raise FileNotFoundError(f"latent file {path} does not exist; expected {expected}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise OSError(f"cannot read {path} as HDF5 ({err}); expected {expected}") from err
    moments, labels = f.get(f"{split}/moments"), f.get(f"{split}/labels")
    ok = (
        f.attrs.get("layout") == LATENT_LAYOUT
        and moments is not None
        and labels is not None
        and moments.dtype == np.float32
        and moments.ndim == 4
        and moments.shape[1] % 2 == 0
        and labels.shape == (moments.shape[0],)
    )
    if not ok:
        f.close()
        raise ValueError(f"{path} lacks a valid split '{split}'; expected {expected}")
    return f


def open_split(path: str | os.PathLike[str], split: str, key: str = "images") -> h5py.File:
    """``open_images`` for ``key == "images"``, ``open_latents`` for ``key == "moments"``."""
    if key not in ("images", "moments"):
        raise ValueError(f"unknown row dataset {key!r} (images or moments)")
    return open_images(path, split) if key == "images" else open_latents(path, split)


def class_names(f: h5py.File) -> list[str]:
    return list(json.loads(f.attrs.get("class_names", "[]")))


def read_split(path: str | os.PathLike[str], split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole split (or its first ``limit`` images) into memory."""
    with open_images(path, split) as f:
        n = f[f"{split}/images"].shape[0] if limit is None else min(limit, f[f"{split}/images"].shape[0])
        return f[f"{split}/images"][:n], f[f"{split}/labels"][:n]


def to_model_range(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 NHWC → float32 NCHW in [-1, 1], on ``device`` if given: the uint8 rows are moved first and converted
    there (a quarter of the bytes of float32, and no conversion on the host)."""
    x = torch.as_tensor(images)
    if device is not None:
        x = x.to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] → uint8 NHWC, rounding to nearest (values outside [-1, 1] are clamped). A NaN or
    infinity is never turned into a pixel: it raises FloatingPointError."""
    x = x.detach().float()
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"{int((~torch.isfinite(x)).sum())} non-finite values in images to quantise")
    y = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


class ImageBatches:
    """Endless random batches from one split, reproducible from a ``torch.Generator``.

    Rows are ``/<split>/images`` of an image file, or ``/<split>/moments`` of a latent cache (``key``).

    Splits of up to ``max_memory_bytes`` are read row by row from the file (``core.rowfile``): their bytes sit
    once in the page cache, shared by every process on the node, each process holds only its batches, and batches
    are drawn from a permutation per epoch. Their checksums are verified when the loader is built. Larger splits,
    and those whose rows are not plain bytes in the file (compressed files), are streamed: chunks are visited in
    a shuffled order, ``buffer_chunks`` at a time, and rows are shuffled within that buffer. Each buffer is read
    once, chunk by chunk, into memory and its batches are indexed from there (reading scattered rows through
    h5py would read a whole chunk per row; bench/RESULTS.md, *Input pipeline*). The position in the stream and
    the generator's state are ``state_dict``, so that a resumed run sees the same batches as an uninterrupted one.

    ``batch_size`` is the global batch; ``share`` (a slice of it, ``core.distributed.Context.share``) makes
    ``next()`` return only those rows of each global batch. Every rank draws the same global order from an
    identically seeded generator, so the ranks stay in step and their shares together are the one-process batch.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str,
        batch_size: int,
        generator: torch.Generator,
        max_memory_bytes: int = 8 << 30,
        buffer_chunks: int = 64,
        key: str = "images",
        share: slice | None = None,
    ) -> None:
        self.path, self.split, self.batch_size, self.generator = Path(path), split, batch_size, generator
        self.share = batch_share(share, batch_size)
        self.file = open_split(path, split, key)
        self.images_ds = self.file[f"{split}/{key}"]
        self.labels_ds = self.file[f"{split}/labels"]
        self.num_images = self.images_ds.shape[0]
        if self.num_images < batch_size:
            raise ValueError(f"split '{split}' of {path} has {self.num_images} images, fewer than batch {batch_size}")
        self.rows_file: rowfile.RowFile | None = None
        if self.images_ds.size * self.images_ds.dtype.itemsize <= max_memory_bytes:
            try:
                self.rows_file = rowfile.RowFile(path, self.images_ds)
            except rowfile.NotPlainRows as why:
                say_once(f"[data] {path}: /{split}/{key} cannot be read row by row ({why}); streaming it instead")
            try:
                self._verify()
            except BaseException:
                self.close()
                raise
        self.in_memory = self.rows_file is not None  # randomly accessible: one permutation of all rows per epoch
        self.labels = self.labels_ds[:] if self.in_memory else None
        self.chunk = self.images_ds.chunks[0] if self.images_ds.chunks else 1024
        self.buffer_rows = buffer_chunks * self.chunk
        self.buffers: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # streaming: loaded shuffle buffers
        self.order: torch.Tensor = torch.empty(0, dtype=torch.long)
        self.pos = 0
        self.epoch = 0

    def _verify(self) -> None:
        """Check the rows and labels against the file's checksums where it has them (read in blocks, not copied
        whole), before any batch is drawn."""
        for ds in (self.images_ds, self.labels_ds):
            want = ds.attrs.get("sha256")
            if want is not None:
                direct = self.rows_file is not None and ds is self.images_ds
                got = self.rows_file.sha256() if direct else array_sha256(ds)
                check_digest(self.path, ds.name.lstrip("/"), got, want)

    def _new_epoch(self) -> None:
        """A fresh visiting order of all rows (in memory) or of chunk-buffers (streaming)."""
        if self.in_memory:
            self.order = torch.randperm(self.num_images, generator=self.generator)
        else:
            n_chunks = -(-self.num_images // self.chunk)
            chunks = torch.randperm(n_chunks, generator=self.generator)
            rows = [torch.arange(c * self.chunk, min((c + 1) * self.chunk, self.num_images)) for c in chunks.tolist()]
            all_rows = torch.cat(rows)
            # shuffle inside each buffer of consecutive (in visiting order) chunks
            parts = [
                blk[torch.randperm(len(blk), generator=self.generator)] for blk in all_rows.split(self.buffer_rows)
            ]
            self.order = torch.cat(parts)
        self.buffers = {}
        self.pos = 0
        self.epoch += 1

    def _read_buffer(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, images and labels of the chunks that hold shuffle buffer ``k`` of this epoch's order, read
        whole and in file order (row ids ascending)."""
        rows = self.order[k * self.buffer_rows : (k + 1) * self.buffer_rows].numpy()
        spans = [(c * self.chunk, min((c + 1) * self.chunk, self.num_images)) for c in np.unique(rows // self.chunk)]
        ids = np.concatenate([np.arange(a, b) for a, b in spans])
        images = np.concatenate([self.images_ds[a:b] for a, b in spans])
        labels = np.concatenate([self.labels_ds[a:b] for a, b in spans])
        return ids, images, labels

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch of rows (uint8 NHWC images or float32 moments) and int64 labels: this loader's share
        of the next global batch.

        Batches never straddle epochs."""
        if self.pos + self.batch_size > len(self.order):
            self._new_epoch()
        idx = self.order[self.pos : self.pos + self.batch_size].numpy()[self.share]
        which = (np.arange(self.pos, self.pos + self.batch_size) // self.buffer_rows)[self.share]
        self.pos += self.batch_size
        if self.rows_file is not None:
            return self.rows_file.gather(idx), self.labels[idx]
        return self._read_streamed(idx, which)

    def _read_streamed(self, idx: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``idx`` of a streamed split; ``which`` is each row's shuffle buffer."""
        needed = np.unique(which).tolist()  # one buffer, or two where the batch straddles them
        self.buffers = {k: self.buffers.get(k) or self._read_buffer(k) for k in needed}
        images = np.empty((len(idx), *self.images_ds.shape[1:]), self.images_ds.dtype)
        labels = np.empty(len(idx), self.labels_ds.dtype)
        for k in needed:
            sel = which == k
            ids, buf_images, buf_labels = self.buffers[k]
            local = np.searchsorted(ids, idx[sel])
            images[sel], labels[sel] = buf_images[local], buf_labels[local]
        return images, labels

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.next()

    def state_dict(self) -> dict[str, Any]:
        # ``order`` is replaced, never modified in place, so the state can share it
        return {"order": self.order, "pos": self.pos, "epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.pos, self.epoch = state["order"].clone(), int(state["pos"]), int(state["epoch"])
        self.generator.set_state(state["generator"])
        self.buffers = {}

    def close(self) -> None:
        if self.rows_file is not None:
            self.rows_file.close()
        self.file.close()


def batch_share(share: slice | None, batch_size: int) -> slice:
    """``share`` as a slice ``start:stop`` of a batch of ``batch_size`` (the whole batch for ``None``), checked
    to be a non-empty run of consecutive rows."""
    if share is None:
        return slice(0, batch_size)
    rows = range(batch_size)[share] if isinstance(share, slice) else range(0)
    if rows.step != 1 or len(rows) == 0:
        raise ValueError(
            f"share must be a non-empty slice of consecutive rows of the batch of {batch_size}, got {share!r}"
        )
    return slice(rows.start, rows.stop)


_said: set[str] = set()


def say_once(message: str) -> None:
    """Print ``message`` to stderr the first time this process is asked to."""
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)


class Prefetcher:
    """The batches of an ``ImageBatches``, read ``depth`` ahead on a background thread so that HDF5 reads and
    indexing overlap the training step (the thread runs while the main thread waits in PyTorch, which releases
    the GIL). Same batches in the same order as the loader; ``state_dict`` is the loader's state after the last
    batch handed out, so a checkpoint resumes where the training loop was, not where the thread was."""

    def __init__(self, loader: ImageBatches, depth: int = 2) -> None:
        self.loader = loader
        self.queue: queue.Queue[tuple[Any, Any]] = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.state = loader.state_dict()

    def _put(self, item: tuple[Any, Any]) -> None:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fill(self) -> None:
        try:
            while not self.stopping.is_set():
                batch = self.loader.next()
                self._put((batch, self.loader.state_dict()))
        except BaseException as err:  # handed to the main thread, which raises it
            self._put((None, err))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        if self.thread is None:
            self.thread = threading.Thread(target=self._fill, name="prefetch", daemon=True)
            self.thread.start()
        batch, state = self.queue.get()
        if batch is None:
            raise RuntimeError(f"reading training batches from {self.loader.path} failed: {state}") from state
        self.state = state
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.thread is not None:
            raise RuntimeError("Prefetcher.load_state_dict must come before the first batch")
        self.loader.load_state_dict(state)
        self.state = self.loader.state_dict()

    def close(self) -> None:
        self.stopping.set()
        if self.thread is not None:  # it notices within 0.1 s once its current read is done
            self.thread.join()
        self.loader.close()


class InputWait:
    """How long each step's device waited for its input: on CUDA, the GPU's idle time from the start of the
    step (or the end of the previous step's work, if later) to the batch being on the GPU in model range, from
    two CUDA events read after the step's own synchronisation (no extra sync); on a CPU, which runs the step
    itself, the wall time of getting the batch (reading it or waiting for the prefetch thread, and converting
    it). Checkpointing and validation between steps are not counted. This is the time that keeping the device
    fed (``Prefetcher``) can save."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.t0 = 0.0
        self.seconds = 0.0
        if self.cuda:  # re-recorded every step; read only after the step's synchronisation
            self.asked, self.ready = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def before_batch(self) -> None:
        if self.cuda:
            self.asked.record()
        else:
            self.t0 = time.perf_counter()

    def batch_ready(self) -> None:
        if self.cuda:
            self.ready.record()
        else:
            self.seconds = time.perf_counter() - self.t0

    def step_done(self) -> float:
        """The wait before this step; call it after the step's result has been synchronised."""
        if self.cuda:
            self.seconds = self.asked.elapsed_time(self.ready) / 1000
        return self.seconds

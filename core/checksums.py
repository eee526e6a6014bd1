"""Checksums of the project's HDF5 files (the layout of ``core.data``).

A file is ``seal``-ed when it is complete: each row array gets the SHA-256 of its bytes as the attribute
``sha256`` and the root ``content_sha256`` digests them all. ``verify`` recomputes them before a sample file is
evaluated or shown, the training loader (``ImageBatches``) before it draws from a split of up to 8 GiB, and
``content_sha256`` is the identity of the file's content that a model trained on it records.
"""

from __future__ import annotations

import hashlib
import json
import os

import h5py
import numpy as np


class CorruptFile(ValueError):
    """A file whose content no longer matches the checksum written when it was completed."""


ROW_ARRAYS = ("images", "moments", "labels")


def _row_arrays(f: h5py.File) -> list[str]:
    """The row arrays of a file (``<split>/images|moments|labels``), in a fixed order."""
    return sorted(
        f"{split}/{name}"
        for split in f
        if isinstance(f[split], h5py.Group) and split != "trajectory"
        for name in ROW_ARRAYS
        if name in f[split]
    )


def array_sha256(ds: h5py.Dataset, block_bytes: int = 64 << 20) -> str:
    """SHA-256 of an HDF5 array's bytes in C order, read in blocks of rows (streams arrays larger than memory)."""
    h = hashlib.sha256()
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    step = max(1, block_bytes // row_bytes)
    for i in range(0, ds.shape[0], step):
        h.update(np.ascontiguousarray(ds[i : i + step]).tobytes())
    return h.hexdigest()


def seal(f: h5py.File) -> str:
    """Write the checksum of every row array and the file's ``content_sha256`` (the digest of those); return it."""
    digests = {}
    for key in _row_arrays(f):
        digests[key] = f[key].attrs["sha256"] = array_sha256(f[key])
    content = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    f.attrs["content_sha256"] = content
    return content


def content_sha256(f: h5py.File, path: str | os.PathLike[str]) -> str:
    """The identity of a sealed file's content (its ``content_sha256``)."""
    digest = f.attrs.get("content_sha256")
    if digest is None:
        raise CorruptFile(
            f"{path} has no content checksum (content_sha256): it was not completed by this "
            "workflow's stages, or by an older version of them; remake it"
        )
    return str(digest)


def verify(f: h5py.File, path: str | os.PathLike[str], keys: list[str] | None = None) -> None:
    """Recompute the checksums of ``keys`` (default: every row array) against those written by ``seal``; raise
    ``CorruptFile`` naming the file and the array that differs."""
    content_sha256(f, path)
    for key in keys or _row_arrays(f):
        want = f[key].attrs.get("sha256")
        if want is None:
            raise CorruptFile(f"{path}: /{key} has no checksum (sha256); remake the file")
        check_digest(path, key, array_sha256(f[key]), want)


def check_digest(path: str | os.PathLike[str], key: str, got: str, want: str) -> None:
    """Raise ``CorruptFile`` naming the file and the array ``key`` if its SHA-256 ``got`` is not ``want``."""
    if got != want:
        raise CorruptFile(
            f"{path}: /{key} does not match the checksum written when the file was completed (SHA-256 "
            f"{got[:12]}…, expected {want[:12]}…): it was changed afterwards; delete it and rerun to remake it"
        )

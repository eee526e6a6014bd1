"""The rows of an uncompressed HDF5 array read straight from the file, so that the ranks on a node share one copy.

An uncompressed HDF5 array stores its rows as plain bytes in C order: in one block (contiguous layout), or in
chunks of whole rows (the project's layout, ``core.data.create_split``), each a block of the file that h5py
locates (``get_chunk_info``). ``RowFile`` finds the file offset of every row and reads a batch's rows with
positional reads (``os.preadv``) into the batch's array. The bytes are held once, in the kernel's page cache,
shared by every process that reads the file (the ranks of a job on one node), rather than once per process as an
``images_ds[:]`` read would hold them; each process holds only its batches. The checksum is computed by reading
the array in blocks into one reused buffer, without a copy of the array.

Why reads rather than a memory map (``mmap``), which would share the same page cache: a process's resident size
(RSS) counts every page it has mapped, and Linux maps whole page-cache folios on a fault (on kernel 6.18, 300
random batches of 32 rows at 128² mapped 2.6 GB into the process), so each rank's RSS would grow to the whole
split, and memory accounting that adds up the ranks' RSS (SLURM's ``MaxRSS``) would count it once per rank.
Reads keep RSS to what the process really holds, were as fast (bench/RESULTS.md, *Memory per rank*), and cannot
crash with SIGBUS if the file is truncated: a short read raises an error naming the file.

Arrays that are compressed or filtered, not chunked by whole rows, not yet written, or of a non-native byte
order cannot be read this way: ``RowFile`` raises ``NotPlainRows`` with the reason, and the caller reads them
through h5py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np


class NotPlainRows(ValueError):
    """An HDF5 array whose rows are not plain bytes in the file (the message says why)."""


def _block_offsets(ds: h5py.Dataset) -> tuple[int, np.ndarray]:
    """Rows per block and the file offset of each block of ``ds``, in row order; raise ``NotPlainRows``."""
    plist = ds.id.get_create_plist()
    if plist.get_nfilters():
        raise NotPlainRows(f"it is stored with filters ({ds.compression or 'e.g. shuffle or a checksum'})")
    if not ds.dtype.isnative:
        raise NotPlainRows(f"its byte order ({ds.dtype.str}) is not this machine's")
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if offset is None:
            raise NotPlainRows("it has not been written")
        return ds.shape[0], np.array([offset], dtype=np.int64)
    if layout != h5py.h5d.CHUNKED:
        raise NotPlainRows("its layout is neither contiguous nor chunked")
    if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        raise NotPlainRows(f"its chunks {ds.chunks} do not hold whole rows of shape {ds.shape[1:]}")
    rows = ds.chunks[0]
    count = -(-ds.shape[0] // rows)
    if ds.id.get_num_chunks() != count:
        raise NotPlainRows(f"only {ds.id.get_num_chunks()} of its {count} chunks have been written")
    chunk_bytes = rows * ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    offsets = np.full(count, -1, dtype=np.int64)
    for i in range(count):
        info = ds.id.get_chunk_info(i)
        if info.byte_offset is None or info.size != chunk_bytes:
            raise NotPlainRows(f"its chunk at row {info.chunk_offset[0]} is not a plain block of {chunk_bytes} bytes")
        offsets[info.chunk_offset[0] // rows] = info.byte_offset
    return rows, offsets


class RowFile:
    """The rows of one uncompressed HDF5 array (``ds``, of the file at ``path``), read at their file offsets."""

    def __init__(self, path: str | os.PathLike[str], ds: h5py.Dataset) -> None:
        if not hasattr(os, "preadv"):
            raise NotPlainRows("this platform has no positional reads (os.preadv)")
        self.path, self.shape, self.dtype = Path(path), tuple(ds.shape), ds.dtype
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        rows, offsets = _block_offsets(ds)
        size = self.path.stat().st_size
        if self.shape[0] == 0:
            raise NotPlainRows("it has no rows")
        if int(offsets.max()) + rows * self.row_bytes > size:
            raise NotPlainRows(f"its blocks reach past the end of the file ({size} bytes)")
        r = np.arange(self.shape[0], dtype=np.int64)
        self.row_offsets = offsets[r // rows] + (r % rows) * self.row_bytes  # file offset of each row
        ends = offsets + np.minimum(rows, self.shape[0] - rows * np.arange(len(offsets))) * self.row_bytes
        joined = offsets[1:] == ends[:-1]  # blocks that continue the previous one in the file
        self.runs = list(zip(offsets[np.r_[True, ~joined]].tolist(), ends[np.r_[~joined, True]].tolist(), strict=True))
        self.fd = os.open(self.path, os.O_RDONLY)

    def _read(self, buffer: memoryview | np.ndarray, offset: int) -> None:
        """Fill ``buffer`` (bytes) from the file at ``offset``."""
        if os.preadv(self.fd, [buffer], offset) != len(buffer):
            raise OSError(f"{self.path}: short read at byte {offset}: the file was truncated while in use")

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (in that order), read from the file."""
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        rows = out.reshape(len(idx), -1).view(np.uint8)  # each row a writable 1-D byte buffer
        for j, offset in enumerate(self.row_offsets[idx].tolist()):
            self._read(rows[j], offset)
        return out

    def sha256(self, block_bytes: int = 8 << 20) -> str:
        """SHA-256 of the array's bytes in C order (equal to ``core.checksums.array_sha256`` of the HDF5 array), read in
        blocks of ``block_bytes`` into one buffer."""
        h = hashlib.sha256()
        buffer = memoryview(bytearray(block_bytes))
        for start, end in self.runs:
            for a in range(start, end, block_bytes):
                block = buffer[: min(block_bytes, end - a)]
                self._read(block, a)
                h.update(block)
        return h.hexdigest()

    def close(self) -> None:
        os.close(self.fd)

"""What a job costs, measured while it runs, written beside its outputs as ``<output>.cost.json`` (``core.paths``).

A job's work is split into named sections (``train``: the optimizer step; ``sample``: ``denoise``, one network
evaluation step over a batch, and ``decode``; ``evaluate``/``reference_stats``: ``extract``, one feature-extractor
batch). Each ``Meter.run(section, images, units)`` block is *timed* (wall seconds, CUDA synchronised); the first of
a sampling or extraction section is also *counted* as it runs, under ``torch.utils.flop_counter.FlopCounterMode``
(FLOPs of matmuls and convolutions; counting slows a block down, so its time is kept apart and used only when
nothing else was timed: ``timed_under_counter``). A training step is counted on the meta device (``count_step``):
its FLOPs and the bytes one more image saves for the backward (activations).

The record gives per section: seconds and FLOPs per image-unit (one image through one unit: a training image, one
sampler step of one image, one image through the extractor), activation bytes per image, and for the job: peak
host RSS (``ru_maxrss``) and peak CUDA memory. ``core.forecast --rehearsal`` multiplies them by the real budgets.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.provenance import code_version, now_iso, write_json

SCHEMA = 1


@dataclass
class Section:
    seconds: float = 0.0
    image_units: int = 0  # Σ units × images over the timed blocks
    units: int = 0
    images_per_unit: int = 0
    counted_seconds: float = 0.0
    counted_image_units: int = 0
    flops_image_units: int = 0
    flops: float | None = None
    saved_bytes: float | None = None
    counted_images: int = 0

    def summary(self) -> dict[str, Any]:
        timed = self.image_units > 0
        seconds, image_units = (
            (self.seconds, self.image_units) if timed else (self.counted_seconds, self.counted_image_units)
        )
        out: dict[str, Any] = {
            "units_timed": self.units,
            "images_per_unit": self.images_per_unit,
            "seconds_per_image_unit": seconds / image_units if image_units else None,
            "timed_under_counter": not timed,
            "flops_per_image_unit": (
                self.flops / self.flops_image_units if self.flops is not None and self.flops_image_units else None
            ),
            "activation_bytes_per_image": (
                self.saved_bytes / self.counted_images if self.saved_bytes and self.counted_images else None
            ),
        }
        return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def peak_rss_bytes() -> int:
    """This process's peak resident set (Linux reports ``ru_maxrss`` in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Meter:
    """Measures one job's sections (see the module docstring) and writes them with ``write``."""

    def __init__(self, job: str, device: torch.device | str, **info: Any) -> None:
        device = torch.device(device)
        self.job, self.device, self.info = job, device, info
        self.sections: dict[str, Section] = {}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def run(self, section: str, images: int, units: int = 1, count: bool = False) -> Iterator[None]:
        """Time a block doing ``units`` units of work on ``images`` images each; with ``count``, also count it
        (its time is then kept apart: counting slows it down)."""
        with self.timed(section, images, units, counted=count), self.count(section, images, units, enabled=count):
            yield

    @contextlib.contextmanager
    def timed(self, section: str, images: int, units: int = 1, counted: bool = False) -> Iterator[None]:
        """Time a block; ``counted``: a ``count`` block runs within it (its time is kept apart)."""
        s = self.sections.setdefault(section, Section())
        s.images_per_unit = max(s.images_per_unit, images)
        self._sync()
        t0 = time.perf_counter()
        yield
        self._sync()
        if counted:
            s.counted_seconds += time.perf_counter() - t0
            s.counted_image_units += units * images
            return
        s.seconds += time.perf_counter() - t0
        s.image_units += units * images
        s.units += units

    @contextlib.contextmanager
    def count(self, section: str, images: int, units: int = 1, enabled: bool = True) -> Iterator[None]:
        """Count the FLOPs of a block of ``units`` units on ``images`` images each, as it runs: for sampling and
        extraction (eval mode, no autograd). Training steps are counted on the meta device instead
        (``count_step``): under a dispatch mode dropout draws differently, which would change the run's bits."""
        if not enabled:
            yield
            return
        s = self.sections.setdefault(section, Section())
        with FlopCounterMode(display=False) as counter:
            yield
        s.flops = (s.flops or 0.0) + float(counter.get_total_flops())
        s.counted_images += images
        s.flops_image_units += units * images

    def add_count(self, section: str, images: int, flops: float, saved_bytes: float, units: int = 1) -> None:
        """Record a count made elsewhere (``meta_counts``) for ``units`` units on ``images`` images each."""
        s = self.sections.setdefault(section, Section())
        s.flops = (s.flops or 0.0) + flops
        s.saved_bytes = (s.saved_bytes or 0.0) + saved_bytes
        s.counted_images += images
        s.flops_image_units += units * images

    def counting(self, section: str) -> bool:
        """Whether ``section`` still needs its one counted block (count the first, time the rest)."""
        return section not in self.sections or self.sections[section].flops is None

    def record(self) -> dict[str, Any]:
        cuda_peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        return {
            "schema": SCHEMA,
            "job": self.job,
            **self.info,
            "device": self.device.type,
            "device_name": device_name(self.device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "pid": os.getpid(),
            "sections": {name: s.summary() for name, s in self.sections.items()},
            "peak_rss_bytes": peak_rss_bytes(),
            "cuda_peak_bytes": cuda_peak,
            "code_version": code_version(),
            "created": now_iso(),
        }

    def write(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        rec = self.record()
        write_json(Path(path), rec)
        return rec


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    import json

    with open(path) as fh:
        rec = json.load(fh)
    if rec.get("schema") != SCHEMA:
        raise ValueError(f"{path}: cost record schema {rec.get('schema')!r}, expected {SCHEMA}")
    return rec


def meta_counts(
    build: Callable[[], torch.nn.Module], loss: Callable[[torch.nn.Module], Any]
) -> tuple[float, float, float]:
    """(forward FLOPs, backward FLOPs, bytes saved for the backward) of ``loss(build())`` on PyTorch's meta device:
    the real network's shapes without memory or compute. A training step is counted there rather than while it runs:
    under a dispatch mode dropout draws its random numbers differently, which would change the run's bits."""
    saved = [0.0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.device("meta"):
        net = build()
        with FlopCounterMode(display=False) as fwd, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = loss(net)
        backward = 0.0
        if out.requires_grad:
            with FlopCounterMode(display=False) as bwd:
                out.backward()
            backward = float(bwd.get_total_flops())
    return float(fwd.get_total_flops()), backward, saved[0]


def epsilon_loss(diffusion: Any, batch: int, channels: int, size: int, classes: int) -> Callable[[Any], Any]:
    """One ε-loss evaluation of a batch of ``batch`` (zeros: shapes are what counts) for ``meta_counts``."""

    def run(net: torch.nn.Module) -> torch.Tensor:
        x = torch.zeros(batch, channels, size, size)
        t = torch.zeros(batch, dtype=torch.long)
        y = torch.zeros(batch, dtype=torch.long) if classes else None
        return diffusion.training_loss(net, x, y, t=t, noise=torch.zeros_like(x))

    return run


def count_step(
    meter: Meter, section: str, build: Callable[[], torch.nn.Module], loss_at: Callable[[int], Any], batch: int
) -> None:
    """Record one step of ``batch`` images (``loss_at(batch)``, a ``meta_counts`` loss) in ``meter``: its FLOPs,
    and as activations what one more image adds to the bytes saved for the backward (the weights that the backward
    also keeps do not grow with the batch)."""
    fwd, bwd, saved = meta_counts(build, loss_at(batch))
    per_image = meta_counts(build, loss_at(batch + 1))[2] - saved
    meter.add_count(section, batch, fwd + bwd, per_image * batch)

"""What a job costs, measured while it runs, written beside its outputs as ``<output>.cost.json`` (``core.paths``).

A job's work is split into named sections (``train``: the optimizer step; ``sample``: ``denoise``, one network
evaluation step over a batch, and ``decode``; ``evaluate``/``reference_stats``: ``extract``, one feature-extractor
batch). Each ``Meter.timed(section, images, units)`` block is *timed* (wall seconds, CUDA synchronised). FLOPs are
*counted* apart from the timed work, so that no timed block runs under a counter (a counter sees every operation
and slowed the demo's sampling by a quarter): ``Meter.count_one`` runs one image's work of a sampling, encoding or
extraction section once more under ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs of matmuls and
convolutions), on inputs of its own; a training step is counted on the meta device (``count_step``): its FLOPs and
the bytes one more image saves for the backward (activations).

Only a rehearsal's jobs count (``Meter(count_flops=True)``; a rehearsal's spec or evaluation options say so, see
``core.rehearsal``): the forecast reads FLOPs from them alone, and a counter's first use in a process costs a fixed
2 s on a CPU (it imports ``torch._dynamo``), a quarter of a demo evaluation job. A real run's record has the times
and memory, and null FLOPs (``flops_counted: false``); ``reference_stats`` never counts (the forecast prices its
extractor from the meta-device count, the same network).

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
    flops_image_units: int = 0
    flops: float | None = None
    saved_bytes: float | None = None
    counted_images: int = 0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "units_timed": self.units,
            "images_per_unit": self.images_per_unit,
            "seconds_per_image_unit": self.seconds / self.image_units if self.image_units else None,
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

    def __init__(self, job: str, device: torch.device | str, *, count_flops: bool, **info: Any) -> None:
        device = torch.device(device)
        self.job, self.device, self.info, self.count_flops = job, device, info, bool(count_flops)
        self.sections: dict[str, Section] = {}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def timed(self, section: str, images: int, units: int = 1) -> Iterator[None]:
        """Time a block doing ``units`` units of work on ``images`` images each."""
        s = self.sections.setdefault(section, Section())
        s.images_per_unit = max(s.images_per_unit, images)
        self._sync()
        t0 = time.perf_counter()
        yield
        self._sync()
        s.seconds += time.perf_counter() - t0
        s.image_units += units * images
        s.units += units

    def count_one(self, section: str, work: Callable[[], Any], units: int = 1) -> Any:
        """Count the FLOPs of ``work``, one image through ``units`` units of ``section`` (a sampler step, an encoding,
        an extraction), run once more apart from the timed blocks; returns what ``work`` returns. For sampling and
        extraction (eval mode, no autograd): a training step is counted on the meta device instead (``count_step``),
        since under a dispatch mode dropout draws differently, which would change the run's bits."""
        if not self.count_flops:
            raise RuntimeError(f"{self.job}: count_one({section!r}) on a meter that counts no FLOPs")
        s = self.sections.setdefault(section, Section())
        with FlopCounterMode(display=False) as counter:
            out = work()
        s.flops = (s.flops or 0.0) + float(counter.get_total_flops())
        s.counted_images += 1
        s.flops_image_units += units
        return out

    def add_count(self, section: str, images: int, flops: float, saved_bytes: float, units: int = 1) -> None:
        """Record a count made elsewhere (``meta_counts``) for ``units`` units on ``images`` images each."""
        s = self.sections.setdefault(section, Section())
        s.flops = (s.flops or 0.0) + flops
        s.saved_bytes = (s.saved_bytes or 0.0) + saved_bytes
        s.counted_images += images
        s.flops_image_units += units * images

    def counting(self, section: str) -> bool:
        """Whether ``section`` is still to be counted: this meter counts FLOPs and has not counted it yet
        (``count_one`` once, time every block)."""
        return self.count_flops and (section not in self.sections or self.sections[section].flops is None)

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
            "flops_counted": self.count_flops,
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
    also keeps do not grow with the batch). Nothing when ``meter`` counts no FLOPs."""
    if not meter.count_flops:
        return
    fwd, bwd, saved = meta_counts(build, loss_at(batch))
    per_image = meta_counts(build, loss_at(batch + 1))[2] - saved
    meter.add_count(section, batch, fwd + bwd, per_image * batch)

"""Progress lines with rate and ETA in a long job's log, in the one format ``core.status`` reads back.

A stage makes a ``Progress(stage, total, unit)`` and calls ``update(done)`` as often as it likes (per step is fine:
it only reads the clock); a line is printed when ``INTERVAL_S`` has passed since the last one, and at the end::

    [progress] train 1200/20000 steps | 35.2 steps/s | elapsed 0:00:34 | eta 0:08:56

The rate is that of the window since the previous line (the recent rate, not the average since the start), so the
ETA follows a job that slows down or speeds up. Free of heavy imports (``core.status`` parses these lines).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

INTERVAL_S = 30.0
LINE_RE = re.compile(
    r"^\[progress\] (?P<stage>\S+) (?P<done>\d+)/(?P<total>\d+) (?P<unit>\S+)"
    r" \| (?P<rate>[0-9.]+(?:e[+-]?\d+)?|-) \S+/s \| elapsed (?P<elapsed>[0-9:]+) \| eta (?P<eta>[0-9:]+|-)$"
)


def clock(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded): 0:08:56, 27:03:00."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def seconds_of(text: str) -> int:
    """The inverse of ``clock``."""
    h, m, s = (int(v) for v in text.split(":"))
    return 3600 * h + 60 * m + s


def rate_text(rate: float) -> str:
    """A rate to three significant digits, without an exponent from 0.001 to any size: 0.0123, 35.2, 2140."""
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"


def line(stage: str, done: int, total: int, unit: str, rate: float | None, elapsed: float) -> str:
    """One progress line; ``rate`` None (nothing measured yet) prints ``-`` for the rate and the ETA."""
    if rate is None or rate <= 0:
        speed, eta = "-", "-"
    else:
        speed, eta = rate_text(rate), clock((total - done) / rate)
    return f"[progress] {stage} {done}/{total} {unit} | {speed} {unit}/s | elapsed {clock(elapsed)} | eta {eta}"


@dataclass(frozen=True)
class Reading:
    """A parsed progress line: ``rate`` in units per second, ``eta_s`` and ``elapsed_s`` in seconds."""

    stage: str
    done: int
    total: int
    unit: str
    rate: float | None
    elapsed_s: int
    eta_s: int | None


def parse(text: str) -> Reading | None:
    """The reading of a progress line, or None if ``text`` is not one."""
    m = LINE_RE.match(text.strip())
    if m is None:
        return None
    return Reading(
        m["stage"],
        int(m["done"]),
        int(m["total"]),
        m["unit"],
        None if m["rate"] == "-" else float(m["rate"]),
        seconds_of(m["elapsed"]),
        None if m["eta"] == "-" else seconds_of(m["eta"]),
    )


def last_reading(lines: list[str]) -> Reading | None:
    """The newest progress line among ``lines`` (a log's tail), parsed."""
    for text in reversed(lines):
        if text.startswith("[progress]") and (r := parse(text)) is not None:
            return r
    return None


class Progress:
    """Print a progress line every ``interval`` seconds of ``update`` calls, and when ``done`` reaches ``total``.

    ``start`` is where a resumed job starts (its rate counts only the work done by this process)."""

    def __init__(
        self,
        stage: str,
        total: int,
        unit: str,
        start: int = 0,
        interval: float = INTERVAL_S,
        out: TextIO | None = None,
        now: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self.stage, self.total, self.unit, self.interval = stage, int(total), unit, interval
        self.out, self.now, self.enabled = out, now, enabled
        self.t0 = self.t_last = now()
        self.done_last = int(start)

    def update(self, done: int) -> bool:
        """Record that ``done`` units are done; returns whether a line was printed."""
        t = self.now()
        if not self.enabled or (t - self.t_last < self.interval and done < self.total):
            return False
        span = t - self.t_last
        rate = (done - self.done_last) / span if span > 0 and done > self.done_last else None
        print(line(self.stage, done, self.total, self.unit, rate, t - self.t0), file=self.out or sys.stdout, flush=True)
        self.t_last, self.done_last = t, done
        return True


def extract(
    extractor: Any, images: Any, batch_size: int, device: Any, ctx: Any, stage: str, meter: Any = None
) -> tuple[Any, Any]:
    """``extractor.extract`` (core.features) of ``images`` with progress lines: batch by batch in one process (the
    same batches, so the same features, as one call), in one call under torchrun (each rank extracts its part).
    A ``core.costs.Meter`` times every batch and counts one image apart (section ``extract``)."""
    import contextlib

    n = int(images.shape[0])
    progress = Progress(stage, n, "images")
    if ctx is not None and ctx.enabled:
        out = extractor.extract(images, batch_size=batch_size, device=device, ctx=ctx)
        progress.update(n)
        return out
    import numpy as np

    feats, logits = [], []
    if meter and n and meter.counting("extract"):
        meter.count_one("extract", lambda: extractor.extract(images[:1], batch_size=1, device=device))
    for i in range(0, n, batch_size):
        m = min(i + batch_size, n) - i
        with meter.timed("extract", m) if meter else contextlib.nullcontext():
            f, lg = extractor.extract(images[i : i + m], batch_size=batch_size, device=device)
        feats.append(f)
        logits.append(lg)
        progress.update(min(i + batch_size, n))
    return np.concatenate(feats), np.concatenate(logits)

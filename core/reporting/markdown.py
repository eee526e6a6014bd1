"""Markdown building blocks of the report: a table from headers and rows, and the one way numbers are shown."""

from __future__ import annotations

import math
from collections.abc import Sequence

from core.stats import Interval


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; every row must have as many cells as there are headers."""
    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"table row {i} has {len(row)} cells for {len(headers)} headers: {row}")

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def number(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def with_interval(iv: Interval | None, estimate: float | None = None, digits: int = 2) -> str:
    """``10.33 [9.81, 10.85]``: the estimate and its 95% interval (the estimate alone when there is none)."""
    if iv is None:
        return number(estimate, digits) if estimate is not None else "–"
    return f"{iv.estimate:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def signed_interval(iv: Interval, digits: int = 2) -> str:
    return f"{iv.estimate:+.{digits}f} [{iv.low:+.{digits}f}, {iv.high:+.{digits}f}]"

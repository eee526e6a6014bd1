"""The report's further metrics per row — KID, precision and recall — with 95% t intervals over replicates where a
row has them, and the bare value of a single run (no "±": KID's spread over subsets of one sample set, which
``core.metrics`` returns, is not an interval for the row, and precision/recall have no spread of their own)."""

from __future__ import annotations

from typing import Any

from core import stats
from core.reporting.markdown import md_table, number, with_interval
from core.reporting.results import Row
from core.reporting.tables import main_rows

#: metrics-file key and table header of each further metric
OTHER = {"kid_mean": "KID ↓ (×10³)", "precision": "precision ↑", "recall": "recall ↑"}
SCALE = {"kid_mean": 1e3, "precision": 1.0, "recall": 1.0}


def cell(values: list[float], digits: int = 3) -> str:
    """Mean and 95% t interval over R ≥ 2 replicate values, the value alone for one run."""
    if len(values) >= 2:
        return with_interval(stats.t_interval(values), digits=digits)
    return number(values[0], digits) if values else "–"


def other_metrics_table(study: dict[str, Any], rows: dict[str, Row]) -> str:
    names = [n for n in main_rows(study, rows) if all(k in rows[n].first.m for k in OTHER)]
    if not names:
        return ""
    out = []
    for n in names:
        runs = rows[n].reported()
        out.append(
            [n, rows[n].step_label(), len(runs)] + [cell([SCALE[k] * float(r.m[k]) for r in runs]) for k in OTHER]
        )
    return (
        "\n## Further metrics\n\n"
        + md_table(["row", "step", "replicates", *OTHER.values()], out)
        + "\nAt the reported step of each row (from the fresh draw where a row selected its checkpoint). A row with "
        "R ≥ 2 replicates shows the mean and a 95% Student t interval over them; a single run shows its value without "
        "an interval (KID's standard deviation over subsets of one sample set, `kid_subset_sd` in `table.csv`, "
        "measures the subsets, not the row; precision and recall (k-NN manifolds) have no interval of their own).\n"
    )

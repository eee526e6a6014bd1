"""Benchmark: planning time of the full study (``snakemake -n`` of full-a and full-b, 355 jobs).

    python bench/bench_dag.py [--repeat 3] [--out bench/results-dag-cpu.json]

Planning needs the datasets' folders (they are checked at planning time) and the Inception weights' path, not
their contents: the script lays out stand-in trees of empty files in a temporary folder, points a config overlay
at them, and times ``python -m snakemake -n --quiet`` from process start to exit (interpreter start and
Snakefile parsing included). Best and median of ``--repeat`` runs, with the job count read from the plan.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import snakemake
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.provenance import code_version, write_json  # noqa: E402


def stand_in(root: Path) -> Path:
    """ImageNet-100- and SYSU-shaped folder trees (100 and 5 classes, one empty file each) and an overlay."""
    for split in ("train", "validation"):
        for c in range(100):
            (root / "imagenet100" / split / f"n{c:08d}").mkdir(parents=True)
            (root / "imagenet100" / split / f"n{c:08d}" / "x.JPEG").touch()
    for c in ("airplane", "bicycle", "boat", "car", "motorbike"):
        (root / "sysu" / c / "images").mkdir(parents=True)
        (root / "sysu" / c / "images" / "x.jpg").touch()
    (root / "inception.pth").touch()
    overlay = {
        "results_dir": str(root / "results"),
        "studies_to_run": ["full-a", "full-b"],
        "datasets": {"imagenet100": {"path": str(root / "imagenet100")}, "sysu-shapes": {"path": str(root / "sysu")}},
        "metrics": {"inception_weights": str(root / "inception.pth")},
    }
    path = root / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def plan(overlay: Path, quiet: bool) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "config.yaml", str(overlay)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + (["--quiet", "rules"] if quiet else []), cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    return seconds, proc.stdout + proc.stderr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overlay = stand_in(Path(tmp))
        _, text = plan(overlay, quiet=False)
        jobs = int(re.search(r"^total\s+(\d+)$", text, re.M)[1])
        times = [plan(overlay, quiet=True)[0] for _ in range(args.repeat)]
    result = {
        "benchmark": "full-study planning time (snakemake -n, full-a + full-b)",
        "jobs": jobs,
        "seconds_best": min(times),
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "versions": {"python": platform.python_version(), "snakemake": snakemake.__version__},
        "code_version": code_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(
        f"full study: {jobs} jobs planned in {min(times):.2f} s "
        f"(best of {args.repeat}; median {result['seconds_median']:.2f} s)"
    )
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()

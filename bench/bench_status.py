"""Benchmark: the time of ``python -m core.status`` (one screen of every job's state) on the demo's plan and on
the full study's.

    python bench/bench_status.py [--repeat 5] [--results DIR] [--out bench/results-status-cpu.json]

Times the command from process start to exit (interpreter start, config parsing, planning and reading the files
included), ``--no-write``, ``--repeat`` times each: the demo (config.yaml's default local studies, over
``--results`` if given, else over an empty results folder) and the full study (full-a + full-b, 363 jobs, over
an empty folder with stand-in Inception weights). Median and best of the runs, the machine's load before and
after, and the number of jobs listed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.provenance import code_version, write_json  # noqa: E402


def status(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the process) and the screen."""
    cmd = [sys.executable, "-m", "core.status", "--no-write", "--all", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, proc.stdout


def measure(args: list[str], repeat: int) -> dict:
    load_before = os.getloadavg()
    *_, text = status(args)  # a first run, untimed (file caches)
    runs = [status(args)[:2] for _ in range(repeat)]
    times = [wall for wall, _ in runs]
    return {
        "jobs_listed": sum(int(x.split(" jobs:")[0].rsplit(" ", 1)[-1]) for x in text.splitlines() if " jobs:" in x),
        "seconds_median": statistics.median(times),
        "cpu_seconds_median": statistics.median(cpu for _, cpu in runs),
        "seconds_best": min(times),
        "seconds_all": times,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--results", default=None, help="a demo results folder to read (default: an empty one)")
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "inception.pth").touch()
        full = Path(tmp) / "full.yaml"
        full.write_text(
            yaml.safe_dump(
                {
                    "results_dir": f"{tmp}/full",
                    "studies_to_run": ["full-a", "full-b"],
                    "metrics": {"inception_weights": f"{tmp}/inception.pth"},
                }
            )
        )
        demo = ["--config", f"results_dir={args.results or tmp + '/demo'}"]
        result = {
            "benchmark": "python -m core.status --no-write --all, process start to exit",
            "demo": measure(demo, args.repeat),
            "full": measure(["--configfile", str(full)], args.repeat),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "versions": {"python": platform.python_version()},
            "code_version": code_version(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    for name in ("demo", "full"):
        r = result[name]
        print(
            f"{name}: {r['jobs_listed']} jobs in {r['seconds_median']:.2f} s (median of {args.repeat}; best "
            f"{r['seconds_best']:.2f} s; CPU {r['cpu_seconds_median']:.2f} s; "
            f"load {r['load_avg_before'][0]:.1f} → {r['load_avg_after'][0]:.1f})"
        )
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()

"""Benchmark: memory per rank of the training loader on a stand-in of ImageNet-100 at its real size (issue 21).

    python bench/bench_data_memory.py [--images 126689] [--size 128] [--batch 32] [--batches 200]
                                      [--procs 1 4] [--variants old new mmap] [--old-ref 7d1676d]
                                      [--data /tmp/in100-standin.h5] [--keep]
                                      [--out bench/results-data-memory-cpu.json]

Writes a sealed HDF5 file in the project's layout (``core.data.create_split`` + ``seal``; synthetic bytes, one
train split of ``--images`` images at ``--size``², the real ImageNet-100 train count by default) and, for 1 and
4 processes at once, starts that many ranks, each of which builds the loader for its share of the global batch
and draws ``--batches`` batches, as ``core.stages.train`` does:

- ``old``: ``core/data.py`` as of ``--old-ref`` (the split read whole into each process and checksummed from a
  second copy), imported from ``git show`` into a temporary module; each rank reads the global batch and keeps
  its share, as ``make_batch`` did;
- ``new``: today's ``core.data.ImageBatches(share=...)`` (rows read at their file offsets from the page cache,
  the checksum read in blocks);
- ``mmap``: the same loader gathering rows from a read-only memory map of the file instead (``MappedRows``
  here, the alternative ``core.rowfile`` explains it did not take).

Then one process builds ``core.training.Validation`` as every rank of ``core.stages.train`` does (full-a's
early-stopping batch of 5,000 val images) and reports the private memory it adds.

Each rank reports its peak RSS (``VmHWM``), its peak anonymous (private) memory (``RssAnon`` sampled every
5 ms), its file-backed resident memory and proportional set size (PSS, shared pages divided among the processes
that map them) at the end, the time to build the loader (open, read, verify) and batches/s. A setting whose
ranks would not fit in this machine's available memory is skipped and says so. The file is deleted at the end
unless ``--keep`` (then an existing file is reused).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import mmap
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (e.g. ``VmHWM``, ``RssAnon``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def pss_kib() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise KeyError("Pss")


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    raise KeyError("MemAvailable")


def write_standin(path: Path, n: int, size: int, n_val: int) -> float:
    """A sealed dataset file of ``n`` train and ``n_val`` val synthetic images (each block of 1024 rows distinct);
    returns seconds."""
    from core import data

    t0 = time.perf_counter()
    base = np.random.default_rng(0).integers(0, 256, (1024, size, size, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        for split, count in (("train", n), ("val", n_val)):
            images, labels = data.create_split(f, split, count, size)
            for k, i in enumerate(range(0, count, 1024)):
                m = min(1024, count - i)
                images[i : i + m] = base[:m] + np.uint8(k % 256)
                labels[i : i + m] = np.arange(i, i + m) % 100
        data.write_root_attrs(f, "dataset", size, [f"c{k}" for k in range(100)], {"bench": "stand-in"})
        data.seal(f)
    return time.perf_counter() - t0


def old_data_module(ref: str) -> Path:
    """``core/data.py`` as of git ``ref``, written to a temporary file."""
    text = subprocess.run(["git", "show", f"{ref}:core/data.py"], cwd=ROOT, check=True, capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_data.py"
    path.write_bytes(text)
    return path


class MappedRows:
    """Rows gathered from a read-only memory map of the file at ``core.rowfile.RowFile``'s row offsets."""

    def __init__(self, rows: Any) -> None:
        self.rows = rows
        with open(rows.path, "rb") as fh:
            self.mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        # every byte offset of the file as the start of a row, so that one fancy index gathers a batch
        shape, dtype = (len(self.mm) - rows.row_bytes + 1,), np.dtype((np.void, rows.row_bytes))
        self.starts = np.ndarray(shape, dtype, self.mm, 0, (1,))

    def gather(self, idx: np.ndarray) -> np.ndarray:
        out = self.starts[self.rows.row_offsets[idx]].view(self.rows.dtype)
        return out.reshape(len(idx), *self.rows.shape[1:])


def validation(args: argparse.Namespace) -> dict[str, Any]:
    """The private memory of ``core.training.Validation`` as ``core.stages.train`` builds it on every rank: the
    fixed early-stopping batch of ``--val-images`` images (full-a: 5,000), with its timesteps and noise."""
    from core import training
    from core.diffusion import GaussianDiffusion

    diffusion = GaussianDiffusion.from_spec(
        {"schedule": "linear", "timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    )
    before = status_kib("RssAnon")
    val = training.Validation(str(args.data), "images", args.val_images, diffusion, None, None, 0)
    tensors = val.rows.nbytes + sum(t.numel() * t.element_size() for t in (val.labels, val.t))
    return {
        "images": len(val.rows),
        "private_added_gib": (status_kib("RssAnon") - before) / 2**20,
        "tensors_gib": tensors / 2**30,
        "peak_rss_gib": status_kib("VmHWM") / 2**20,
    }


def rank(args: argparse.Namespace) -> dict[str, Any]:
    """One rank: build the loader for its share, draw batches; its memory and times."""
    import torch

    peak_anon = [status_kib("RssAnon")]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_anon[0] = max(peak_anon[0], status_kib("RssAnon"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    share = slice(args.rank * args.batch // args.world, (args.rank + 1) * args.batch // args.world)
    gen = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    if args.variant == "old":
        spec = importlib.util.spec_from_file_location("old_data", args.old_module)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        loader = old.ImageBatches(args.data, "train", args.batch, gen)
    else:
        from core import data

        loader = data.ImageBatches(args.data, "train", args.batch, gen, share=share)
        if args.variant == "mmap":
            loader.rows_file.gather = MappedRows(loader.rows_file).gather
    built = time.perf_counter() - t0
    anon_built = status_kib("RssAnon")
    times, rows = [], 0
    for _ in range(args.batches):
        t = time.perf_counter()
        images, labels = loader.next()
        if args.variant == "old":
            images, labels = images[share], labels[share]
        times.append(time.perf_counter() - t)
        rows += len(images)
    stop.set()
    sampler.join()
    peak_anon[0] = max(peak_anon[0], status_kib("RssAnon"))
    out = {
        "rank": args.rank,
        "rows_per_batch": rows // args.batches,
        "rows_read_from_file": bool(getattr(loader, "rows_file", None)),
        "build_s": built,
        "batches_per_s": args.batches / sum(times),
        "ms_per_batch_median": 1000 * float(np.median(times)),
        "peak_rss_gib": status_kib("VmHWM") / 2**20,
        "peak_anon_gib": peak_anon[0] / 2**20,
        "anon_after_build_gib": anon_built / 2**20,
        "file_rss_end_gib": status_kib("RssFile") / 2**20,
        "pss_end_gib": pss_kib() / 2**20,
    }
    loader.close()
    return out


def run_setting(args: argparse.Namespace, variant: str, world: int, old_module: Path) -> dict[str, Any]:
    split_gib = args.images * args.size * args.size * 3 / 2**30
    need = world * split_gib * (2.1 if variant == "old" else 0.2)  # old: the split and its checksum copy
    available = mem_available_gib()
    setting: dict[str, Any] = {"variant": variant, "processes": world, "mem_available_gib_at_start": available}
    if need > available - 2:
        setting["skipped"] = f"needs about {need:.1f} GiB of private memory, {available:.1f} GiB available"
        print(f"{variant} × {world}: skipped ({setting['skipped']})", flush=True)
        return setting
    cmd = [sys.executable, __file__, "--rank-of", str(world), "--variant", variant, "--data", str(args.data)]
    cmd += ["--batch", str(args.batch), "--batches", str(args.batches), "--old-module", str(old_module)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--rank", str(r)], stdout=subprocess.PIPE, env=env) for r in range(world)]
    ranks = [json.loads(p.communicate()[0]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{variant} × {world}: a rank failed")
    setting.update(wall_s=time.perf_counter() - t0, ranks=ranks, load_1min_at_end=os.getloadavg()[0])
    for key in ("peak_rss_gib", "peak_anon_gib", "pss_end_gib", "build_s", "batches_per_s"):
        setting[f"max_{key}"] = max(r[key] for r in ranks)
    print(
        f"{variant} × {world}: peak RSS {setting['max_peak_rss_gib']:.2f} GiB, peak anon "
        f"{setting['max_peak_anon_gib']:.2f} GiB, PSS at end {setting['max_pss_end_gib']:.2f} GiB per rank (max), "
        f"build {setting['max_build_s']:.1f} s, {min(r['batches_per_s'] for r in ranks):.0f}–"
        f"{setting['max_batches_per_s']:.0f} batches/s",
        flush=True,
    )
    return setting


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=126689, help="train images (ImageNet-100's train split: 126,689)")
    p.add_argument("--size", type=int, default=128, help="image size (full-a: 128)")
    p.add_argument("--batch", type=int, default=32, help="global batch (full-a: 32)")
    p.add_argument("--batches", type=int, default=200, help="batches each rank draws")
    p.add_argument("--procs", type=int, nargs="*", default=[1, 4], help="ranks at once (none: validation only)")
    p.add_argument("--val-images", type=int, default=5000, help="val images (ImageNet-100's; full-a validates 5,000)")
    p.add_argument("--variants", nargs="+", default=["old", "new", "mmap"], choices=["old", "new", "mmap"])
    p.add_argument("--old-ref", default="7d1676d", help="git revision of the old core/data.py")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "in100-standin.h5")
    p.add_argument("--keep", action="store_true", help="keep the data file (reused when it exists)")
    p.add_argument("--out", default="bench/results-data-memory-cpu.json")
    p.add_argument("--rank-of", type=int, default=0, help=argparse.SUPPRESS)  # worker mode: world size
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--variant", default="new", help=argparse.SUPPRESS)
    p.add_argument("--old-module", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank_of:
        args.world = args.rank_of
        print(json.dumps(validation(args) if args.variant == "validation" else rank(args)))
        return
    from core.provenance import code_version, write_json

    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "mem_total_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "load_1min_at_start": os.getloadavg()[0],
            "busiest_processes_at_start": subprocess.run(
                ["ps", "-eo", "pcpu,rss,comm", "--sort=-pcpu"], capture_output=True, text=True
            ).stdout.splitlines()[:6],
        },
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "h5py": h5py.__version__},
        "code_version": code_version(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "rank_of"},
        "split_gib": args.images * args.size * args.size * 3 / 2**30,
    }
    if not args.data.exists():
        results["write_s"] = write_standin(args.data, args.images, args.size, args.val_images)
        print(f"wrote {args.data} ({args.data.stat().st_size / 2**30:.2f} GiB) in {results['write_s']:.0f} s")
    old_module = old_data_module(args.old_ref)
    try:
        results["settings_run"] = [
            run_setting(args, variant, world, old_module) for world in args.procs for variant in args.variants
        ]
        cmd = [sys.executable, __file__, "--rank-of", "1", "--variant", "validation", "--data", str(args.data)]
        out = subprocess.run([*cmd, "--val-images", str(args.val_images)], check=True, capture_output=True, text=True)
        results["validation"] = json.loads(out.stdout)
        print(
            f"validation batch of {results['validation']['images']} images: "
            f"{results['validation']['private_added_gib']:.2f} GiB private per rank",
            flush=True,
        )
    finally:
        old_module.unlink()
        if not args.keep:
            args.data.unlink()
    results["machine"]["load_1min_at_end"] = os.getloadavg()[0]
    write_json(args.out, results)


if __name__ == "__main__":
    main()

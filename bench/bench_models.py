"""Benchmark: training-step and sampling throughput of our denoisers, Inception feature extraction, the speed
levers (bf16 autocast, TF32, channels-last, AdamW implementation, torch.compile, batched vs two-forward
classifier-free guidance) and, when ``diffusers`` is importable, matched peers side by side.

    python bench/bench_models.py [--device auto|cpu|cuda] [--out bench/results-models.json] [--quick] [--compile]

Peers are optional and never a dependency of the workflow: install them in a separate venv that reuses the
system torch (``bench/requirements-peers.txt``) and run the script with that venv's python. Without diffusers
the peer rows are skipped with a note. Nothing is downloaded at run time (every network is randomly
initialised; throughput does not depend on the weights).

A training step is what ``core.stages.train`` does per batch minus logging, EMA and clipping: the diffusion loss
(``GaussianDiffusion.training_loss``, forward), backward, and an AdamW step. Throughput is the median over the
timed steps after warm-up. FLOPs are counted once per model with ``torch.utils.flop_counter.FlopCounterMode``
on meta tensors (no compute), so achieved FLOP/s and, on GPUs of known peak, MFU come with every row.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import functools
import gc
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the peers never reach a hub from here
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config
from core.config import sampler_spec
from core.diffusion import GaussianDiffusion
from core.features import Extractor
from core.models import EMA, build_model
from core.nets import inception
from core.provenance import write_json
from core.sampling import sample
from core.training import Levers, train_step

# Dense bf16 tensor-core peaks (FLOP/s, 2 per multiply-add) for the MFU column; --peak-tflops overrides.
PEAK_BF16_FLOPS = {"H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989.4e12, "H200": 989.4e12, "GH200": 989.4e12}
PEAK_BF16_FLOPS |= {"A100": 312e12, "L40S": 362e12}
FLOPS_METHOD = (
    "torch.utils.flop_counter.FlopCounterMode over one training step (training_loss forward + backward) at "
    "batch 1 on meta tensors, times the batch; counts matmul, convolution and attention FLOPs (2 per "
    "multiply-add), not norms, elementwise ops or the optimizer"
)
CPU_MEMORY_METHOD = (
    "peak RSS growth: /proc/self/statm resident size sampled every 2 ms during the measurement minus the RSS "
    "at its start (after gc.collect and malloc_trim); covers weights, gradients, AdamW state and activations"
)
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated during the measurement minus the allocation at its start"
DIT_PEER_NOTE = (
    "diffusers' DiT embeds the timestep and label in every block (each AdaLayerNormZero has its own timestep MLP "
    "and label table); ours embeds them once: the extra peer parameters are depth - 1 copies of that embedder "
    "(extra_params_in_embedder_copies); the counted FLOPs differ only by those embedders' work"
)
LEVERS = ("bf16", "tf32", "channels_last", "fused_adamw", "compile")  # core.training.Levers
TRAIN_SPEC = config.fill({"lr": 1e-4, "optimizer": {"weight_decay": 1e-5}}, config.defs_ref("train"))
DIFFUSION_SPEC = config.fill({"schedule": "cosine", "timesteps": 1000}, config.defs_ref("diffusion"))


# ----------------------------------------------------------------------------------------------- models


@dataclass
class Case:
    """One denoiser to measure: our spec for ``build_model`` and, when one exists, a matched diffusers peer."""

    name: str
    label: str
    spec: dict[str, Any]
    image_size: int
    channels: int
    num_classes: int
    batch: dict[str, int]  # per device kind: cpu, cuda
    steps: dict[str, tuple[int, int, int]]  # per device kind: warm-up steps, timed steps per round, rounds
    levers: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"cpu": LEVERS, "cuda": LEVERS})
    peer_on: tuple[str, ...] = ("cpu", "cuda")  # device kinds on which the diffusers peer is measured
    peer_note: str = ""

    @property
    def backbone(self) -> str:
        return self.spec["backbone"]

    def build(self) -> nn.Module:
        return build_model(self.spec, self.image_size, self.channels, self.num_classes)


def unet_spec(base: int, mult: list[int], blocks: int, attn: list[int], heads: int, groups: int, drop: float) -> dict:
    net = {"base_channels": base, "channel_mult": mult, "num_res_blocks": blocks, "attention_resolutions": attn}
    return {"backbone": "unet", "net": net | {"num_heads": heads, "norm_groups": groups, "dropout": drop}}


def dit_spec(hidden: int, depth: int, heads: int, patch: int) -> dict:
    return {"backbone": "dit", "net": {"hidden_size": hidden, "depth": depth, "num_heads": heads, "patch_size": patch}}


def training_cases(quick: bool, study_b_dims: list[int]) -> list[Case]:
    """The measured configurations (the reference's sizes, or tiny stand-ins of the same layouts with --quick).

    On the CPU the big models run a few steps at a small batch, with only the bf16 lever or none, to keep the
    whole run near ten minutes on two cores; every lever is measured at the demo sizes. On the CPU all
    settings of a model (ours, levers, peer) are timed in interleaved rounds, so a shared machine's noise hits
    them alike.
    """
    if quick:
        tiny, steps = {"cpu": 4, "cuda": 4}, {"cpu": (1, 1, 1), "cuda": (1, 1, 1)}
        layouts = [
            ("unet-a", "UNet, Study A layout (tiny)", unet_spec(16, [1, 2, 2, 4], 1, [8, 4], 4, 8, 0.1), 32, 3, 0),
            ("unet-demo", "UNet, demo size", unet_spec(32, [1, 2, 2], 1, [4], 2, 8, 0.0), 16, 3, 0),
            ("dit-b2", "DiT-B/2 layout (tiny)", dit_spec(64, 2, 4, 2), 8, 4, 10),
        ]
        return [Case(*layout, batch=tiny, steps=steps) for layout in layouts]
    big = {"cpu": (1, 1, 3), "cuda": (5, 20, 1)}
    small = {"cpu": (2, 3, 4), "cuda": (10, 50, 1)}
    gpu_only = {"cpu": (), "cuda": LEVERS}
    study_a = Case(
        name="unet-a",
        label="UNet, Study A (128² pixel, base 128, mult 1-2-2-4, attn 32/16 + middle)",
        spec=unet_spec(128, [1, 2, 2, 4], 2, [32, 16], 4, 32, 0.1),
        image_size=128,
        channels=3,
        num_classes=0,
        batch={"cpu": 2, "cuda": 32},
        steps=big,
        levers=gpu_only,
        peer_note="heads: ours 4 at every attention (64-d at 32², 128-d at 16² and middle), diffusers 64-d heads "
        "(4 at 32², 8 at 16² and middle): same FLOPs",
    )
    study_b = [
        Case(
            name=f"unet-b{d}",
            label=f"UNet, Study B dim {d} (64² pixel, mult 1-2-4-8, attn 8 + middle)",
            spec=unet_spec(d, [1, 2, 4, 8], 2, [8], 4, 32, 0.0),
            image_size=64,
            channels=3,
            num_classes=0,
            batch={"cpu": 4, "cuda": 64},
            steps=big,
            levers={"cpu": ("bf16",), "cuda": LEVERS},
        )
        for d in study_b_dims
    ]
    demo_unet = Case(
        name="unet-demo",
        label="UNet, demo (16² pixel, base 32, mult 1-2-2, attn 4 + middle)",
        spec=unet_spec(32, [1, 2, 2], 1, [4], 2, 8, 0.0),
        image_size=16,
        channels=3,
        num_classes=0,
        batch={"cpu": 32, "cuda": 128},
        steps=small,
    )
    dit_b2 = Case(
        name="dit-b2",
        label="DiT-B/2 (32×32×4 latents, 1000 classes)",
        spec={"backbone": "dit", "net": {"config": "DiT-B/2"}},
        image_size=32,
        channels=4,
        num_classes=1000,
        batch={"cpu": 4, "cuda": 128},
        steps=big,
        levers={"cpu": ("bf16",), "cuda": LEVERS},
    )
    dit_ref = Case(
        name="dit-ref12",
        label="DiT, reference depth 12 / width 768 / 12 heads, patch 2 (32×32×3, 100 classes)",
        spec={"backbone": "dit", "net": {"config": "ref-12"}},
        image_size=32,
        channels=3,
        num_classes=100,
        batch={"cpu": 4, "cuda": 32},
        steps={"cpu": (1, 1, 2), "cuda": (5, 20, 1)},
        levers=gpu_only,
    )
    demo_dit = Case(
        name="dit-demo",
        label="DiT, demo (8×8×3, hidden 72, depth 12, 6 heads, patch 2, 5 classes)",
        spec=dit_spec(72, 12, 6, 2),
        image_size=8,
        channels=3,
        num_classes=5,
        batch={"cpu": 32, "cuda": 128},
        steps=small,
    )
    return [study_a, *study_b, demo_unet, dit_b2, dit_ref, demo_dit]


class DiffusersUNet(nn.Module):
    """``diffusers.UNet2DModel`` behind our denoiser interface ``model(x, t, y=None)``."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.net, self.num_classes = net, num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and y is None:
            y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
        return self.net(x, t, class_labels=y, return_dict=False)[0]


class DiffusersDiT(nn.Module):
    """``diffusers.DiTTransformer2DModel`` behind our denoiser interface (``y=None`` is the null class)."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.net, self.num_classes = net, num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
        return self.net(x, timestep=t, class_labels=y, return_dict=False)[0]


def build_peer(case: Case, diffusers: Any) -> nn.Module:
    """The diffusers model configured like ``case`` (same widths, blocks, attention placement, groups, heads)."""
    classes = case.num_classes
    net = dict(case.spec["net"])
    if case.backbone == "unet":
        widths = [net["base_channels"] * m for m in net["channel_mult"]]
        attn, res = set(net["attention_resolutions"]), case.image_size
        down, up = [], []
        for level in range(len(widths)):
            has_attn = (res >> level) in attn
            down.append("AttnDownBlock2D" if has_attn else "DownBlock2D")
            up.insert(0, "AttnUpBlock2D" if has_attn else "UpBlock2D")
        attn_widths = [w for level, w in enumerate(widths) if (res >> level) in attn]
        # ours has num_heads heads everywhere; diffusers one head width: match the first attention level's
        head_dim = (attn_widths[0] if attn_widths else widths[-1]) // net["num_heads"]
        unet = diffusers.UNet2DModel(
            sample_size=case.image_size,
            in_channels=case.channels,
            out_channels=case.channels,
            block_out_channels=tuple(widths),
            layers_per_block=net["num_res_blocks"],
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            attention_head_dim=head_dim,
            norm_num_groups=net["norm_groups"],
            dropout=net["dropout"],
            flip_sin_to_cos=True,
            freq_shift=0,
            num_class_embeds=classes + 1 if classes else None,
        )
        return DiffusersUNet(unet, classes)
    if not classes:
        raise ValueError("diffusers' DiT is class-conditional only (adaLN-Zero on timestep + label)")
    if "config" in net:
        from core.nets.zoo import DIT_CONFIGS

        net = dict(DIT_CONFIGS[net["config"]])
    dit = diffusers.DiTTransformer2DModel(
        num_attention_heads=net["num_heads"],
        attention_head_dim=net["hidden_size"] // net["num_heads"],
        in_channels=case.channels,
        out_channels=case.channels,
        num_layers=net["depth"],
        sample_size=case.image_size,
        patch_size=net["patch_size"],
        num_embeds_ada_norm=classes,
    )
    return DiffusersDiT(dit, classes)


def count_params(build: Callable[[], nn.Module]) -> int:
    """Parameters of the model ``build`` makes, built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def train_flops_per_image(build: Callable[[], nn.Module], case: Case) -> float | None:
    """FLOPs of one training step per image, counted on meta tensors (no compute); None if that fails."""
    diffusion = GaussianDiffusion.from_spec(DIFFUSION_SPEC)
    try:
        with torch.device("meta"):
            model = build()
            x = torch.zeros(1, case.channels, case.image_size, case.image_size)
            t = torch.zeros(1, dtype=torch.long)
            y = torch.zeros(1, dtype=torch.long) if case.num_classes else None
        with FlopCounterMode(display=False) as counter:
            diffusion.training_loss(model, x, y, t=t, noise=torch.zeros_like(x)).backward()
        return float(counter.get_total_flops())
    except Exception as err:  # a peer that cannot be built on meta tensors: no FLOPs, the timing still runs
        print(f"  (FLOPs not counted for {case.name}: {type(err).__name__}: {err})")
        return None


# ----------------------------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


QUIET_SHARE = 0.1  # a step counts as quiet when other processes used under 10 % of the machine's CPU time


class CpuMonitor:
    """How busy *other* processes keep the machine: from /proc/stat (all CPUs) minus /proc/self/stat (this
    process), as a share of the machine's CPU time; None where /proc is absent. One jiffy is 10 ms, so the share
    of intervals under ~0.2 s is coarse."""

    def __init__(self) -> None:
        self.ok = os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat")
        self.tick = os.sysconf("SC_CLK_TCK") if self.ok else 100
        self.cpus = os.cpu_count() or 1

    def snapshot(self) -> tuple[float, int, int]:
        """(wall seconds, busy jiffies of all CPUs, jiffies of this process)."""
        if not self.ok:
            return time.perf_counter(), 0, 0
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return time.perf_counter(), busy, int(own[11]) + int(own[12])  # utime + stime

    def others_share(self, start: tuple[float, int, int], end: tuple[float, int, int]) -> float | None:
        if not self.ok or end[0] <= start[0]:
            return None
        others = (end[1] - start[1]) - (end[2] - start[2])
        return max(0.0, others / ((end[0] - start[0]) * self.tick * self.cpus))

    def wait_quiet(self, max_seconds: float) -> float:
        """Wait (up to ``max_seconds``) until other processes leave the machine quiet for 1 s; seconds waited."""
        t0 = time.perf_counter()
        while self.ok and time.perf_counter() - t0 < max_seconds:
            start = self.snapshot()
            time.sleep(1.0)
            share = self.others_share(start, self.snapshot())
            if share is not None and share < QUIET_SHARE:
                break
        return time.perf_counter() - t0


MONITOR = CpuMonitor()


def quiet_median(times: list[float], shares: list[float | None]) -> tuple[float, int, bool]:
    """Median of the quiet steps when at least half are quiet, else of all; (median, quiet count, contended)."""
    quiet = [t for t, share in zip(times, shares, strict=True) if share is None or share < QUIET_SHARE]
    if quiet and 2 * len(quiet) >= len(times):
        return statistics.median(quiet), len(quiet), False
    return statistics.median(times), len(quiet), True


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory growth of a with-block: CUDA allocator peak, or sampled RSS on the CPU (see the methods)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib = device, float("nan")
        self._stop = threading.Event()
        self._peak = 0
        self._use_proc = device.type == "cpu" and os.path.exists("/proc/self/statm")

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, rss_bytes())

    def __enter__(self) -> PeakMemory:
        release_memory(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self._use_proc:
            self._base = self._peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:  # no /proc: the process high-water mark (KiB on Linux), only growth past earlier peaks shows
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._use_proc:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, rss_bytes())
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_mib = (peak - self._base) / 2**20


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Trainer:
    """One model under one lever setting, built and warmed up (its peak memory measured meanwhile), ready to time
    training steps: ``core.training.train_step`` as ``core.stages.train`` runs it (ε-loss forward and backward,
    the finite checks, gradient-norm clipping, AdamW, the EMA update) on a fixed batch."""

    def __init__(
        self, build: Callable[[], nn.Module], case: Case, device: torch.device, levers: Levers, batch: int, warmup: int
    ) -> None:
        self.device, self.levers, self.batch = device, levers, batch
        torch.manual_seed(0)
        with PeakMemory(device) as mem:
            self.model = levers.apply(build().to(device).train(), device)
            self.optimizer = levers.optimizer(self.model, TRAIN_SPEC)
            self.ema = EMA(self.model, 0.9999)
            self.net = levers.wrap(self.model)
            self.diffusion = GaussianDiffusion.from_spec(DIFFUSION_SPEC)
            self.gen = torch.Generator(device=device).manual_seed(0)
            x0 = torch.randn(batch, case.channels, case.image_size, case.image_size, device=device, generator=self.gen)
            self.x0 = x0.clamp(-1, 1)
            self.y = torch.randint(0, case.num_classes, (batch,), device=device) if case.num_classes else None
            self.steps = 0
            for _ in range(warmup):
                self.step()
            synchronize(device)
        self.peak_mem_mib = mem.peak_mib

    def step(self) -> None:
        with tf32_mode(self.levers.tf32):  # several trainers share this process: each sets its own TF32
            train_step(
                self.net,
                self.model,
                self.diffusion,
                self.optimizer,
                self.ema,
                self.x0,
                self.y,
                self.batch,
                slice(None),
                self.gen,
                self.levers,
                TRAIN_SPEC["grad_clip"],
                float(TRAIN_SPEC["lr"]),
                self.steps,
            )
        self.steps += 1

    def timed_steps(self, n: int) -> tuple[list[float], float | None]:
        """Seconds of each of ``n`` steps, and the share of CPU time other processes took meanwhile."""
        times, start = [], MONITOR.snapshot()
        for _ in range(n):
            t0 = time.perf_counter()
            self.step()
            synchronize(self.device)
            times.append(time.perf_counter() - t0)
        return times, MONITOR.others_share(start, MONITOR.snapshot())


class TwoForwardCFG(nn.Module):
    """Classifier-free guidance as two forwards (B + B) instead of one of 2B: splits ``guided_eps``' batch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.num_classes = model, model.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0] // 2
        if y is None or 2 * b != x.shape[0]:
            return self.model(x, t, y)
        return torch.cat([self.model(x[:b], t[:b], y[:b]), self.model(x[b:], t[b:], y[b:])])


def measure_sampling(
    model: nn.Module, case: Case, device: torch.device, batch: int, steps: int, bf16: bool = False, warmup: bool = True
) -> dict[str, Any]:
    """Seconds of one ``core.sampling.sample`` run (DDIM, CFG w = 3), after a 2-step warm-up run if asked."""
    diffusion = GaussianDiffusion.from_spec(DIFFUSION_SPEC)
    gen = torch.Generator(device=device).manual_seed(0)
    x_T = torch.randn(batch, case.channels, case.image_size, case.image_size, device=device, generator=gen)
    y = torch.randint(0, case.num_classes, (batch,), device=device, generator=gen)
    with tf32_mode(False), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if warmup:
            sample(model, diffusion, x_T, sampler_spec("ddim", 2), y=y, guidance_scale=3.0)
        synchronize(device)
        start = MONITOR.snapshot()
        sample(model, diffusion, x_T, sampler_spec("ddim", steps), y=y, guidance_scale=3.0)
        synchronize(device)
        end = MONITOR.snapshot()
    return {"seconds": end[0] - start[0], "share": MONITOR.others_share(start, end)}


# ----------------------------------------------------------------------------------------------- the run


def guarded(fn: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
    """Run one measurement; an out-of-memory or unsupported-op error becomes a recorded row, not a crash."""
    try:
        return fn()
    except RuntimeError as err:  # includes torch.OutOfMemoryError and NotImplementedError
        msg = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        print(f"  {what}: failed ({msg})")
        return {"error": msg}


def lever_settings(kind: str, case: Case, compile_ok: bool) -> tuple[list[Levers], list[str]]:
    """Each lever of ``case`` on its own (against the fp32 baseline), then all together; notes on those skipped."""
    wanted, on, notes = case.levers[kind], [], []
    if not wanted:
        return [], [f"levers not measured on {kind} at this size (time budget); see the demo sizes"]
    if set(wanted) != set(LEVERS):
        notes.append(f"only {', '.join(wanted)} measured on {kind} at this size (time budget); see the demo sizes")
    if "bf16" in wanted:
        on.append(Levers(bf16=True))
    if "tf32" in wanted:
        if kind == "cuda":
            on.append(Levers(tf32=True))
        else:
            notes.append("TF32: a CUDA lever, skipped on CPU")
    if "fused_adamw" in wanted:
        if kind == "cuda":
            on.append(Levers(fused_adamw=True))
        else:
            notes.append("fused AdamW: a CUDA lever, skipped on CPU")
    if "channels_last" in wanted:
        if case.backbone == "unet":
            on.append(Levers(channels_last=True))
        else:
            notes.append("channels-last: not applied to DiT (only its patch-embedding conv is 4-D)")
    if "compile" in wanted and compile_ok:
        on.append(Levers(compile=True))
    elif "compile" in wanted:
        notes.append("torch.compile: off (--compile adds it; on CPU at the demo sizes only, for compile time)")
    if len(on) > 1:
        on.append(Levers(**{f: any(getattr(lv, f) for lv in on) for f in LEVERS}))
    return on, notes


@dataclass
class Bench:
    """One benchmark run: the device, the optional peer library, and the collected rows."""

    device: torch.device
    compile: bool
    peak_flops: float | None
    diffusers: Any
    wait_quiet: float = 0.0  # seconds to wait, at most, for a quiet machine before each timed block
    lever_mode: str = "all"  # all: each lever and all together; preset: the full presets' bf16 (+ TF32 on CUDA)
    wait_total: float = 300.0  # ... and over the whole run
    waited_s: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.device.type

    def quiet(self) -> None:
        """Wait for a quiet machine before a timed block, within the per-block and whole-run limits."""
        self.waited_s += MONITOR.wait_quiet(min(self.wait_quiet, self.wait_total - self.waited_s))

    def achieved(self, flops_per_image: float | None, images_per_s: float | None) -> dict[str, float | None]:
        """Achieved TFLOP/s and, when the device's peak is known, the model FLOPs utilisation."""
        if flops_per_image is None or images_per_s is None:
            return {"tflops_per_s": None, "mfu": None}
        rate = flops_per_image * images_per_s
        return {"tflops_per_s": rate / 1e12, "mfu": rate / self.peak_flops if self.peak_flops else None}

    def train(self, case: Case) -> None:
        """Baseline training step, each lever, and the matched peer at the baseline and all-levers settings."""
        batch, steps = case.batch[self.kind], case.steps[self.kind]
        print(f"\n[train] {case.name}: {case.label}, batch {batch}, steps (warm-up, timed per round, rounds) {steps}")
        params, flops = count_params(case.build), train_flops_per_image(case.build, case)
        print(f"  ours: {params / 1e6:.2f}M parameters, {fmt(flops and flops / 1e9, '.2f')} GFLOP per image")
        compile_ok = self.compile and (self.kind == "cuda" or case.name.endswith("demo"))
        levers, notes = lever_settings(self.kind, case, compile_ok)
        if self.lever_mode == "preset":
            levers = [Levers(bf16=True, tf32=self.kind == "cuda")]
            notes = ["--levers preset: only the full presets' setting (bf16, + TF32 on CUDA) beside fp32"]
        self.result["lever_notes"][case.name] = notes
        runs: list[tuple[str, Levers]] = [("ours", Levers()), *(("ours", lv) for lv in levers)]
        builders: dict[str, Callable[[], nn.Module]] = {"ours": case.build}
        peer_name, peer_params, peer_flops = "", 0, None
        if self.diffusers is not None and self.kind in case.peer_on:
            builders["peer"] = functools.partial(build_peer, case, self.diffusers)
            peer_name = "diffusers." + ("UNet2DModel" if case.backbone == "unet" else "DiTTransformer2DModel")
            peer_params, peer_flops = count_params(builders["peer"]), train_flops_per_image(builders["peer"], case)
            print(f"  peer {peer_name}: {peer_params / 1e6:.2f}M parameters")
            runs += [("peer", Levers()), *(("peer", lv) for lv in levers[-1:])]
        results = self.measure(case, runs, builders, batch, steps)
        base = results[("ours", Levers().label())]
        row = {"model": case.name, "label": case.label, "params": params, "train_flops_per_image": flops} | base
        self.result["train"].append(row | self.achieved(flops, base.get("images_per_s")))
        for lv in levers:
            m = results[("ours", lv.label())]
            lever_row = {"model": case.name, "lever": lv.label(), "off_images_per_s": base.get("images_per_s")} | m
            lever_row |= self.achieved(flops, m.get("images_per_s"))
            if "images_per_s" in m and "images_per_s" in base:
                lever_row["speedup"] = m["images_per_s"] / base["images_per_s"]
            self.result["levers"].append(lever_row)
        for who, lv in runs:
            if who == "peer":
                self.result["peers"].append(
                    self.peer_row(case, lv, results, params, flops, peer_name, peer_params, peer_flops)
                )

    def measure(
        self,
        case: Case,
        runs: list[tuple[str, Levers]],
        builders: dict[str, Callable[[], nn.Module]],
        batch: int,
        steps: tuple[int, int, int],
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Time every run (who, levers). With one round each run is built, timed and freed in turn. With more, all
        are built first (all held in memory), go through one untimed settling round, and are then timed in
        turns of ``per_round`` steps, so a busy machine slows them alike."""
        warmup, per_round, rounds = steps
        results: dict[tuple[str, str], dict[str, Any]] = {}
        trainers: dict[tuple[str, str], Trainer] = {}
        # one untimed step first, so one-time costs (kernel and primitive caches, allocator pools) are not
        # charged to the memory of whichever run is built first
        guarded(lambda: {"primed": Trainer(case.build, case, self.device, Levers(), batch, 1)}, "priming step")
        release_memory(self.device)

        def record(key: tuple[str, str], fn: Callable[[], dict[str, Any]], what: str) -> None:
            m = guarded(fn, what)
            agg = results.setdefault(key, {"levers": key[1], "batch": batch, "step_s": [], "others_cpu_share": []})
            if "error" in m:
                agg["error"] = m["error"]
                trainers.pop(key, None)
            agg["step_s"] += m.get("step_s", [])
            agg["others_cpu_share"] += [m.get("share")] * len(m.get("step_s", []))
            if "peak_mem_mib" in m:
                agg["peak_mem_mib"] = m["peak_mem_mib"]

        def timed(key: tuple[str, str]) -> dict[str, Any]:
            self.quiet()
            times, share = trainers[key].timed_steps(per_round)
            return {"step_s": times, "share": share}

        def build(who: str, levers: Levers) -> dict[str, Any]:
            trainer = trainers[(who, levers.label())] = Trainer(builders[who], case, self.device, levers, batch, warmup)
            return {"peak_mem_mib": trainer.peak_mem_mib}

        for who, levers in runs if rounds > 1 else []:  # build all, then one untimed settling round
            record((who, levers.label()), lambda w=who, lv=levers: build(w, lv), f"{who}, {levers.label()}: build")
        for key in list(trainers):
            guarded(lambda k=key: {"settle": trainers[k].timed_steps(per_round)}, f"{key[0]}, {key[1]}: settle")
        for _ in range(rounds):
            for who, levers in runs:
                key = (who, levers.label())
                if rounds == 1:
                    record(key, lambda w=who, lv=levers: build(w, lv), f"{who}, {key[1]}: build")
                if key in trainers:
                    record(key, lambda k=key: timed(k), f"{who}, {key[1]}")
                if rounds == 1:
                    trainers.pop(key, None)
                    release_memory(self.device)
        trainers.clear()
        release_memory(self.device)
        for (who, label), agg in results.items():
            if agg["step_s"]:
                median, quiet, contended = quiet_median(agg["step_s"], agg["others_cpu_share"])
                agg |= {"rounds": rounds, "median_step_s": median, "quiet_steps": quiet, "contended": contended}
                agg["images_per_s"] = batch / median
                mem = agg.get("peak_mem_mib", float("nan"))
                flag = f" (contended: {quiet} of {len(agg['step_s'])} steps quiet)" if contended else ""
                print(f"  {who}, {label}: {agg['images_per_s']:.3f} images/s, peak memory {mem:.0f} MiB{flag}")
        return results

    def peer_row(
        self,
        case: Case,
        levers: Levers,
        results: dict[tuple[str, str], dict[str, Any]],
        params: int,
        flops: float | None,
        peer_name: str,
        peer_params: int,
        peer_flops: float | None,
    ) -> dict[str, Any]:
        """Ours beside the peer at one lever setting: parameters, FLOPs, throughput, memory, the ratio."""
        ours, peer = results.get(("ours", levers.label()), {}), results[("peer", levers.label())]
        row = {
            "model": case.name,
            "peer": peer_name,
            "levers": levers.label(),
            "ours_params": params,
            "peer_params": peer_params,
            "peer_over_ours_params": peer_params / params,
            "ours_train_flops_per_image": flops,
            "peer_train_flops_per_image": peer_flops,
            "ours_images_per_s": ours.get("images_per_s"),
            "ours_peak_mem_mib": ours.get("peak_mem_mib"),
            "ours_contended": ours.get("contended"),
            "ours_mfu": self.achieved(flops, ours.get("images_per_s"))["mfu"],
            "peer_mfu": self.achieved(peer_flops, peer.get("images_per_s"))["mfu"],
            "note": case.peer_note or DIT_PEER_NOTE * (case.backbone == "dit"),
            **{f"peer_{k}": v for k, v in peer.items()},
        }
        if case.backbone == "dit":  # the parameter difference in units of one conditioning embedder (t MLP + labels)
            with torch.device("meta"):
                ours_model = case.build()
            embedder = sum(p.numel() for p in [*ours_model.t_embedder.parameters(), ours_model.y_embedder.weight])
            row["extra_params_in_embedder_copies"] = (peer_params - params) / embedder
        if "images_per_s" in peer and ours.get("images_per_s"):
            row["ours_over_peer"] = ours["images_per_s"] / peer["images_per_s"]
            print(f"  ours/peer ({levers.label()}): {row['ours_over_peer']:.2f}×")
        return row

    def sampling(self, case: Case, steps: int, rounds: int) -> None:
        """DDIM-50 with CFG (w = 3): one batched 2B forward per step vs two B forwards, and the peer if present;
        the variants take turns for ``rounds`` rounds (median run time). ``steps`` < 50 are timed and scaled."""
        batch = case.batch[self.kind]
        run_note = "" if steps == 50 else f", DDIM-{steps} timed and scaled to 50 steps"
        print(f"\n[sample] {case.name}: DDIM-50, CFG w = 3, batch {batch}, {rounds} rounds{run_note}")
        torch.manual_seed(0)
        model = case.build().to(self.device).eval()
        variants: list[tuple[str, nn.Module, bool]] = [
            ("ours, CFG batched (2B)", model, False),
            ("ours, CFG two forwards (B + B)", TwoForwardCFG(model), False),
        ]
        if self.kind == "cuda":
            variants.append(("ours, CFG batched (2B), bf16 autocast", model, True))
        if self.diffusers is not None and self.kind in case.peer_on:
            peer = build_peer(case, self.diffusers).to(self.device).eval()
            variants.append(("diffusers peer, CFG batched (2B)", peer, False))
        seconds: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        shares: dict[str, list[float | None]] = {label: [] for label, _, _ in variants}
        errors: dict[str, str] = {}
        for r in range(rounds):
            for label, net, bf16 in variants:
                self.quiet()
                run = functools.partial(measure_sampling, net, case, self.device, batch, steps, bf16, r == 0)
                m = guarded(run, label)
                if "error" in m:
                    errors[label] = m["error"]
                else:
                    seconds[label].append(m["seconds"])
                    shares[label].append(m["share"])
        for label, _, _ in variants:
            row = {"model": case.name, "label": case.label, "variant": label, "batch": batch, "steps_timed": steps}
            row |= {"sampler": "DDIM-50 (η = 0, leading)", "guidance_scale": 3.0, "extrapolated": steps != 50}
            row |= {"run_seconds": seconds[label], "others_cpu_share": shares[label]}
            row |= {"error": errors[label]} if label in errors else {}
            if seconds[label]:
                median, quiet, contended = quiet_median(seconds[label], shares[label])
                row |= {"seconds_ddim50": median * 50 / steps, "quiet_runs": quiet, "contended": contended}
                row["images_per_s"] = batch / row["seconds_ddim50"]
                flag = f" (contended: {quiet} of {len(seconds[label])} runs quiet)" if contended else ""
                print(f"  {label}: {row['images_per_s']:.4f} images/s{flag}")
            self.result["sampling"].append(row)
        release_memory(self.device)

    def features(self, images: int, rounds: int) -> None:
        """FIDInceptionV3 (random weights) through ``core.features.Extractor`` on 64² uint8 images; the median of
        ``rounds`` timed passes after a one-batch warm-up."""
        batch = min(images, 32 if self.kind == "cpu" else 256)
        print(f"\n[features] FIDInceptionV3 (random init), {images} images 64² → 299², batch {batch}, {rounds} rounds")
        torch.manual_seed(0)
        net = inception.FIDInceptionV3().eval()
        extractor = Extractor("inception", net, lambda x: inception.preprocess(torch.as_tensor(x), "pytorch-fid"))
        pixels = np.random.default_rng(0).integers(0, 256, (images, 64, 64, 3), dtype=np.uint8)
        extractor.extract(pixels[:batch], batch_size=batch, device=self.device)  # warm-up
        seconds, shares = [], []
        for _ in range(rounds):
            self.quiet()
            start = MONITOR.snapshot()
            extractor.extract(pixels, batch_size=batch, device=self.device)
            synchronize(self.device)
            end = MONITOR.snapshot()
            seconds.append(end[0] - start[0])
            shares.append(MONITOR.others_share(start, end))
        median, quiet, contended = quiet_median(seconds, shares)
        self.result["features"] = {
            "quiet_runs": quiet,
            "network": "core.nets.inception.FIDInceptionV3 (random init)",
            "path": "core.features.Extractor (preprocess on the CPU, network on the device)",
            "input": "uint8 64x64 -> preprocess('pytorch-fid') -> 299x299",
            "images": images,
            "batch": batch,
            "run_seconds": seconds,
            "others_cpu_share": shares,
            "contended": contended,
            "images_per_s": images / median,
        }
        runs = ", ".join(f"{t:.1f} s" for t in seconds)
        print(f"  {self.result['features']['images_per_s']:.2f} images/s (runs: {runs})")


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "—" if value is None or value != value else f"{value:{spec}}{suffix}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def rate(row: dict[str, Any], key: str = "images_per_s", contended: str = "contended", spec: str = ".3f") -> str:
    """A throughput cell, marked † when most of its timed blocks were contended."""
    return fmt(row.get(key), spec) + ("†" if row.get(contended) else "")


def print_tables(result: dict[str, Any], show_mfu: bool) -> None:
    """The summary tables, in Markdown (†: most timed blocks contended by other processes)."""
    header = ["model", "params", "batch", "images/s", "peak mem (MiB)", "TFLOP/s"] + (["MFU"] if show_mfu else [])
    rows = []
    for r in result["train"]:
        mfu = [fmt(r["mfu"] and 100 * r["mfu"], ".1f", "%")] if show_mfu else []
        mem, tflops = fmt(r.get("peak_mem_mib"), ".0f"), fmt(r["tflops_per_s"], ".3f")
        rows.append([r["model"], f"{r['params'] / 1e6:.2f}M", str(r.get("batch", "—")), rate(r), mem, tflops, *mfu])
    print_table("Training step, fp32 baseline", header, rows)
    rows = []
    for r in result["levers"]:
        rows.append([r["model"], r["lever"], fmt(r["off_images_per_s"], ".3f"), rate(r), fmt(r.get("speedup"), ".2f")])
    print_table("Levers, training step", ["model", "levers on", "off images/s", "on images/s", "on/off"], rows)
    if result["peers"]:
        rows = []
        for r in result["peers"]:
            params = f"{r['ours_params'] / 1e6:.2f}M / {r['peer_params'] / 1e6:.2f}M"
            ours, peer = rate(r, "ours_images_per_s", "ours_contended"), rate(r, "peer_images_per_s", "peer_contended")
            rows.append([r["model"], r["peer"], r["levers"], params, ours, peer, fmt(r.get("ours_over_peer"), ".2f")])
        header = ["model", "peer", "levers", "params ours / peer", "ours images/s", "peer images/s", "ours/peer"]
        print_table("Peers, training step", header, rows)
    rows = []
    for r in result["sampling"]:
        rows.append(
            [r["model"], r["variant"], str(r["batch"]), rate(r, spec=".4f") + ("*" if r["extrapolated"] else "")]
        )
    title = "Sampling, DDIM-50 with CFG w = 3 (* scaled from fewer timed DDIM steps)"
    print_table(title, ["model", "variant", "batch", "images/s"], rows)
    if "features" in result:
        print(f"\nInception feature extraction (64² → 299²): {rate(result['features'], spec='.2f')} images/s")
    print(f"\n†: most timed blocks contended by other processes; waited {result['waited_for_quiet_s']:.0f} s for quiet")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default="bench/results-models.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1-2 steps: a smoke test (< 30 s on a CPU)")
    p.add_argument("--compile", action="store_true", help="add torch.compile as a lever (CPU: demo sizes only)")
    p.add_argument("--no-peers", action="store_true", help="skip the diffusers peers even if importable")
    p.add_argument("--models", default="", help="training rows to run, e.g. unet-demo,dit-demo (default: all)")
    p.add_argument("--parts", default="train,sample,features", help="which parts to run (comma-separated)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=-1.0,
        help="before each timed block wait up to this many seconds for other processes to leave the CPU quiet "
        "(default: 20 on CPU, 0 on GPU and with --quick; 300 s at most over the run)",
    )
    p.add_argument(
        "--levers",
        default="all",
        choices=["all", "preset"],
        help="all: each speed lever alone and all together; preset: only the full presets' bf16 (+ TF32) beside fp32",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--study-b-dims", default="", help="Study B widths, e.g. 64,96,128 (default: 64 on CPU, all on GPU)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="peak for MFU, TFLOP/s (default: known GPUs' bf16)")
    p.add_argument(
        "--cpu-sample-steps", type=int, default=10, help="CPU: DDIM steps timed for the reference-size model"
    )
    p.add_argument("--inception-images", type=int, default=0, help="images to extract (default: 64 on CPU, 1024 GPU)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if kind == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available to this torch build")
    if kind == "cuda":
        device_label = torch.cuda.get_device_name()
        known = next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_label), None)
    else:
        device_label = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        known = None
    peak = args.peak_tflops * 1e12 or known
    try:
        import diffusers

        diffusers_version: str | None = diffusers.__version__
    except ImportError:
        diffusers, diffusers_version = None, None
    notes = []
    if diffusers is None or args.no_peers:
        why = "--no-peers" if args.no_peers else "diffusers is not importable"
        notes.append(f"peers skipped ({why}); to add them: pip install -r bench/requirements-peers.txt (in a venv)")
        print(f"NOTE: {notes[-1]}")
    wait_quiet = args.wait_quiet if args.wait_quiet >= 0 else (20.0 if kind == "cpu" and not args.quick else 0.0)
    bench = Bench(
        torch.device(kind), args.compile, peak, None if args.no_peers else diffusers, wait_quiet, lever_mode=args.levers
    )
    print(
        f"device: {device_label}, torch {torch.__version__}, diffusers {diffusers_version or 'absent'}, "
        f"{torch.get_num_threads()} threads, {'quick' if args.quick else 'full'} mode"
    )
    bench.result = {
        "date": dt.date.today().isoformat(),
        "datetime": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device_label,
        "device_kind": kind,
        "threads": torch.get_num_threads(),
        "mode": "quick" if args.quick else "full",
        "versions": {"torch": torch.__version__, "diffusers": diffusers_version, "python": platform.python_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "train_step": "GaussianDiffusion.training_loss (cosine, T = 1000) forward + backward + AdamW step (lr 1e-4, "
        "weight decay 1e-5, no clipping); images/s from the median step time after warm-up",
        "flops_method": FLOPS_METHOD,
        "peak_bf16_flops": peak,
        "mfu_definition": "achieved training FLOP/s (flops_method) / the device's dense bf16 peak (peak_bf16_flops)",
        "memory_method": CUDA_MEMORY_METHOD if kind == "cuda" else CPU_MEMORY_METHOD,
        "contention_method": "per timed block (steps, sampler run, extraction pass): the share of the machine's CPU "
        f"time used by other processes (/proc/stat minus /proc/self/stat); below {QUIET_SHARE:.0%} the block is "
        "quiet; a figure is the median of the quiet blocks when at least half are quiet, else of all ('contended'); "
        "before each block the run waits up to wait_quiet_s for a quiet second",
        "wait_quiet_s": wait_quiet,
        "notes": notes,
        "train": [],
        "levers": [],
        "lever_notes": {},
        "peers": [],
        "sampling": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        """Written after every row, so that a run stopped by a time limit keeps what it measured."""
        bench.result["waited_for_quiet_s"] = bench.waited_s
        write_json(out, bench.result)

    dims = [int(d) for d in args.study_b_dims.split(",") if d] or ([64] if kind == "cpu" else [64, 96, 128])
    cases = training_cases(args.quick, dims)
    parts = set(args.parts.split(","))
    chosen = set(args.models.split(",")) if args.models else {c.name for c in cases}
    if "train" in parts:
        for case in cases:
            if case.name in chosen:
                bench.train(case)
                save()
    if "sample" in parts:
        by_name = {c.name: c for c in cases}
        demo = by_name["unet-demo"]
        demo_cfg = replace(demo, name="unet-demo-cfg", label=demo.label + ", 5 classes", num_classes=5)
        demo_steps = 2 if args.quick else 50  # --quick times 2 DDIM steps and scales them to 50
        rounds = 1 if args.quick else 3
        bench.sampling(replace(demo_cfg, batch={"cpu": 4 if args.quick else 32, "cuda": 256}), demo_steps, rounds)
        save()
        ref = by_name["dit-b2" if args.quick else "dit-ref12"]
        ref_steps = 2 if args.quick else 50 if kind == "cuda" else args.cpu_sample_steps
        ref_cfg = replace(ref, name=ref.name + "-cfg", batch={"cpu": 2, "cuda": 32})
        bench.sampling(ref_cfg, ref_steps, 1 if args.quick else 2 if kind == "cpu" else 3)
        save()
        if kind == "cuda" and not args.quick:
            a = by_name["unet-a"]
            bench.sampling(replace(a, name="unet-a-cfg", label=a.label + ", 100 classes", num_classes=100), 50, 3)
    if "features" in parts:
        bench.features(
            args.inception_images or (4 if args.quick else 64 if kind == "cpu" else 1024), 1 if args.quick else 2
        )
    save()
    print_tables(bench.result, peak is not None)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

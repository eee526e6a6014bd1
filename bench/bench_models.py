"""Benchmark: training-step and sampling throughput of our denoisers, Inception feature extraction, the speed
levers (bf16 autocast, TF32, channels-last, AdamW implementation, torch.compile, batched vs two-forward
classifier-free guidance) and, when ``diffusers`` is importable, matched peers side by side.

    python bench/bench_models.py [--device auto|cpu|cuda] [--out bench/results-models.json] [--quick] [--compile]

Peers are optional and never a dependency of the workflow: install them in a separate venv that reuses the
system torch (``bench/requirements-peers.txt``) and run the script with that venv's python. Without diffusers
the peer rows are skipped with a note. Nothing is downloaded at run time (every network is randomly
initialised; throughput does not depend on the weights).

A training step is what ``core.train`` does per batch minus logging, EMA and clipping: the diffusion loss
(``GaussianDiffusion.training_loss``, forward), backward, and an AdamW step. Throughput is the median over the
timed steps after warm-up. FLOPs are counted once per model with ``torch.utils.flop_counter.FlopCounterMode``
on meta tensors (no compute), so achieved FLOP/s and, on GPUs of known peak, MFU come with every row.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import gc
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the peers never reach a hub from here
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import inception
from core.diffusion import GaussianDiffusion
from core.features import Extractor
from core.models import build_model
from core.sampling import SamplerSpec, sample

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
DIFFUSION_SPEC = {"schedule": "cosine", "timesteps": 1000}


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
    steps: dict[str, tuple[int, int]]  # per device kind: (warm-up, timed)
    levers: bool = True
    peer_note: str = ""

    @property
    def backbone(self) -> str:
        return self.spec["backbone"]

    def build(self, num_classes: int | None = None) -> nn.Module:
        classes = self.num_classes if num_classes is None else num_classes
        return build_model(self.spec, self.image_size, self.channels, classes)


def unet_spec(base: int, mult: list[int], blocks: int, attn: list[int], heads: int, groups: int, drop: float) -> dict:
    net = {"base_channels": base, "channel_mult": mult, "num_res_blocks": blocks, "attention_resolutions": attn}
    return {"backbone": "unet", "net": net | {"num_heads": heads, "norm_groups": groups, "dropout": drop}}


def dit_spec(hidden: int, depth: int, heads: int, patch: int) -> dict:
    return {"backbone": "dit", "net": {"hidden_size": hidden, "depth": depth, "num_heads": heads, "patch_size": patch}}


def training_cases(quick: bool, study_b_dims: list[int]) -> list[Case]:
    """The measured configurations (the reference's sizes, or tiny stand-ins of the same layout with --quick)."""
    if quick:
        tiny = {"cpu": 4, "cuda": 4}
        steps = {"cpu": (1, 2), "cuda": (1, 2)}
        return [
            Case("unet-a", "UNet, Study A layout (tiny)", unet_spec(16, [1, 2, 2, 4], 1, [8, 4], 4, 8, 0.1), 32, 3, 0,
                 tiny, steps),
            Case("unet-b64", "UNet, Study B layout (tiny)", unet_spec(8, [1, 2, 4, 8], 1, [2], 4, 8, 0.0), 16, 3, 0,
                 tiny, steps),
            Case("unet-demo", "UNet, demo size", unet_spec(32, [1, 2, 2], 1, [4], 2, 8, 0.0), 16, 3, 0, tiny, steps),
            Case("dit-b2", "DiT-B/2 layout (tiny)", dit_spec(64, 2, 4, 2), 8, 4, 10, tiny, steps),
            Case("dit-demo", "DiT, demo layout (depth 2)", dit_spec(72, 2, 6, 2), 8, 3, 5, tiny, steps),
        ]  # fmt: skip
    big = {"cpu": (1, 2), "cuda": (5, 20)}
    mid = {"cpu": (1, 3), "cuda": (5, 20)}
    small = {"cpu": (2, 10), "cuda": (10, 50)}
    cases = [
        Case(
            "unet-a",
            "UNet, Study A (128² pixel, base 128, mult 1-2-2-4, attn 32/16)",
            unet_spec(128, [1, 2, 2, 4], 2, [32, 16], 4, 32, 0.1),
            128, 3, 0, {"cpu": 2, "cuda": 32}, big,
            peer_note="heads: ours 4 at every attention (64-d at 32², 128-d at 16²/middle); diffusers 64-d heads "
            "(4 at 32², 8 at 16²/middle); same FLOPs",
        ),
        *[
            Case(
                f"unet-b{d}",
                f"UNet, Study B dim {d} (64² pixel, mult 1-2-4-8, attn 8)",
                unet_spec(d, [1, 2, 4, 8], 2, [8], 4, 32, 0.0),
                64, 3, 0, {"cpu": 4, "cuda": 64}, mid,
            )
            for d in study_b_dims
        ],
        Case(
            "unet-demo",
            "UNet, demo (16² pixel, base 32, mult 1-2-2, attn 4)",
            unet_spec(32, [1, 2, 2], 1, [4], 2, 8, 0.0),
            16, 3, 0, {"cpu": 32, "cuda": 128}, small,
        ),
        Case(
            "dit-b2",
            "DiT-B/2 (32×32×4 latents, 1000 classes)",
            {"backbone": "dit", "net": {"config": "DiT-B/2"}},
            32, 4, 1000, {"cpu": 4, "cuda": 128}, mid,
        ),
        Case(
            "dit-ref12",
            "DiT, reference depth 12 / width 768 / 12 heads, patch 2 (32×32×3, 100 classes)",
            {"backbone": "dit", "net": {"config": "ref-12"}},
            32, 3, 100, {"cpu": 4, "cuda": 32}, mid, levers=False,
        ),
        Case(
            "dit-demo",
            "DiT, demo (8×8×3, hidden 72, depth 12, 6 heads, patch 2)",
            dit_spec(72, 12, 6, 2),
            8, 3, 5, {"cpu": 32, "cuda": 128}, small,
        ),
    ]  # fmt: skip
    return cases


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


def build_peer(case: Case, diffusers: Any, num_classes: int | None = None) -> nn.Module:
    """The diffusers model configured like ``case`` (same widths, blocks, attention placement, groups, heads)."""
    classes = case.num_classes if num_classes is None else num_classes
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
    if "config" in net:
        from core.dit import DIT_CONFIGS

        net = dict(DIT_CONFIGS[net["config"]])
    dit = diffusers.DiTTransformer2DModel(
        num_attention_heads=net["num_heads"],
        attention_head_dim=net["hidden_size"] // net["num_heads"],
        in_channels=case.channels,
        out_channels=case.channels,
        num_layers=net["depth"],
        sample_size=case.image_size,
        patch_size=net["patch_size"],
        num_embeds_ada_norm=max(classes, 1),
    )
    return DiffusersDiT(dit, max(classes, 1))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, timed: int) -> list[float]:
    """Seconds of each of ``timed`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(timed):
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


@dataclass
class Levers:
    """One training configuration: which speed levers are on."""

    bf16: bool = False
    tf32: bool = False
    channels_last: bool = False
    adamw: str = "default"  # default | foreach | fused
    compile: bool = False

    def label(self) -> str:
        on = [n for n in ("bf16", "tf32", "channels_last", "compile") if getattr(self, n)]
        if self.adamw != "default":
            on.append(f"adamw-{self.adamw}")
        return "+".join(on) or "baseline (fp32)"


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def measure_train(
    build: Callable[[], nn.Module], case: Case, device: torch.device, levers: Levers, batch: int, steps: tuple[int, int]
) -> dict[str, Any]:
    """Training-step throughput (images/s, median) and peak memory of one model under one lever setting."""
    torch.manual_seed(0)
    with PeakMemory(device) as mem, tf32_mode(levers.tf32):
        model = build().to(device).train()
        fmt = torch.channels_last if levers.channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        opt_kwargs: dict[str, Any] = {"foreach": False} if device.type == "cpu" else {}
        if levers.adamw == "foreach":
            opt_kwargs = {"foreach": True}
        elif levers.adamw == "fused":
            opt_kwargs = {"fused": True}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5, **opt_kwargs)
        net = torch.compile(model) if levers.compile else model
        diffusion = GaussianDiffusion.from_spec(DIFFUSION_SPEC)
        gen = torch.Generator(device=device).manual_seed(0)
        x0 = torch.randn(batch, case.channels, case.image_size, case.image_size, device=device, generator=gen)
        x0 = x0.clamp(-1, 1).contiguous(memory_format=fmt)
        y = torch.randint(0, case.num_classes, (batch,), device=device) if case.num_classes else None

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=levers.bf16):
                loss = diffusion.training_loss(net, x0, y, generator=gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        times = time_steps(step, device, *steps)
        del model, net, optimizer
    median = statistics.median(times)
    return {"levers": levers.label(), "batch": batch, "step_s": times, "median_step_s": median,
            "images_per_s": batch / median, "peak_mem_mib": mem.peak_mib}  # fmt: skip


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
    model: nn.Module, case: Case, device: torch.device, batch: int, steps: int, bf16: bool = False
) -> dict[str, Any]:
    """Seconds of one ``core.sampling.sample`` run (DDIM, CFG w = 3) after a 2-step warm-up run."""
    diffusion = GaussianDiffusion.from_spec(DIFFUSION_SPEC)
    gen = torch.Generator(device=device).manual_seed(0)
    x_T = torch.randn(batch, case.channels, case.image_size, case.image_size, device=device, generator=gen)
    y = torch.randint(0, case.num_classes, (batch,), device=device, generator=gen)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        sample(model, diffusion, x_T, SamplerSpec("ddim", steps=2), y=y, guidance_scale=3.0)
        synchronize(device)
        t0 = time.perf_counter()
        sample(model, diffusion, x_T, SamplerSpec("ddim", steps=steps), y=y, guidance_scale=3.0)
        synchronize(device)
    return {"seconds": time.perf_counter() - t0, "steps_run": steps}


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Report:
    """Collected measurements and the printed tables."""

    device: torch.device
    peak_flops: float | None
    result: dict[str, Any] = field(default_factory=dict)

    def achieved(self, flops_per_image: float | None, images_per_s: float) -> dict[str, float | None]:
        if flops_per_image is None:
            return {"tflops_per_s": None, "mfu": None}
        rate = flops_per_image * images_per_s
        return {"tflops_per_s": rate / 1e12, "mfu": rate / self.peak_flops if self.peak_flops else None}


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "—" if value is None or value != value else f"{value:{spec}}{suffix}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def guarded(fn: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
    """Run one measurement; an out-of-memory or unsupported-op error becomes a recorded row, not a crash."""
    try:
        return fn()
    except (RuntimeError, NotImplementedError, torch.OutOfMemoryError) as err:
        msg = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        print(f"  {what}: failed ({msg})")
        return {"error": msg}


def lever_settings(device: torch.device, case: Case, compile_ok: bool) -> tuple[list[Levers], list[str]]:
    """Each lever on its own (on vs the fp32 baseline), plus all together; and notes on the skipped ones."""
    on, notes = [Levers(bf16=True)], []
    if device.type == "cuda":
        on += [Levers(tf32=True), Levers(adamw="fused")]
    else:
        on.append(Levers(adamw="foreach"))
        notes.append("TF32: CUDA only, skipped on CPU; AdamW: foreach vs the for-loop default (fused: CUDA lever)")
    if case.backbone == "unet":
        on.append(Levers(channels_last=True))
    else:
        notes.append("channels-last: not applied to DiT (only its patch-embedding conv is 4-D)")
    if compile_ok:
        on.append(Levers(compile=True))
    fast = Levers(
        bf16=True,
        tf32=device.type == "cuda",
        channels_last=case.backbone == "unet",
        adamw="fused" if device.type == "cuda" else "foreach",
        compile=compile_ok,
    )
    return [*on, fast], notes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default="bench/results-models.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1-2 steps: a smoke test (< 30 s on a CPU)")
    p.add_argument("--compile", action="store_true", help="add torch.compile as a lever (CPU: demo sizes only)")
    p.add_argument("--no-peers", action="store_true", help="skip the diffusers peers even if importable")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--study-b-dims", default="", help="Study B widths, e.g. 64,96,128 (default: 64 on CPU, all on GPU)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="peak FLOP/s (in TFLOP/s) for MFU; default: known GPUs")
    p.add_argument("--cpu-sample-steps", type=int, default=10, help="CPU: DDIM steps run for the reference-size model")
    p.add_argument("--inception-images", type=int, default=0, help="images for feature extraction (0: 64 CPU, 1024 GPU)")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(kind)
    quick = args.quick
    dims = [int(d) for d in args.study_b_dims.split(",") if d] or ([64] if kind == "cpu" else [64, 96, 128])
    if kind == "cuda":
        name = torch.cuda.get_device_name()
        device_label = name
        peak = args.peak_tflops * 1e12 or next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    else:
        device_label = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        peak = args.peak_tflops * 1e12 or None
    try:
        import diffusers

        diffusers_version: str | None = diffusers.__version__
    except ImportError:
        diffusers, diffusers_version = None, None
    if args.no_peers:
        diffusers = None
    compile_requested = args.compile
    report = Report(device, peak)
    notes: list[str] = []
    if diffusers is None:
        why = "--no-peers" if args.no_peers else "diffusers is not importable"
        note = f"peers skipped ({why}); install them with: pip install -r bench/requirements-peers.txt (a venv)"
        print(f"NOTE: {note}")
        notes.append(note)
    print(
        f"device: {device_label}, torch {torch.__version__}, diffusers {diffusers_version or 'absent'}, "
        f"{torch.get_num_threads()} threads, {'quick' if quick else 'full'} mode"
    )

    res = report.result
    res.update(
        date=dt.date.today().isoformat(),
        datetime=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        device=device_label,
        device_kind=kind,
        threads=torch.get_num_threads(),
        mode="quick" if quick else "full",
        versions={"torch": torch.__version__, "diffusers": diffusers_version, "python": platform.python_version()},
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        flops_method=FLOPS_METHOD,
        peak_bf16_flops=peak,
        mfu_definition="achieved training FLOP/s (FLOPs method above) / the device's dense bf16 peak",
        memory_method=CUDA_MEMORY_METHOD if kind == "cuda" else CPU_MEMORY_METHOD,
        train_step="GaussianDiffusion.training_loss (cosine, T = 1000) forward + backward + AdamW step "
        "(lr 1e-4, weight decay 1e-5); median over timed steps after warm-up",
        train=[],
        levers=[],
        peers=[],
        sampling=[],
    )
    cases = training_cases(quick, dims)

    # 1. training step of every model, levers, and the peers at the baseline and the all-levers setting
    train_rows, lever_rows, peer_rows = [], [], []
    for case in cases:
        batch, steps = case.batch[kind], case.steps[kind]
        print(f"\n[train] {case.name}: {case.label}, batch {batch}, steps {steps}")
        params = count_params(case.build())
        flops = train_flops_per_image(case.build, case)
        base = guarded(lambda c=case, b=batch, s=steps: measure_train(c.build, c, device, Levers(), b, s), case.name)
        row = {"model": case.name, "label": case.label, "params": params, "train_flops_per_image": flops, **base}
        if "images_per_s" in base:
            row |= report.achieved(flops, base["images_per_s"])
            print(f"  ours: {params / 1e6:.2f}M params, {base['images_per_s']:.2f} images/s, "
                  f"peak {base['peak_mem_mib']:.0f} MiB")  # fmt: skip
        res["train"].append(row)
        train_rows.append(row)
        by_label: dict[str, dict[str, Any]] = {Levers().label(): base}
        compile_ok = compile_requested and (kind == "cuda" or case.name.endswith("demo"))
        if case.levers:
            settings, lever_notes = lever_settings(device, case, compile_ok)
            if compile_requested and not compile_ok:
                lever_notes.append("torch.compile: on CPU measured at the demo sizes only (compile time)")
            for levers in settings:
                label = levers.label()
                m = guarded(lambda lv=levers, c=case, b=batch, s=steps: measure_train(c.build, c, device, lv, b, s),
                            f"{case.name} {label}")  # fmt: skip
                by_label[label] = m
                lever_row = {"model": case.name, "lever": label, "off_images_per_s": base.get("images_per_s"), **m}
                if "images_per_s" in m:
                    lever_row |= report.achieved(flops, m["images_per_s"])
                    if "images_per_s" in base:
                        lever_row["speedup"] = m["images_per_s"] / base["images_per_s"]
                    print(f"  {label}: {m['images_per_s']:.2f} images/s, peak {m['peak_mem_mib']:.0f} MiB")
                res["levers"].append(lever_row)
                lever_rows.append(lever_row)
            if lever_notes:
                res["levers"].append({"model": case.name, "notes": lever_notes})
        if diffusers is None:
            continue
        peer_build = lambda c=case: build_peer(c, diffusers)  # noqa: E731
        peer_params = count_params(peer_build())
        peer_flops = train_flops_per_image(peer_build, case)
        kind_name = "UNet2DModel" if case.backbone == "unet" else "DiTTransformer2DModel"
        print(f"  peer diffusers.{kind_name}: {peer_params / 1e6:.2f}M params (ours {params / 1e6:.2f}M)")
        peer_settings = [Levers()]
        if case.levers:
            peer_settings.append(lever_settings(device, case, compile_ok)[0][-1])
        for levers in peer_settings:
            label = levers.label()
            m = guarded(lambda lv=levers, c=case, b=batch, s=steps, f=peer_build: measure_train(f, c, device, lv, b, s),
                        f"{case.name} peer {label}")  # fmt: skip
            ours = by_label.get(label, {})
            peer_row = {
                "model": case.name,
                "peer": f"diffusers.{kind_name}",
                "levers": label,
                "ours_params": params,
                "peer_params": peer_params,
                "param_ratio": peer_params / params,
                "ours_train_flops_per_image": flops,
                "peer_train_flops_per_image": peer_flops,
                "ours_images_per_s": ours.get("images_per_s"),
                "ours_peak_mem_mib": ours.get("peak_mem_mib"),
                "peer": f"diffusers.{kind_name}",
                "note": case.peer_note,
                **{f"peer_{k}": v for k, v in m.items()},
            }
            if "images_per_s" in m and ours.get("images_per_s"):
                peer_row["ours_over_peer"] = ours["images_per_s"] / m["images_per_s"]
                peer_row["peer_mfu"] = report.achieved(peer_flops, m["images_per_s"])["mfu"]
                peer_row["ours_mfu"] = report.achieved(flops, ours["images_per_s"])["mfu"]
                print(f"  peer {label}: {m['images_per_s']:.2f} images/s, ours/peer {peer_row['ours_over_peer']:.2f}")
            res["peers"].append(peer_row)
            peer_rows.append(peer_row)

    # 2. sampling: DDIM-50, CFG w = 3, class-conditional models; one 2B forward vs two B forwards per step
    demo = next(c for c in cases if c.name == "unet-demo")
    ref = next(c for c in cases if c.name == ("dit-ref12" if not quick else "dit-demo"))
    demo_cond = Case(f"{demo.name}-cfg", demo.label + ", 5 classes", demo.spec, demo.image_size, demo.channels, 5,
                     {"cpu": 4 if quick else 64, "cuda": 256}, demo.steps)  # fmt: skip
    ref_cond = Case(f"{ref.name}-cfg", ref.label, ref.spec, ref.image_size, ref.channels, ref.num_classes,
                    {"cpu": 2, "cuda": 32}, ref.steps)  # fmt: skip
    sample_cases = [(demo_cond, 50)]
    ref_steps = 50 if kind == "cuda" or quick else args.cpu_sample_steps
    sample_cases.append((ref_cond, ref_steps))
    if kind == "cuda" and not quick:
        a = next(c for c in cases if c.name == "unet-a")
        sample_cases.append((Case("unet-a-cfg", a.label + ", 100 classes", a.spec, a.image_size, a.channels, 100,
                                  {"cpu": 1, "cuda": 32}, a.steps), 50))  # fmt: skip
    sample_rows = []
    for case, steps in sample_cases:
        batch = case.batch[kind]
        print(f"\n[sample] {case.name}: DDIM-{steps} run for DDIM-50, CFG w=3, batch {batch}")
        torch.manual_seed(0)
        model = case.build().to(device).eval()
        variants: list[tuple[str, nn.Module, bool]] = [
            ("ours, CFG batched (2B)", model, False),
            ("ours, CFG two forwards (B + B)", TwoForwardCFG(model), False),
        ]
        if kind == "cuda":
            variants.append(("ours, CFG batched (2B), bf16 autocast", model, True))
        if diffusers is not None and (kind == "cuda" or case is demo_cond or quick):
            variants.append(("diffusers peer, CFG batched (2B)", build_peer(case, diffusers).to(device).eval(), False))
        for label, net, bf16 in variants:
            m = guarded(lambda n=net, c=case, b=batch, s=steps, h=bf16: measure_sampling(n, c, device, b, s, h), label)
            row = {"model": case.name, "variant": label, "batch": batch, "sampler": "DDIM-50 (η=0)",
                   "guidance_scale": 3.0, **m}  # fmt: skip
            if "seconds" in m:
                row["seconds_ddim50"] = m["seconds"] * 50 / steps
                row["images_per_s"] = batch / row["seconds_ddim50"]
                row["extrapolated"] = steps != 50
                print(f"  {label}: {row['images_per_s']:.3f} images/s" + (f" (from {steps} steps)" if steps != 50 else ""))
            res["sampling"].append(row)
            sample_rows.append(row)
        del model, variants
        release_memory(device)

    # 3. Inception feature extraction, random weights, 64² → 299²
    n_img = args.inception_images or (4 if quick else 64 if kind == "cpu" else 1024)
    ext_batch = min(n_img, 32 if kind == "cpu" else 256)
    print(f"\n[features] FIDInceptionV3 (random init), {n_img} images 64² → 299², batch {ext_batch}")
    torch.manual_seed(0)
    net = inception.FIDInceptionV3().eval()
    extractor = Extractor("inception", net, lambda x: inception.preprocess(torch.as_tensor(x), "pytorch-fid"))
    images = np.random.default_rng(0).integers(0, 256, (n_img, 64, 64, 3), dtype=np.uint8)
    extractor.extract(images[: min(8, n_img)], batch_size=ext_batch, device=device)  # warm-up
    t0 = time.perf_counter()
    extractor.extract(images, batch_size=ext_batch, device=device)
    synchronize(device)
    t_ext = time.perf_counter() - t0
    res["features"] = {"network": "core.inception.FIDInceptionV3 (random init)", "images": n_img, "batch": ext_batch,
                       "input": "uint8 64x64 -> preprocess('pytorch-fid') -> 299x299", "path": "core.features.Extractor",
                       "seconds": t_ext, "images_per_s": n_img / t_ext}  # fmt: skip
    print(f"  {n_img / t_ext:.2f} images/s")
    if notes:
        res["notes"] = notes

    # tables
    mfu_col = peak is not None
    header = ["model", "params", "batch", "images/s", "peak mem (MiB)", "TFLOP/s"] + (["MFU"] if mfu_col else [])
    rows = []
    for r in train_rows:
        row = [r["model"], f"{r['params'] / 1e6:.2f}M", str(r.get("batch", "—")), fmt(r.get("images_per_s"), ".2f"),
               fmt(r.get("peak_mem_mib"), ".0f"), fmt(r.get("tflops_per_s"), ".3f")]  # fmt: skip
        rows.append(row + ([fmt(100 * r["mfu"], ".1f", "%") if r.get("mfu") else "—"] if mfu_col else []))
    print_table("Training step (fp32 baseline)", header, rows)
    print_table("Levers (training step)", ["model", "levers", "off images/s", "on images/s", "on/off"],
                [[r["model"], r["lever"], fmt(r.get("off_images_per_s"), ".2f"), fmt(r.get("images_per_s"), ".2f"),
                  fmt(r.get("speedup"), ".2f", "×")] for r in lever_rows])  # fmt: skip
    if peer_rows:
        print_table("Peers (training step)",
                    ["model", "peer", "levers", "params ours / peer", "ours images/s", "peer images/s", "ours/peer"],
                    [[r["model"], r["peer"], r["levers"], f"{r['ours_params'] / 1e6:.2f}M / {r['peer_params'] / 1e6:.2f}M",
                      fmt(r.get("ours_images_per_s"), ".2f"), fmt(r.get("peer_images_per_s"), ".2f"),
                      fmt(r.get("ours_over_peer"), ".2f", "×")] for r in peer_rows])  # fmt: skip
    print_table("Sampling (DDIM-50, CFG w = 3)", ["model", "variant", "batch", "images/s"],
                [[r["model"], r["variant"] + (" (extrapolated)" if r.get("extrapolated") else ""), str(r["batch"]),
                  fmt(r.get("images_per_s"), ".3f")] for r in sample_rows])  # fmt: skip
    print(f"\nInception feature extraction (64² → 299²): {res['features']['images_per_s']:.2f} images/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Checks of the GPU paths. Those marked ``cuda`` run only where CUDA is available (``bench/gpu_check.sh`` runs
this file on a GPU machine); the rest run on every device there is, the CPU included.

They check what CPU runs cannot: the sampler on CUDA gives the CPU's images from the same x_T; training with
every speed lever on CUDA (bf16, TF32, channels-last, fused AdamW, torch.compile) runs, keeps fp32 weights and
follows the fp32 losses; ``InputWait`` counts the GPU's idle time and only that; Inception features computed
on the GPU (resized there) equal the CPU's."""

from __future__ import annotations

import csv
import shutil
import time

import pytest
import torch

from core import data
from core.config import sampler_spec
from core.diffusion import GaussianDiffusion
from core.models import build_model, load_checkpoint
from core.sampling import sample
from core.stages import train as train_stage

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", DEVICES)
def test_input_wait_is_the_wait_for_the_batch_alone(device):
    """50 ms spent getting the batch count; 100 ms of the step's own work after it does not."""
    dev = torch.device(device)
    waiting = data.InputWait(dev)
    x = torch.randn(512, 512, device=dev)
    for _ in range(2):
        waiting.before_batch()
        time.sleep(0.05)  # the loader
        waiting.batch_ready()
        for _ in range(20):
            x = (x @ x).tanh()
        float(x.sum())  # the step's synchronisation
        time.sleep(0.1)  # work after the batch was ready is not input wait
        wait = waiting.step_done()
        assert 0.045 < wait < 0.09


@cuda
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_ddim_on_cuda_gives_the_cpus_images(tiny_spec, guidance_scale):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = build_model(tiny_spec, 8, num_classes=5)
    with torch.no_grad():  # random weights everywhere (the zero-initialised output layers too)
        for p in model.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    model.eval()
    diffusion = GaussianDiffusion.from_spec(tiny_spec["diffusion"])
    x_T = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 5
    spec = sampler_spec("ddim", 10, eta=0.0)
    cpu = sample(model, diffusion, x_T, spec, y, guidance_scale)
    gpu = sample(model.cuda(), diffusion, x_T.cuda(), spec, y.cuda(), guidance_scale)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


def log_rows(out) -> list[dict[str, str]]:
    with open(out / "train_log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@cuda
@pytest.mark.parametrize("compile", [False, True], ids=["levers", "levers+compile"])
def test_training_on_cuda_with_every_lever(tiny_spec, tiny_dataset, tmp_path, compile):
    """fp32 on CUDA, then bf16 + TF32 + channels-last + fused AdamW (+ compile, its own case so that
    bench/gpu_check.sh times it apart): same noise (one device generator), so the lever run follows the fp32
    losses; weights and optimizer state stay fp32, and the checkpoint records the precision."""
    train_stage.run(tiny_spec, str(tiny_dataset), str(tmp_path / "fp32"), "cuda")
    levers = {"precision": "bf16", "tf32": True, "channels_last": True, "fused_adamw": True, "compile": compile}
    fast = {**tiny_spec, "train": {**tiny_spec["train"], **levers}}
    try:
        train_stage.run(fast, str(tiny_dataset), str(tmp_path / "fast"), "cuda")
    finally:  # the lever sets TF32 for the whole process; later tests expect it off
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    base, rows = log_rows(tmp_path / "fp32"), log_rows(tmp_path / "fast")
    assert [float(r["loss"]) for r in rows] == pytest.approx([float(r["loss"]) for r in base], rel=5e-2)
    assert all(float(r["peak_mem_mb"]) > 0 for r in rows)
    waits = [float(r["input_wait_s"]) for r in rows]
    assert all(0 <= w < 1 for w in waits)
    state = load_checkpoint(tmp_path / "fast" / "ckpt" / "step0000012.pt")
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    assert state["optimizer"]["param_groups"][0]["fused"] is True
    assert state["meta"]["precision"] == "bf16 autocast + TF32"


@cuda
def test_resume_on_cuda_equals_the_uninterrupted_run(tiny_spec, tiny_dataset, tmp_path):
    """The device generator's state and the prefetched loader's state come back from the checkpoint (to
    1e-4: cuDNN's backward kernels may add in another order)."""
    train_stage.run(tiny_spec, str(tiny_dataset), str(tmp_path / "full"), "cuda")
    part = tmp_path / "part"
    train_stage.run(tiny_spec, str(tiny_dataset), str(part), "cuda")
    shutil.copyfile(part / "state" / "step0000008.pt", part / "state" / "latest.pt")
    shutil.rmtree(part / "ckpt")
    train_stage.run(tiny_spec, str(tiny_dataset), str(part), "cuda")
    a = [float(r["loss"]) for r in log_rows(tmp_path / "full")]
    b = [float(r["loss"]) for r in log_rows(part)]
    assert len(a) == len(b) == 12 and b == pytest.approx(a, rel=1e-4)


@cuda
@pytest.mark.parametrize("mode", ["pytorch-fid", "tf"])
def test_inception_features_on_cuda_equal_the_cpus(mode):
    """Batches go to the GPU as uint8 and are resized there; with TF32 off the features match the CPU's."""
    from core.features import Extractor
    from core.nets import inception

    torch.manual_seed(0)
    model = inception.FIDInceptionV3()
    images = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8).numpy()
    extractor = Extractor("inception", model, lambda x: inception.preprocess(torch.as_tensor(x), mode))
    f_cpu, l_cpu = extractor.extract(images, batch_size=4, device="cpu")
    f_gpu, l_gpu = extractor.extract(images, batch_size=4, device="cuda")
    assert f_gpu == pytest.approx(f_cpu, rel=1e-3, abs=1e-4) and l_gpu == pytest.approx(l_cpu, rel=1e-3, abs=1e-4)

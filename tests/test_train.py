import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from core import training
from core.diffusion import GaussianDiffusion
from core.models import load_checkpoint, load_denoiser
from core.stages import train as train_stage
from tests.conftest import ROOT, TINY_MODEL, as_json, model_spec


def run_train(spec, data, out):
    train_stage.run(spec, str(data), str(out), "cpu")


def states_equal(a, b):
    for key in ("model",):
        for k in a[key]:
            if not torch.equal(a[key][k], b[key][k]):
                return False
    return all(torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]) for k in a["ema"]["model"])


def test_training_writes_checkpoints_log_and_provenance(tiny_spec, tiny_dataset, tmp_path):
    run_train(tiny_spec, tiny_dataset, tmp_path / "run")
    ckpts = sorted(p.name for p in (tmp_path / "run" / "ckpt").iterdir())
    assert ckpts == ["step0000004.pt", "step0000008.pt", "step0000012.pt"]
    state = load_checkpoint(tmp_path / "run" / "ckpt" / "step0000012.pt")
    assert state["step"] == 12
    assert {"model", "ema", "optimizer", "scheduler", "rng", "meta", "loader"} <= set(state)
    assert state["meta"]["spec"] == tiny_spec and state["meta"]["num_classes"] == 5
    with open(tmp_path / "run" / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert all(float(r["loss"]) > 0 for r in rows)
    # cosine schedule with warm-up: LR rises, then decays towards min_lr
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] < lrs[1] and lrs[-1] < lrs[2]
    model, meta = load_denoiser(tmp_path / "run" / "ckpt" / "step0000012.pt")
    out = model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 5]))
    assert out.shape == (2, 3, 8, 8) and meta["step"] == 12


@pytest.mark.slow  # training, killed or changed, and resumed
def test_resume_equals_uninterrupted_run(tiny_spec, tiny_dataset, tmp_path):
    run_train(tiny_spec, tiny_dataset, tmp_path / "full")
    part = tmp_path / "part"
    run_train(tiny_spec, tiny_dataset, part)
    # roll the run back to its step-8 state, as if it had died between steps 8 and 12 (a save replaces latest.pt
    # whole; it is never written in place: at the end it is a read-only second name of step0000012.pt)
    assert os.path.samefile(part / "state" / "latest.pt", part / "state" / "step0000012.pt")
    shutil.copyfile(part / "state" / "step0000008.pt", part / "state" / "rollback.tmp")
    os.replace(part / "state" / "rollback.tmp", part / "state" / "latest.pt")
    shutil.rmtree(part / "ckpt")
    (part / "train_log.csv").unlink()
    run_train(tiny_spec, tiny_dataset, part)
    a = load_checkpoint(tmp_path / "full" / "ckpt" / "step0000012.pt")
    b = load_checkpoint(part / "ckpt" / "step0000012.pt")
    assert states_equal(a, b)
    with open(tmp_path / "full" / "train_log.csv") as f1, open(part / "train_log.csv") as f2:
        l1 = [(r["step"], r["loss"]) for r in csv.DictReader(f1)]
        l2 = [(r["step"], r["loss"]) for r in csv.DictReader(f2)]
    assert l1 == l2


def test_resume_on_a_gpu_reads_the_state_on_the_cpu(tiny_spec, tiny_dataset, tmp_path):
    """Issue 21, defect 1: on CUDA the live state was loaded with map_location=<the GPU>, which made the RNG and
    loader states CUDA tensors that torch.set_rng_state refuses, so every preempted GPU job failed on its retry.
    Emulated on the CPU: the state's device says cuda:0 while its tensors live on the CPU; resume must read the
    checkpoint on the CPU (with a CUDA map_location this machine's CPU-only torch cannot even read it) and restore
    the step, the weights and every RNG stream as CPU tensors."""
    out = tmp_path / "run"
    run_train(tiny_spec, tiny_dataset, out)
    saved = load_checkpoint(out / "state" / "step0000008.pt")
    shutil.copyfile(out / "state" / "step0000008.pt", out / "state" / "latest.pt")
    s = train_stage.setup(tiny_spec, str(tiny_dataset), torch.device("cpu"), train_stage.distributed.Context())
    s.state.device = torch.device("cuda", 0)
    train_stage.resume(s, out, train_stage.distributed.Context())
    assert s.state.step == 8
    assert not list((out / "state").glob("*.corrupt-*")), "the state was taken for corrupt"
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    assert torch.equal(s.state.noise_gen.get_state(), saved["rng"]["noise"])
    for k, v in saved["model"].items():
        assert torch.equal(s.state.model.state_dict()[k], v), k


@pytest.mark.slow  # training, killed or changed, and resumed
def test_changed_spec_does_not_resume_from_stale_state(tiny_spec, tiny_dataset, tmp_path):
    run_train(tiny_spec, tiny_dataset, tmp_path / "run")
    other = {**tiny_spec, "train": {**tiny_spec["train"], "lr": 5e-4}}
    run_train(other, tiny_dataset, tmp_path / "run")
    stale = [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("state.stale-")]
    assert len(stale) == 1
    assert load_checkpoint(tmp_path / "run" / "ckpt" / "step0000012.pt")["meta"]["spec"]["train"]["lr"] == 5e-4


def test_non_finite_loss_names_the_step_and_keeps_last_checkpoint(tiny_spec, tiny_dataset, tmp_path):
    spec = {**tiny_spec, "train": {**tiny_spec["train"], "lr": 1e30, "grad_clip": None, "warmup_steps": 0}}
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step \d+"):
        run_train(spec, tiny_dataset, tmp_path / "run")
    assert not (tmp_path / "run" / "ckpt").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGKILL])
@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_state(tiny_spec, tiny_dataset, tmp_path, sig):
    """SIGTERM/SIGUSR1 (SLURM's warnings) checkpoint and exit 75; SIGKILL loses the steps since the last
    checkpoint. Either way a rerun ends bitwise equal to a run that was never interrupted (CPU, 1 thread)."""
    spec = {**tiny_spec, "train": {**tiny_spec["train"], "steps": 120, "checkpoint_every": 20}}
    run_train(spec, tiny_dataset, tmp_path / "full")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core.stages.train",
            "--spec",
            as_json(spec),
            "--data",
            str(tiny_dataset),
            "--out-dir",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "state" / "step0000040.pt").exists():
        time.sleep(0.05)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == train_stage.EXIT_PREEMPTED, output
        assert "checkpointed" in output
    stopped_at = load_checkpoint(out / "state" / "latest.pt")["step"]
    assert 40 <= stopped_at < 120, "the signal must arrive mid-run for this test to mean anything"
    assert not (out / "ckpt").exists()  # nothing published for an unfinished run
    run_train(spec, tiny_dataset, out)
    assert states_equal(
        load_checkpoint(tmp_path / "full" / "ckpt" / "step0000120.pt"), load_checkpoint(out / "ckpt" / "step0000120.pt")
    )
    with open(tmp_path / "full" / "train_log.csv") as f1, open(out / "train_log.csv") as f2:
        assert [r["loss"] for r in csv.DictReader(f1)] == [r["loss"] for r in csv.DictReader(f2)]


def test_ema_closed_form_and_warmup():
    from core.models import EMA

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9, update_every=2, warmup_power=0)
    for step in range(1, 7):
        model.weight.data.fill_(float(step))
        ema.update(model, step)  # updates at steps 2, 4, 6
    # θ_ema = 0.9·(0.9·(0.9·0 + 0.1·2) + 0.1·4) + 0.1·6
    assert ema.model.weight.item() == pytest.approx(0.9 * (0.9 * 0.2 + 0.4) + 0.6)
    warm = EMA(model, decay=0.999, warmup_power=2 / 3)
    assert warm.current_decay() == 0.0  # the first update copies the weights
    warm.num_updates = 999
    assert warm.current_decay() == pytest.approx(1 - 1000 ** (-2 / 3))
    warm.num_updates = 10**9
    assert warm.current_decay() == 0.999


def test_ema_update_is_the_per_tensor_rule_on_every_parameter(tiny_spec):
    """θ_ema ← lerp(θ_ema, θ, 1 − d) for each of the UNet's tensors (the update is one fused call); buffers copied."""
    from core.models import EMA, build_model

    torch.manual_seed(0)
    model = build_model(tiny_spec, 8, num_classes=5)
    ema = EMA(model, decay=0.8, warmup_power=0)
    expected = [p.detach().clone() for p in model.parameters()]
    for step in (1, 2, 3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model, step)
        expected = [torch.lerp(e, p.detach(), 0.2) for e, p in zip(expected, model.parameters(), strict=True)]
    got = list(ema.model.parameters())
    assert len(got) == len(expected) > 20 and all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


def early_spec(tiny_spec, **early):
    """The tiny model with early stopping, completed from the schema as a study's model would be."""
    entry = {
        **TINY_MODEL,
        "train": {**TINY_MODEL["train"], "early_stopping": {"every": 2, "patience": 2, "num_images": 16, **early}},
    }
    return model_spec(entry)


def read_val_log(run):
    with open(run / "val_log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_early_stopping_stops_after_patience_and_publishes_the_best_state(tiny_spec, tiny_dataset, tmp_path):
    # LR ~ 0: the weights, hence the validation loss, never change, so only the first evaluation improves
    spec = early_spec(tiny_spec)
    spec["train"].update(lr=1e-30, min_lr=0.0)
    run_train(spec, tiny_dataset, tmp_path / "run")
    rows = read_val_log(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # improved at 2, then 2 evaluations without improvement
    assert {int(r["best_step"]) for r in rows} == {2}
    with open(tmp_path / "run" / "train_log.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 6  # stopped at step 6 of 12
    assert sorted(p.name for p in (tmp_path / "run" / "ckpt").iterdir()) == ["best.pt", "step0000004.pt"]
    best = load_checkpoint(tmp_path / "run" / "ckpt" / "best.pt")
    assert best["step"] == 2 and best["early_stopping"]["step"] == 2


def test_best_checkpoint_has_the_lowest_logged_validation_loss(tiny_spec, tiny_dataset, tmp_path):
    spec = early_spec(tiny_spec, patience=100, weights="model")
    run = tmp_path / "run"
    run_train(spec, tiny_dataset, run)
    rows = read_val_log(run)
    assert [int(r["step"]) for r in rows] == list(range(2, 13, 2))  # never stopped: ran all 12 steps
    best_row = min(rows, key=lambda r: float(r["val_loss"]))
    best = load_checkpoint(run / "ckpt" / "best.pt")
    assert best["step"] == int(best_row["step"]) == int(rows[-1]["best_step"])
    # the logged loss is the fixed-batch ε-loss of the saved weights, recomputed independently here
    model, _ = load_denoiser(run / "ckpt" / "best.pt", use_ema=False)
    diffusion = GaussianDiffusion.from_spec(spec["diffusion"])
    val = training.Validation(str(tiny_dataset), "images", 16, diffusion, torch.device("cpu"), None, 5)
    assert val.loss(model, 5) == pytest.approx(float(best_row["val_loss"]), rel=1e-5)


def test_the_validation_batch_is_held_compactly_and_does_not_depend_on_the_batch_size(tiny_spec, tiny_dataset):
    """Issue 21 (a rank's memory): the fixed validation batch keeps its rows as stored (uint8), not float copies of
    images and noise; each image's noise comes from its own seed, so the loss is the same for any batch size and
    equals the loss computed image by image from those draws."""
    diffusion = GaussianDiffusion.from_spec(tiny_spec["diffusion"])
    val = training.Validation(str(tiny_dataset), "images", 16, diffusion, torch.device("cpu"), None, 5)
    assert val.rows.dtype == np.uint8 and not hasattr(val, "noise")
    torch.manual_seed(0)
    from core.models import build_model

    model = build_model(tiny_spec, 8, 3, 5)
    by_5, by_16 = val.loss(model, 5), val.loss(model, 16)
    assert by_5 == pytest.approx(by_16, rel=1e-6)
    singles = []
    for i in range(16):
        x0, y, t, noise = val.inputs(slice(i, i + 1))
        with torch.no_grad():
            singles.append(float(diffusion.training_loss(model.eval(), x0, y, t=t, noise=noise)))
    assert by_16 == pytest.approx(sum(singles) / 16, rel=1e-6)
    *_, noise_a = val.inputs(slice(3, 5))
    *_, noise_b = val.inputs(slice(0, 8))
    assert torch.equal(noise_a, noise_b[3:5])  # an image's noise is its own, whatever batch it is drawn in


@pytest.mark.slow  # training, killed or changed, and resumed
def test_early_stopping_resumes_to_the_uninterrupted_validation_log(tiny_spec, tiny_dataset, tmp_path):
    spec = early_spec(tiny_spec, patience=100)
    run_train(spec, tiny_dataset, tmp_path / "full")
    part = tmp_path / "part"
    run_train(spec, tiny_dataset, part)
    shutil.copyfile(part / "state" / "step0000004.pt", part / "state" / "latest.pt")
    shutil.rmtree(part / "ckpt")
    run_train(spec, tiny_dataset, part)
    assert read_val_log(part) == read_val_log(tmp_path / "full")
    assert states_equal(
        load_checkpoint(tmp_path / "full" / "ckpt" / "best.pt"), load_checkpoint(part / "ckpt" / "best.pt")
    )


def train_losses(spec, data, out):
    run_train(spec, data, out)
    with open(out / "train_log.csv", newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.mark.parametrize(
    ("lever", "rel"),
    [({"channels_last": True}, 1e-5), ({"fused_adamw": True}, 1e-5), ({"precision": "bf16"}, 5e-2)],
)
def test_speed_levers_train_the_same_model(tiny_spec, tiny_dataset, tmp_path, lever, rel):
    base = train_losses(tiny_spec, tiny_dataset, tmp_path / "base")
    spec = {**tiny_spec, "train": {**tiny_spec["train"], **lever}}
    fast = train_losses(spec, tiny_dataset, tmp_path / "fast")
    assert fast == pytest.approx(base, rel=rel)
    state = load_checkpoint(tmp_path / "fast" / "ckpt" / "step0000012.pt")
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    if "precision" in lever:  # bf16 autocast really ran: the losses differ from fp32's after the first update
        assert fast != base
    if "channels_last" in lever:  # the lever was applied: 4-D weights are stored channels-last
        conv = state["model"]["conv_in.weight"]
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    if "fused_adamw" in lever:
        assert state["optimizer"]["param_groups"][0]["fused"] is True


def test_prefetch_trains_on_the_same_batches_and_logs_the_input_wait(tiny_spec, tiny_dataset, tmp_path):
    """The prefetch thread changes when batches are read, never which: the losses are bit-identical."""
    inline = {**tiny_spec, "train": {**tiny_spec["train"], "prefetch": False}}
    ahead = {**tiny_spec, "train": {**tiny_spec["train"], "prefetch": True}}
    assert train_losses(ahead, tiny_dataset, tmp_path / "ahead") == train_losses(inline, tiny_dataset, tmp_path / "in")
    with open(tmp_path / "ahead" / "train_log.csv", newline="") as fh:
        waits = [float(r["input_wait_s"]) for r in csv.DictReader(fh)]
    assert len(waits) == 12 and all(0 <= w < 5 for w in waits)


@pytest.mark.slow
def test_compile_trains_the_same_model_and_keeps_its_cache(tiny_spec, tiny_dataset, tmp_path):
    """``train.compile`` through the stage's command line, as the rule runs it: the compiled network follows
    the eager losses, and Inductor's cache lands in ``--compile-cache`` for the next job to reuse."""
    short = {**tiny_spec, "train": {**tiny_spec["train"], "steps": 4}}
    eager = train_losses(short, tiny_dataset, tmp_path / "eager")
    spec = {**short, "train": {**short["train"], "compile": True}}
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    cmd = [sys.executable, "-m", "core.stages.train", "--spec", as_json(spec), "--data", str(tiny_dataset)]
    cmd += ["--out-dir", str(tmp_path / "compiled"), "--device", "cpu", "--threads", "1"]
    subprocess.run([*cmd, "--compile-cache", str(tmp_path / "cache")], cwd=ROOT, env=env, check=True)
    with open(tmp_path / "compiled" / "train_log.csv", newline="") as fh:
        compiled = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert sum(len(files) for _, _, files in os.walk(tmp_path / "cache")) > 0


def test_a_kept_checkpoint_takes_its_disk_once_and_later_saves_leave_it_alone(tiny_spec, tiny_dataset, tmp_path):
    """Found by the rehearsal (issue 22): every kept state was also copied to ckpt/, doubling the full study's
    checkpoint disk (855 GiB). The published name is now a read-only hard link of the kept state, and a run that
    saves latest.pt again replaces it and never changes a kept file."""
    out = tmp_path / "run"
    run_train(tiny_spec, tiny_dataset, out)
    for name in ("step0000004.pt", "step0000008.pt", "step0000012.pt"):
        kept, published = out / "state" / name, out / "ckpt" / name
        assert os.path.samefile(kept, published) and published.stat().st_nlink == 2 + (name == "step0000012.pt")
        assert published.stat().st_mode & 0o222 == 0  # read-only: nothing writes into it in place
    before = load_checkpoint(out / "ckpt" / "step0000012.pt")
    shutil.copyfile(out / "state" / "step0000004.pt", out / "state" / "rollback.tmp")
    os.replace(out / "state" / "rollback.tmp", out / "state" / "latest.pt")  # as a save replaces it
    assert states_equal(load_checkpoint(out / "ckpt" / "step0000012.pt"), before)
    assert not os.path.samefile(out / "state" / "latest.pt", out / "ckpt" / "step0000012.pt")

"""Hostile and broken inputs: each must either give a correct result or fail with an error that names what to fix —
never run a command nobody asked for, write outside results_dir, or give a number that looks right but is not.

The config cases are one table (``HOSTILE``); then quoting, permissions, stale data, non-finite values, corrupt
files of every kind, concurrent writers, a full disk and code changes, each with the behaviour it guarantees.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from core import config as cfg
from core import data, folders, launch, paths, provenance
from core.models import EMA, load_checkpoint
from core.plan import Plan
from core.stages import evaluate as evaluate_stage
from core.stages import report as report_stage
from core.stages import sample as sample_stage
from core.stages import train as train_stage
from core.training import NonFinite, TrainState
from tests.conftest import ROOT, TINY_MODEL, model_spec, sample_spec, shapes_dataset

BASE = yaml.safe_load((ROOT / "config.yaml").read_text())


def with_change(change) -> dict:
    c = copy.deepcopy(BASE)
    change(c)
    return c


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def tiny(c: dict) -> dict:
    return c["studies"]["tiny"]


def claim_naming(c: dict, study: str, claim: str, added: dict | None = None) -> None:
    """The tiny study's one claim names ``claim`` of ``study`` as its reference (``added`` to that study first)."""
    if added:
        c["studies"][study]["claims"].append(added)
    tiny(c)["claims"] = [{"claim": "x", "a": "DDIM", "b": "DDPM-CFG", "reference": {"study": study, "claim": claim}}]


# (what, change to config.yaml, the error it must raise): checked at planning time, before any job
HOSTILE = [
    (
        "autoencoder named $(touch x)",
        lambda c: rename(c["autoencoders"], "shapes-tiny-f2", "$(touch x)"),
        r"config key autoencoders: the name '\$\(touch x\)' is not allowed: names are 1 to 64 letters",
    ),
    (
        "autoencoder named a||touch x||b",
        lambda c: rename(c["autoencoders"], "shapes-tiny-f2", "a||touch x||b"),
        r"the name 'a\|\|touch x\|\|b' is not allowed",
    ),
    (
        "study named ..",
        lambda c: rename(c["studies"], "tiny", ".."),
        r"config key studies: the name '\.\.' is not allowed",
    ),
    (
        "model named ..",
        lambda c: rename(tiny(c)["models"], "dit-vae-cfg", ".."),
        r"config key studies\.tiny\.models: the name '\.\.' is not allowed",
    ),
    (
        "experiment named ../x",
        lambda c: rename(tiny(c)["experiments"], "DDIM", "../x"),
        r"studies\.tiny\.experiments: the name '\.\./x' is not allowed",
    ),
    (
        "dataset named .hidden",
        lambda c: rename(c["datasets"], "shapes-tiny", ".hidden"),
        r"config key datasets: the name '\.hidden' is not allowed",
    ),
    (
        "name with a space",
        lambda c: rename(tiny(c)["experiments"], "DDIM", "my row"),
        r"the name 'my row' is not allowed",
    ),
    (
        "name of 65 characters",
        lambda c: rename(tiny(c)["experiments"], "DDIM", "x" * 65),
        r"the name 'x{65}' is not allowed",
    ),
    (
        "study selection naming ..",
        lambda c: c.update(studies_to_run=[".."]),
        r"config key studies_to_run\.0: '\.\.' does not match",
    ),
    (
        "environment module with a ;",
        lambda c: c.update(envmodules=["cuda; rm -rf ~"]),
        r"config key envmodules\.0: .* does not match",
    ),
    ("empty results_dir", lambda c: c.update(results_dir=""), r"config key results_dir: '' should be non-empty"),
    (
        "seed beyond 2^31",
        lambda c: tiny(c)["defaults"]["model"]["train"].update(seed=2**63),
        r"studies\.tiny\.defaults\.model\.train\.seed: 9223372036854775808 is greater than the maximum",
    ),
    (
        "norm_groups not dividing a width",
        lambda c: tiny(c)["models"]["unet-cfg"]["net"].update(norm_groups=3),
        r"studies\.tiny\.models\.unet-cfg\.net\.norm_groups: 3 groups do not divide the widths \[8, 16\]",
    ),
    (
        "num_heads not dividing an attention width",
        lambda c: tiny(c)["models"]["unet-cfg"]["net"].update(num_heads=3),
        r"studies\.tiny\.models\.unet-cfg\.net\.num_heads: 3 heads do not divide the attention widths \[16\]",
    ),
    (
        "DiT heads not dividing hidden_size",
        lambda c: tiny(c)["models"]["dit-vae-cfg"]["net"].update(num_heads=3),
        r"dit-vae-cfg\.net\.num_heads: 3 heads do not divide hidden_size 16",
    ),
    (
        "beta_start above beta_end",
        lambda c: tiny(c)["defaults"]["model"]["diffusion"].update(beta_start=0.03),
        r"studies\.tiny\.models\.unet-cfg\.diffusion\.beta_end: 0\.02 must exceed beta_start 0\.03",
    ),
    (
        "beta_end of 1",
        lambda c: tiny(c)["defaults"]["model"]["diffusion"].update(beta_end=1.0),
        r"diffusion\.beta_end: 1\.0 is greater than or equal to the maximum of 1",
    ),
    (
        "kid subsets larger than the reference",
        lambda c: tiny(c)["evaluation"].update(reference_num=20, kid_subset_size=30),
        r"studies\.tiny\.evaluation\.kid_subset_size: 30 exceeds the 20 reference images",
    ),
    (
        "kid subsets larger than the samples",
        lambda c: tiny(c)["evaluation"].update(kid_subset_size=40),
        r"experiments\.\S+\.num_samples: 32 samples are fewer than evaluation\.kid_subset_size = 40",
    ),
    (
        "reference images beyond the built-in split",
        lambda c: tiny(c)["evaluation"].update(reference_num=100),
        r"config key studies\.tiny\.evaluation\.reference_num: needs 100 images of split 'val' of dataset 'shapes-tiny'"
        r" \(reference images\), but it has 64",
    ),
    (
        "a batch larger than the training split",
        lambda c: tiny(c)["defaults"]["model"]["train"].update(batch_size=256),
        r"studies\.tiny\.models\.unet-cfg\.train\.batch_size: needs 256 images of split 'train'",
    ),
    (
        "an option the sampler does not use",
        lambda c: tiny(c)["experiments"]["DDIM"]["sampler"].update(variance="fixed_large"),
        r"studies\.tiny\.experiments\.DDIM\.sampler: .*'variance' was unexpected",
    ),
    (
        "guidance on an unconditional model",
        lambda c: tiny(c)["models"]["unet-cfg"]["net"].update(class_conditional=False),
        r"guidance_scale: guidance needs a class-conditional model",
    ),
    (
        "more sampler steps than timesteps",
        lambda c: tiny(c)["experiments"]["DDIM"]["sampler"].update(steps=51),
        r"DDIM\.sampler\.steps: 51 steps exceed the model's diffusion\.timesteps = 50",
    ),
    (
        "a claim about an unknown row",
        lambda c: tiny(c).update(claims=[{"claim": "x", "a": "DDIM", "b": "nope"}]),
        r"studies\.tiny\.claims\.0\.b: 'nope' is not one of the study's experiments",
    ),
    (
        "a claim naming a claim of an unknown study",
        lambda c: claim_naming(c, "no", "x"),
        r"studies\.tiny\.claims\.0\.reference\.study: study 'no' is not defined under 'studies'",
    ),
    (
        "a claim naming an unknown claim of the full study",
        lambda c: claim_naming(c, "full-a", "x"),
        r"claims\.0\.reference\.claim: study 'full-a' has no claim 'x' \(its claims: 'guidance improves FID",
    ),
    (
        "a claim on FD naming a claim on IS",
        lambda c: claim_naming(c, "full-b", "y", {"claim": "y", "a": "baseline", "b": "exp1-low-lr", "metric": "is"}),
        r"studies\.tiny\.claims\.0\.reference: the claim is on fid, the referenced claim on is",
    ),
    (
        "a claim naming a claim whose rows have no published numbers",
        lambda c: (
            claim_naming(c, "full-b", "y", {"claim": "y", "a": "baseline", "b": "exp1-low-lr"}),
            c["studies"]["full-b"]["experiments"]["exp1-low-lr"].pop("published"),
        ),
        r"reference: experiment 'exp1-low-lr' of study 'full-b' has no published fid "
        r"\(studies\.full-b\.experiments\.exp1-low-lr\.published\.fid\)",
    ),
    (
        "a batch not divisible by the GPUs",
        lambda c: tiny(c)["models"]["unet-cfg"].update(resources={"gpus": 3}),
        r"unet-cfg\.train\.batch_size: 16 \(the global batch\) is not divisible by the 3 data-parallel processes",
    ),
]


@pytest.mark.parametrize(("what", "change", "error"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_config_is_refused_naming_the_key(what, change, error):
    with pytest.raises(cfg.ConfigError, match=error):
        Plan(with_change(change))


def snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_a_hostile_name_fails_before_any_job_and_writes_nothing(tmp_path):
    c = with_change(lambda c: rename(c["autoencoders"], "shapes-tiny-f2", "$(touch INJECTED)"))
    c["results_dir"] = str(tmp_path / "results")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(c))
    proc = snakemake("-n", "--configfile", str(tmp_path / "c.yaml"), cwd=ROOT)
    assert proc.returncode != 0 and "is not allowed" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() and not (ROOT / "INJECTED").exists()


def test_every_value_in_every_rules_shell_command_is_quoted():
    """Quoting is the rule, not a judgement per value: each ``{…}`` of each rule's ``shell:`` ends in ``:q``, so a
    value that later becomes a string (a path, a name) cannot reach the shell unquoted."""
    blocks = [
        (path.name, m.group(1))
        for path in sorted((ROOT / "rules").glob("*.smk"))
        for m in re.finditer(r'^\s*shell:\n((?:\s+".*"\n?)+)', path.read_text(), re.M)
    ]
    assert blocks and len(blocks) == sum(p.read_text().count("shell:") for p in (ROOT / "rules").glob("*.smk"))
    fields = [(name, f) for name, block in blocks for f in re.findall(r"\{([^{}]*)\}", block)]
    assert len(fields) >= 2 * len(blocks)  # every command names at least its output and its log
    assert [x for x in fields if not x[1].endswith(":q")] == []


def test_every_rule_gets_hostile_paths_quoted(tmp_path):
    """A dataset folder, Inception weights and results_dir with a space, $(…), ; and quotes: every command Snakemake
    would run keeps each of them as (part of) one argument, so none can run anything."""
    evil = "a b$(touch INJECTED);'q\""
    data_dir = tmp_path / f"data {evil}"
    for split in ("train", "validation"):
        for k in range(2):
            (data_dir / split / f"c{k}").mkdir(parents=True)
            (data_dir / split / f"c{k}" / "x.png").touch()
    weights = tmp_path / f"w {evil}.pth"
    weights.touch()
    results = tmp_path / f"r {evil}"
    c = copy.deepcopy(BASE)
    c["results_dir"] = str(results)
    c["datasets"]["imagenet100"]["path"] = str(data_dir)
    c["metrics"] = {"inception_weights": str(weights)}
    c["studies_to_run"] = ["full-a", "tiny"]
    c["studies"]["tiny"]["evaluation"]["extractor"] = "classifier"  # so that every rule is planned
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(c))
    proc = snakemake("-n", "-p", "--configfile", str(tmp_path / "c.yaml"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    commands = [line.split("Shell command: ", 1)[1] for line in proc.stdout.splitlines() if "Shell command: " in line]
    commands = [c for c in commands if c != "None"]  # rule all runs no command
    stages = set()
    for cmd in commands:
        m = re.match(r"python -m (?:core\.stages\.(\w+)|core\.launch --gpus \d+ (?:--nodes \d+ )?(\w+))", cmd)
        assert m, cmd
        stages.add(m[1] or m[2])
    assert stages == set(launch.STAGES)  # every stage, whether started directly or through core.launch
    for cmd in commands:
        tokens = shlex.split(cmd)  # a shell would see these words, and no more
        assert not any(t in (";", "&&", "||", "|") for t in tokens), cmd
        for token in tokens:
            if "$(touch" in token:  # the hostile text only ever inside a quoted path or JSON argument
                assert token.startswith(("/", "--autoencoder=", "{", "[")), token
    assert not (ROOT / "INJECTED").exists() and not list(tmp_path.rglob("INJECTED"))


def test_outputs_follow_the_umask(tmp_path):
    script = (
        "from core import provenance; from core.models import save_checkpoint;"
        f"provenance.write_json('{tmp_path}/m.json', {{}}); save_checkpoint('{tmp_path}/c.pt', {{'meta': {{}}}});"
        f"provenance.clone('{tmp_path}/c.pt', '{tmp_path}/pub.pt', read_only=True)"
    )
    subprocess.run(
        ["sh", "-c", f"umask 002 && {shlex.quote(sys.executable)} -c {shlex.quote(script)}"], cwd=ROOT, check=True
    )
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"m.json": 0o664, "c.pt": 0o664, "pub.pt": 0o444}  # never mkstemp's 0600


def train(spec: dict, dataset: Path, out: Path) -> None:
    train_stage.run(spec, str(dataset), str(out), "cpu")


@pytest.fixture
def spec4():
    return model_spec({**TINY_MODEL, "train": {**TINY_MODEL["train"], "steps": 8, "checkpoint_every": 4}})


@pytest.mark.slow  # training, killed or changed, and resumed
def test_a_model_never_resumes_a_state_made_from_other_data(spec4, tmp_path):
    data_path = shapes_dataset(tmp_path / "d.h5", seed=0)
    train(spec4, data_path, tmp_path / "m")
    first = load_checkpoint(tmp_path / "m" / "ckpt" / "step0000008.pt")
    shapes_dataset(tmp_path / "d.h5", seed=1)  # the dataset changed (its seed), the spec did not
    train(spec4, data_path, tmp_path / "m")
    assert [p.name.startswith("state.stale-") for p in (tmp_path / "m").iterdir()].count(True) == 1
    second = load_checkpoint(tmp_path / "m" / "ckpt" / "step0000008.pt")
    assert second["meta"]["data"]["content_sha256"] != first["meta"]["data"]["content_sha256"]
    assert not torch.equal(first["model"]["conv_in.weight"], second["model"]["conv_in.weight"])  # retrained


def test_a_nan_gradient_with_a_finite_loss_stops_training_before_the_weights_take_it(
    spec4, tiny_dataset, tmp_path, monkeypatch
):
    calls = {"n": 0}
    real = train_stage.build_model

    def poisoned(*args, **kwargs):
        model = real(*args, **kwargs)

        def hook(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] == 6 else grad

        next(iter(model.parameters())).register_hook(hook)
        return model

    monkeypatch.setattr(train_stage, "build_model", poisoned)
    with pytest.raises(
        NonFinite,
        match=r"non-finite gradient norm \(nan\) at step 6 \(the loss was [0-9.]+\); the "
        r"last checkpoint on disk is .*state/step0000004\.pt",
    ):
        train(spec4, tiny_dataset, tmp_path / "m")
    state = load_checkpoint(tmp_path / "m" / "state" / "latest.pt")
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "m" / "ckpt").exists()


def test_non_finite_weights_are_never_saved(spec4, tiny_dataset):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    state = TrainState(
        model,
        EMA(model, 0.9),
        torch.optim.SGD(model.parameters(), 0.1),
        None,
        torch.Generator(),
        torch.device("cpu"),
        {},
    )
    with pytest.raises(NonFinite, match=r"non-finite weights at step 0 \(0:weight, 1:weight"):
        state.state_dict(spec4["train"])


def test_sampling_a_diverged_model_fails_naming_the_batch_and_the_checkpoint(spec4, tiny_dataset, tmp_path):
    train(spec4, tiny_dataset, tmp_path / "m")
    ckpt = load_checkpoint(tmp_path / "m" / "ckpt" / "step0000008.pt")
    ckpt["ema"]["model"]["conv_out.bias"].fill_(float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(ckpt, bad)
    spec = sample_spec({"sampler": {"name": "ddim", "steps": 3}, "num_samples": 8, "batch_size": 4})
    expected = rf"batch 0 \(images 0–3\) sampled from {bad} has \d+ non-finite values"
    with pytest.raises(FloatingPointError, match=expected):
        sample_stage.run(str(bad), spec, str(tmp_path / "s.h5"), "cpu")
    assert not (tmp_path / "s.h5").exists()
    with pytest.raises(FloatingPointError):
        data.to_uint8(torch.tensor([[[[float("nan")]]]]))  # quantisation never turns NaN into a pixel


def truncate(path: Path) -> None:
    size = path.stat().st_size
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One trained model, its sample file, reference statistics and metrics, as the stages write them."""
    from core.stages import reference_stats, train_classifier

    root = tmp_path_factory.mktemp("pipe")
    data_path = shapes_dataset(root / "d.h5")
    spec = model_spec({**TINY_MODEL, "train": {**TINY_MODEL["train"], "steps": 8, "checkpoint_every": 4}})
    train_stage.run(spec, str(data_path), str(root / "m"), "cpu")
    s_spec = sample_spec({"sampler": {"name": "ddim", "steps": 3}, "num_samples": 16, "batch_size": 8})
    sample_stage.run(str(root / "m" / "ckpt" / "step0000008.pt"), s_spec, str(root / "s.h5"), "cpu")
    clf = {"width": 8, "depth": 1, "steps": 5, "batch_size": 16, "lr": 0.003, "seed": 0}
    train_classifier.run(str(data_path), clf, str(root / "clf.pt"))
    extractor = {"kind": "classifier", "weights": str(root / "clf.pt")}
    reference_stats.run(str(data_path), "val", 0, extractor, str(root / "ref.npz"))
    options = {
        "is_splits": 2,
        "kid_subsets": 5,
        "kid_subset_size": 8,
        "bootstrap": 10,
        "fd_infinity": False,
        "batch_size": 8,
    }
    evaluate_stage.run(str(root / "s.h5"), str(root / "ref.npz"), extractor, str(root / "m.json"), options)
    return {"root": root, "data": data_path, "spec": spec, "s_spec": s_spec, "extractor": extractor, "options": options}


def copy_of(pipeline, tmp_path) -> dict:
    shutil.copytree(pipeline["root"], tmp_path / "p")
    return {**pipeline, "root": tmp_path / "p", "data": tmp_path / "p" / "d.h5"}


def test_a_truncated_live_state_is_named_and_training_falls_back_to_the_newest_readable_one(pipeline, tmp_path, capfd):
    p = copy_of(pipeline, tmp_path)
    state = p["root"] / "m" / "state"
    shutil.copyfile(state / "step0000004.pt", state / "latest.pt")  # as if killed after step 4 …
    truncate(state / "latest.pt")  # … while latest.pt was being damaged
    train_stage.run(p["spec"], str(p["data"]), str(p["root"] / "m"), "cpu")
    out = capfd.readouterr().out
    assert f"checkpoint {state / 'latest.pt'} is unreadable" in out and "falling back to an older state" in out
    assert "resuming from" in out and "step0000008.pt at step 8" in out
    assert list(state.glob("latest.pt.corrupt-*"))  # kept aside, not deleted


@pytest.mark.parametrize(
    ("kind", "consumer", "error"),
    [
        ("dataset", "train", r"cannot read .*d\.h5 as HDF5"),
        ("published checkpoint", "sample", r"checkpoint .*step0000008\.pt is unreadable"),
        ("sample file", "evaluate", r"cannot read .*s\.h5 as HDF5"),
        ("reference statistics", "evaluate", r"reference statistics .*ref\.npz are unreadable"),
        ("metrics", "report", r".*m\.json is not valid JSON"),
    ],
)
def test_each_kind_of_truncated_file_is_named_by_what_reads_it(pipeline, tmp_path, kind, consumer, error):
    p = copy_of(pipeline, tmp_path)
    r = p["root"]
    target = {
        "dataset": p["data"],
        "published checkpoint": r / "m" / "ckpt" / "step0000008.pt",
        "sample file": r / "s.h5",
        "reference statistics": r / "ref.npz",
        "metrics": r / "m.json",
    }[kind]
    truncate(target)
    with pytest.raises((OSError, ValueError, RuntimeError), match=error):
        if consumer == "train":
            shutil.rmtree(r / "m")
            train_stage.run(p["spec"], str(p["data"]), str(r / "m"), "cpu")
        elif consumer == "sample":
            sample_stage.run(str(target), p["s_spec"], str(r / "s2.h5"), "cpu")
        elif consumer == "evaluate":
            evaluate_stage.run(str(r / "s.h5"), str(r / "ref.npz"), p["extractor"], str(r / "m2.json"), p["options"])
        else:
            study = {
                "title": "t",
                "layout": "matrix",
                "claims": [],
                "models": {},
                "experiments": {},
                "experiment_order": [],
                "published_protocol": "",
            }
            report_stage.run(study, [str(target)], [str(r / "s.h5")], [], str(r / "out"))


def test_random_bytes_in_a_finished_sample_file_are_never_evaluated(pipeline, tmp_path):
    p = copy_of(pipeline, tmp_path)
    with h5py.File(p["root"] / "s.h5", "a") as f:
        f["samples/images"][3] = np.random.default_rng(0).integers(0, 256, f["samples/images"].shape[1:], np.uint8)
    with pytest.raises(data.CorruptFile, match=r"s\.h5: /samples/images does not match the checksum"):
        evaluate_stage.run(
            str(p["root"] / "s.h5"),
            str(p["root"] / "ref.npz"),
            p["extractor"],
            str(p["root"] / "m2.json"),
            p["options"],
        )
    assert not (p["root"] / "m2.json").exists()


def test_a_dataset_changed_in_place_is_never_trained_on(pipeline, tmp_path):
    p = copy_of(pipeline, tmp_path)
    with h5py.File(p["data"], "a") as f:
        f["train/images"][0] = 255 - f["train/images"][0]
    with pytest.raises(data.CorruptFile, match=r"d\.h5: /train/images does not match the checksum"):
        train_stage.run(p["spec"], str(p["data"]), str(p["root"] / "m2"), "cpu")


def hold_lock(lock: Path) -> subprocess.Popen:
    script = (
        "import sys, time; from core import provenance\n"
        f"with provenance.exclusive({str(lock)!r}, 'x'):\n    print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_at_once_naming_the_holder(pipeline, tmp_path):
    p = copy_of(pipeline, tmp_path)
    holder = hold_lock(p["root"] / "m" / ".lock")
    try:
        with pytest.raises(
            provenance.Busy,
            match=rf"model .* is being written by another run \(host .*, pid "
            rf"{holder.pid}, cwd {ROOT}",
        ):
            train_stage.run(p["spec"], str(p["data"]), str(p["root"] / "m"), "cpu")
    finally:
        holder.kill()
    holder = hold_lock(p["root"] / ".s2.h5.lock")
    partial = p["root"] / "s2.h5.partial"
    partial.write_bytes(b"another run's partial file")
    try:
        with pytest.raises(provenance.Busy, match=rf"sample file .*s2\.h5 is being written .*pid {holder.pid}"):
            sample_stage.run(
                str(p["root"] / "m" / "ckpt" / "step0000008.pt"), p["s_spec"], str(p["root"] / "s2.h5"), "cpu"
            )
    finally:
        holder.kill()
    assert partial.read_bytes() == b"another run's partial file"  # nobody deleted it


def test_a_full_disk_is_named_as_such(tmp_path):
    """A 1 MiB tmpfs (in a private mount namespace): writing a 4 MB checkpoint says 'no space left on device' and
    names the file, instead of torch's 'basic_ios::clear: iostream error'; the previous file stays intact."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    script = (
        "import torch, os; from core.models import save_checkpoint\n"
        "save_checkpoint('/mnt/c.pt', {'meta': {}})\n"
        "try:\n    save_checkpoint('/mnt/c.pt', {'meta': {}, 'x': torch.zeros(1 << 20)})\n"
        "except OSError as e:\n    print('ERROR', e)\nprint('INTACT', torch.load('/mnt/c.pt')['meta'] == {})"
    )
    cmd = f"mount -t tmpfs -o size=1m tmpfs /mnt && {shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if "mount" in proc.stderr and proc.returncode:
        pytest.skip(f"no private mount namespace here: {proc.stderr.strip()}")
    assert "ERROR [Errno 28] no space left on device while writing /mnt/c.pt" in proc.stdout, proc.stdout + proc.stderr
    assert "INTACT True" in proc.stdout


@pytest.mark.e2e  # Snakemake plans each case
def test_planning_refuses_conditional_models_on_one_class_and_studies_without_a_val_split(tmp_path):
    root = tmp_path / "one-class"
    (root / "only").mkdir(parents=True)
    (root / "only" / "a.png").touch()
    c = copy.deepcopy(BASE)
    c["results_dir"] = str(tmp_path / "results")
    c["datasets"]["mine"] = {"source": "folder", "path": str(root), "image_size": 8}
    study = copy.deepcopy(c["studies"]["tiny"])
    study.update(dataset="mine", sweeps={}, claims=[])
    study["models"] = {"unet-cfg": study["models"]["unet-cfg"]}
    study["experiments"] = {"DDIM": study["experiments"]["DDIM"]}
    c["studies"]["mine"] = study
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(c))
    target = f"{tmp_path}/results/mine/report/table.md"
    proc = snakemake("-n", target, "--configfile", str(tmp_path / "c.yaml"))
    assert proc.returncode != 0
    assert (
        "config key studies.mine.models.unet-cfg.net.class_conditional: a class-conditional model needs at least "
        "2 classes" in proc.stdout + proc.stderr
    )
    (root / "other").mkdir()
    c["datasets"]["mine"]["val_fraction"] = 0
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(c))
    proc = snakemake("-n", target, "--configfile", str(tmp_path / "c.yaml"))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config key studies.mine.evaluation.reference_num needs a val split" in out and "set val_fraction" in out
    assert not (tmp_path / "results").exists()


def test_duplicate_keys_in_any_config_file_are_an_error_naming_file_line_and_key(tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("studies:\n  tiny:\n    experiments:\n      DDIM: {model: unet-cfg}\n      DDIM: {model: x}\n")
    with pytest.raises(cfg.ConfigError, match=r"mine\.yaml, line 5: the key 'DDIM' is given twice .*first on line 4"):
        cfg.check_duplicate_keys([ROOT / "config.yaml", overlay])
    proc = snakemake("-n", "--configfile", str(overlay))
    assert proc.returncode != 0 and "the key 'DDIM' is given twice" in proc.stdout + proc.stderr
    cfg.check_duplicate_keys([ROOT / "config.yaml"])  # merge keys (<<) overridden in place are not duplicates


@pytest.mark.e2e  # three Snakemake runs
def test_parameters_are_canonical_and_code_changes_rerun_what_they_affect(tmp_path):
    """Reordering a dataset's keys changes no job; with code_changes: rerun a job's parameters carry the hash of
    the code it runs, so a changed hash reruns it."""
    results = tmp_path / "results"
    target = str(results / "data" / "shapes-tiny.h5")
    assert snakemake(target, "--config", f"results_dir={results}").returncode == 0
    c = copy.deepcopy(BASE)
    c["results_dir"] = str(results)
    c["datasets"]["shapes-tiny"] = dict(reversed(list(c["datasets"]["shapes-tiny"].items())))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
    proc = snakemake("-n", target, "--configfile", str(tmp_path / "c.yaml"))
    assert "Nothing to be done" in proc.stdout + proc.stderr
    proc = snakemake("-n", target, "--configfile", str(tmp_path / "c.yaml"), "--config", "code_changes=rerun")
    assert "Set of input files has changed" not in proc.stdout and "params" in (proc.stdout + proc.stderr).lower()
    assert "make_dataset" in proc.stdout


def test_a_code_change_alters_the_fingerprint_of_exactly_the_stages_that_import_it(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "core", tmp_path / "core")
    monkeypatch.setattr(provenance, "_CORE", tmp_path / "core")
    provenance.code_fingerprint.cache_clear()
    before = {s: provenance.code_fingerprint(s)["sha256"] for s in ("train", "sample", "evaluate", "report")}
    (tmp_path / "core" / "sampling.py").write_text((tmp_path / "core" / "sampling.py").read_text() + "\n# changed\n")
    provenance.code_fingerprint.cache_clear()
    after = {s: provenance.code_fingerprint(s)["sha256"] for s in before}
    provenance.code_fingerprint.cache_clear()
    assert [s for s in before if before[s] != after[s]] == ["sample"]
    assert "core.sampling" in provenance.code_fingerprint("sample")["modules"]


def test_source_folder_changes_are_seen_and_a_path_to_a_file_is_not_a_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").touch()
    before = folders.source_fingerprint("folder", root)
    (root / "a" / "2.png").touch()
    assert folders.source_fingerprint("folder", root) != before
    (tmp_path / "file.png").touch()
    with pytest.raises(NotADirectoryError, match=r"file\.png is not a folder \(config key datasets\.x\.path"):
        folders.check_source("folder", tmp_path / "file.png", "datasets.x.path")


def test_nothing_is_written_outside_results_dir_for_a_name_with_dots(tmp_path):
    for name in ("..", "../x", ".", "a/b", "a\\b"):
        with pytest.raises(cfg.ConfigError, match="is not allowed"):
            Plan(with_change(lambda c, n=name: rename(c["studies"]["tiny"]["experiments"], "DDIM", n)))
    root = "/results"
    for path in (paths.samples(root, "s", "e.w1.5", 0, 10), paths.metrics(root, "s", "e", 3, "best")):
        assert Path(path).resolve().is_relative_to(root)

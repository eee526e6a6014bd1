"""core.status and core.progress: the progress line round trip and its rate/ETA, SLURM's output parsed, each
state's rule on files laid out as the workflow lays them, and that looking changes nothing."""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core import jobs, paths, progress, slurm_jobs, status
from core.plan import Plan
from tests.conftest import ROOT


def tiny_config(tmp_path: Path) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["results_dir"] = str(tmp_path / "results")
    config["studies_to_run"] = ["tiny"]
    return config


# ---- progress lines


def test_progress_line_round_trip():
    text = progress.line("train", 1200, 20000, "steps", 35.2, 34.4)
    assert text == "[progress] train 1200/20000 steps | 35.2 steps/s | elapsed 0:00:34 | eta 0:08:54"
    r = progress.parse(text)
    assert (r.stage, r.done, r.total, r.unit, r.rate, r.elapsed_s) == ("train", 1200, 20000, "steps", 35.2, 34)
    assert r.eta_s == round(18800 / 35.2)
    assert progress.parse(progress.line("sample", 0, 10, "images", None, 0)).eta_s is None
    assert progress.parse(progress.line("evaluate", 10, 5000, "images", 2140.4, 5)).rate == 2140
    assert progress.parse(progress.line("evaluate", 10, 5000, "images", 1.5e-5, 5)).rate == 1.5e-5
    assert progress.parse("[train] step 4/12 loss 0.1") is None
    assert progress.clock(100 * 3600 + 61) == "100:01:01" and progress.seconds_of("100:01:01") == 360061


def test_progress_prints_on_interval_with_the_recent_rate(capsys):
    t = [0.0]
    p = progress.Progress("sample", 1000, "images", start=100, interval=30, now=lambda: t[0])
    printed = []
    for done in range(110, 1001, 10):  # 10 images a second for the first 300, then 2 a second
        t[0] += 1.0 if done <= 400 else 5.0
        printed.append(p.update(done))
    lines = [progress.parse(s) for s in capsys.readouterr().out.splitlines()]
    assert all(lines) and lines[-1].done == 1000  # the end is always printed
    assert sum(printed) == len(lines) and len(lines) < 20  # on the interval, not per update
    assert lines[0].done == 400 and lines[0].rate == pytest.approx(10.0) and lines[0].eta_s == 60
    assert lines[-2].rate == pytest.approx(2.0)  # the window's rate, not the average since the start
    assert lines[-2].eta_s == round((1000 - lines[-2].done) / 2.0)


# ---- SLURM

SQUEUE = """\
4242|RUNNING|1:02:03|1-00:00:00|gpu07|None|rule_train_wildcards_demo-a_unet-cfg_r0
4243|PENDING|0:00|1-00:00:00||Resources|rule_train_wildcards_demo-a_unet-cfg_r1
4250|PENDING|0:00|4:00:00||Dependency|(null)
"""
SACCT = """\
4100|FAILED|00:01:12|04:00:00|gpu03|rule_sample_wildcards_demo-a_DDIM_r0_step0004000
4101|CANCELLED by 1000|00:00:05|04:00:00|gpu03|
4102|PENDING|00:00:00|04:00:00|None assigned|
"""


def test_squeue_and_sacct_rows_are_parsed():
    q = slurm_jobs.parse_squeue(SQUEUE)
    assert [(j.job_id, j.state, j.nodes, j.reason) for j in q] == [
        ("4242", "RUNNING", "gpu07", "None"),
        ("4243", "PENDING", "", "Resources"),
        ("4250", "PENDING", "", "Dependency"),
    ]
    assert q[0].elapsed == "1:02:03" and q[0].limit == "1-00:00:00" and q[2].comment == ""
    assert q[1].summary == "slurm 4243 PENDING 0:00/1-00:00:00 (Resources)"
    a = slurm_jobs.parse_sacct(SACCT)
    assert [(j.job_id, j.state, j.nodes) for j in a] == [
        ("4100", "FAILED", "gpu03"),
        ("4101", "CANCELLED", "gpu03"),
        ("4102", "PENDING", ""),
    ]
    with pytest.raises(ValueError, match="expected 7"):
        slurm_jobs.parse_squeue("4242|RUNNING|1:00\n")


def test_a_planned_job_is_joined_by_the_plugins_comment_or_its_ids():
    q, a = slurm_jobs.parse_squeue(SQUEUE), slurm_jobs.parse_sacct(SACCT)
    train = jobs.Job("train", {"study": "demo-a", "model": "unet-cfg", "replicate": "r1"}, [], "")
    assert train.slurm_comment == "rule_train_wildcards_demo-a_unet-cfg_r1"
    assert slurm_jobs.join(train.slurm_comment, set(), q, a).job_id == "4243"
    # retries get new ids: the newest record wins, and the queue wins over accounting
    assert slurm_jobs.join("rule_x", {"4100", "4101"}, q, a).job_id == "4101"
    assert slurm_jobs.join("rule_x", {"4100", "4250"}, q, a).job_id == "4250"
    assert slurm_jobs.join("rule_x", set(), q, a) is None
    # ids known: another results folder's run of the same job (same comment, its own id) is not this job
    assert slurm_jobs.join(train.slurm_comment, {"4100"}, q, a).job_id == "4100"


def test_the_comment_is_the_one_the_slurm_plugin_writes():
    utils = pytest.importorskip("snakemake_executor_plugin_slurm.utils")

    values = ("demo-a", "DDIM", "r0", "step0004000")

    class FakeJob:  # the plugin joins the job's wildcard values in the order of the rule's output pattern
        wildcards = values

    job = jobs.Job("sample", dict(zip(("study", "experiment", "replicate", "step"), values, strict=True)), [], "")
    assert job.slurm_comment == f"rule_sample_wildcards_{utils.get_job_wildcards(FakeJob())}"


# ---- states from files


def mark_incomplete(directory: Path, output: str, job_id: str | None = None) -> None:
    """What Snakemake writes when it starts a job: .snakemake/incomplete/<urlsafe base64 of the output path>."""
    d = directory / ".snakemake" / "incomplete"
    d.mkdir(parents=True, exist_ok=True)
    (d / base64.urlsafe_b64encode(output.encode()).decode()).write_text(json.dumps({"external_jobid": job_id}))


def touch(path: str, text: str = "x") -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


@pytest.fixture
def laid_out(tmp_path, monkeypatch):
    """The tiny study's plan over a results tree with one job in each state (Snakemake not running)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(status, "snakemake_pids", lambda d: [])
    config = tiny_config(tmp_path)
    config["results_dir"] = "results"
    plan = Plan(config)
    R = plan.root
    by = {(j.rule, j.label): j for j in jobs.study_jobs(plan, "tiny")}
    touch(paths.dataset(R, "shapes-tiny"))  # done
    # a training run interrupted at step 12 of 20: 10 steps/s over its newest attempt's last minute
    train = by[("train", "tiny/unet-cfg/r0")]
    rows = ["step,loss,lr,grad_norm,images_per_s,elapsed_s,peak_mem_mb,input_wait_s"]
    rows += [f"{s},0.5,0.001,1.0,100,{s * 0.5:.2f},0,0" for s in range(1, 9)]  # first attempt: 2 steps/s
    rows += [f"{s},0.5,0.001,1.0,100,{(s - 8) * 0.1:.2f},0,0" for s in range(9, 13)]  # resumed: 10 steps/s
    touch(f"{train.info['state_dir']}/train_log.csv", "\n".join(rows) + "\n")
    mark_incomplete(tmp_path, train.outputs[0])
    # a failed sampling job: its log ends in a traceback
    failed = by[("sample", "tiny/DDIM/r0/step0000020")]
    touch(
        failed.log,
        "[sample] start\nTraceback (most recent call last):\n  File x\nOSError: Unable to open file (truncated file)\n",
    )
    # a job whose log shows it failed once, then resumed: not failed
    again = by[("sample", "tiny/DDIM/r1/step0000020")]
    touch(
        again.log,
        "ValueError: boom\n[sample] resuming x at 16/32\n" + progress.line("sample", 16, 32, "images", 4.0, 9) + "\n",
    )
    mark_incomplete(tmp_path, again.outputs[0])
    # an evaluation done, with its metrics
    ev = by[("evaluate", "tiny/DDPM-CFG/r0/step0000010")]
    touch(
        ev.outputs[0],
        json.dumps({"fid": 12.5, "is_mean": 2.25, "label": {"fid": "FD_clf@32", "is": "IS_clf (2 splits)"}}),
    )
    return tmp_path, plan, by


def test_each_state_follows_its_rule(laid_out):
    _, plan, by = laid_out
    view = status.collect(plan, ["tiny"], Path("."), now=time.time())
    rows = {(r.job.rule, r.job.label): r for r in view["studies"]["tiny"]["rows"]}
    assert rows[("make_dataset", "shapes-tiny")].state == "done"
    t = rows[("train", "tiny/unet-cfg/r0")]
    assert t.state == "stale"  # marked started, no Snakemake alive: the next run continues it
    assert t.detail == f"step 12/20, 10 steps/s, eta {progress.clock((20 - 12) / 10)}"
    f = rows[("sample", "tiny/DDIM/r0/step0000020")]
    assert f.state == "failed" and f.error == "OSError: Unable to open file (truncated file)"
    assert f.log == by[("sample", "tiny/DDIM/r0/step0000020")].log
    again = rows[("sample", "tiny/DDIM/r1/step0000020")]
    assert again.state == "stale" and again.error is None and again.detail == "16/32 images, eta 0:00:04"
    assert rows[("train", "tiny/unet-cfg/r1")].state == "not started"
    assert rows[("evaluate", "tiny/DDPM-CFG/r0/step0000010")].state == "done"
    m = view["studies"]["tiny"]["metrics"]["DDPM-CFG"]
    assert (m["step"], m["fid"], m["evaluated"]) == ("step0000010", 12.5, 1)
    screen = status.render(view, Path("."))
    assert "OSError: Unable to open file (truncated file)" in screen and "FD_clf@32 12.500" in screen


def test_snakemake_alive_makes_marked_jobs_running_and_ready_jobs_queued(laid_out, monkeypatch):
    _, plan, _ = laid_out
    monkeypatch.setattr(status, "snakemake_pids", lambda d: [12345])
    view = status.collect(plan, ["tiny"], Path("."))
    rows = {(r.job.rule, r.job.label): r.state for r in view["studies"]["tiny"]["rows"]}
    assert rows[("train", "tiny/unet-cfg/r0")] == "running"
    assert rows[("train_classifier", "shapes-tiny")] == "queued"  # its input, the dataset, exists
    assert rows[("train", "tiny/unet-cfg/r1")] == "queued"  # so is the training of the other replicate
    assert rows[("sample", "tiny/DDPM-CFG/r1/step0000010")] == "not started"  # its checkpoint does not exist
    assert "pid 12345" in status.render(view, Path("."))


def test_slurm_states_win(laid_out):
    _, _, by = laid_out
    train = by[("train", "tiny/unet-cfg/r1")]
    pending = slurm_jobs.SlurmJob("7", "PENDING", "0:00", "1:00:00", "", "Priority", train.slurm_comment)
    assert status.classify(train, Path("."), status.Snakemake(), pending, time.time()).state == "queued"
    timeout = slurm_jobs.SlurmJob("8", "TIMEOUT", "1:00:00", "1:00:00", "n1", "", "")
    row = status.classify(train, Path("."), status.Snakemake(), timeout, time.time())
    assert row.state == "failed" and row.error == "SLURM: TIMEOUT" and "slurm 8 TIMEOUT" in row.slurm


def test_slurm_view_joins_squeue_by_comment_and_sacct_by_the_plugins_log_ids(laid_out, monkeypatch):
    """--slurm end to end without a cluster: stand-in squeue/sacct print their real formats; the job ids come from
    the plugin's log folder (--slurm-logdir) and Snakemake's markers."""
    tmp_path, plan, by = laid_out
    train = by[("train", "tiny/unet-cfg/r1")]
    evaluate = by[("evaluate", "tiny/DDIM/r0/step0000020")]
    touch(str(tmp_path / "slurm_logs" / evaluate.slurm_log_dir / "4100.log"))  # an earlier attempt
    touch(str(tmp_path / "slurm_logs" / evaluate.slurm_log_dir / "4107.log"))  # the newest
    mark_incomplete(tmp_path, by[("train", "tiny/dit-vae-cfg/r0")].outputs[0], "4300")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    queue = f"4243|PENDING|0:00|1-00:00:00||Priority|{train.slurm_comment}\n4300|RUNNING|0:42|1-00:00:00|gpu2|None|x\n"
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '{queue}'\n")
    (bin_dir / "sacct").write_text(
        '#!/bin/sh\necho "$@" > ' + str(tmp_path / "sacct.args") + "\n"
        "printf '4100|COMPLETED|00:01:00|01:00:00|n1|\\n4107|OUT_OF_MEMORY|00:00:09|01:00:00|n1|\\n'\n"
    )
    for tool in ("squeue", "sacct"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    view = status.collect(plan, ["tiny"], Path("."), use_slurm=True, slurm_logdir=tmp_path / "slurm_logs")
    assert view["slurm_problems"] == []
    rows = {(r.job.rule, r.job.label): r for r in view["studies"]["tiny"]["rows"]}
    assert rows[("train", "tiny/unet-cfg/r1")].state == "queued"
    assert rows[("train", "tiny/unet-cfg/r1")].slurm == "slurm 4243 PENDING 0:00/1-00:00:00 (Priority)"
    assert rows[("train", "tiny/dit-vae-cfg/r0")].state == "running"  # by the id in Snakemake's marker
    ev = rows[("evaluate", "tiny/DDIM/r0/step0000020")]
    assert ev.state == "failed" and ev.error == "SLURM: OUT_OF_MEMORY" and "slurm 4107" in ev.slurm
    assert set((tmp_path / "sacct.args").read_text().split()[-1].split(",")) == {"4100", "4107", "4300"}


def snapshot(root: Path) -> dict[str, tuple[float, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and p.name != "status.md"
    }


def test_looking_changes_nothing_but_status_md(laid_out, capsys):
    tmp_path, _, _ = laid_out
    overlay = touch(str(tmp_path / "c.yaml"), yaml.safe_dump(tiny_config(tmp_path) | {"results_dir": "results"}))
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    before = snapshot(tmp_path)
    assert status.main(["--configfile", str(overlay), "--config", "studies_to_run=[tiny]"]) == 0
    assert snapshot(tmp_path) == before
    assert not (tmp_path / ".snakemake" / "locks").exists() or not any((tmp_path / ".snakemake" / "locks").iterdir())
    md = (tmp_path / paths.status_file("results", "tiny")).read_text()
    assert "| sample tiny/DDIM/r0/step0000020 | failed |" in md and "OSError" in md
    assert "tiny/unet-cfg/r0" in capsys.readouterr().out


def test_config_values_parse_as_snakemake_parses_them(tmp_path):
    (tmp_path / "config.yaml").write_text("a: {b: 1, c: 2}\nd: x\n")
    touch(str(tmp_path / "o.yaml"), "a: {c: 3}\n")
    c = status.load_config(tmp_path, ["o.yaml"], ["d=[p, q]", "e=1.5", "f=True", "g=7", "h="])
    assert c == {"a": {"b": 1, "c": 3}, "d": ["p", "q"], "e": 1.5, "f": True, "g": 7, "h": None}


# ---- end to end: a study interrupted partway


def watch_overlay(results: Path) -> dict:
    """Two small studies: `watch` trains one model long enough to be killed mid-run, `broken` trains on a planted
    corrupt dataset file (its first job fails)."""
    tiny = yaml.safe_load((ROOT / "config.yaml").read_text())["studies"]["tiny"]
    study = {k: v for k, v in tiny.items() if k not in ("claims", "sweeps", "models", "experiments")}
    study["defaults"]["model"]["train"].update(steps=100000, checkpoint_every=50000, log_every=20)
    study["models"] = {"unet": {"net": tiny["models"]["unet-cfg"]["net"]}}
    study["experiments"] = {"DDIM": {"model": "unet", "sampler": {"name": "ddim", "steps": 5}}}
    return {
        "results_dir": str(results),
        "datasets": {"shapes-broken": {"source": "shapes", "image_size": 8, "splits": {"train": 200, "val": 64}}},
        "studies": {"watch": study, "broken": {**study, "dataset": "shapes-broken"}},
    }


def our_processes(marker: str) -> list[int]:
    """The processes whose command line names ``marker`` (this test's results folder)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def wait_for(what, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not what():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what.__doc__}")
        time.sleep(1.0)


def rows_of(stdout: str) -> dict[str, tuple[str, str]]:
    """``rule label`` → (state, detail) from the status screen."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^   (\w+)\s+(\S+)\s+(done|running|queued|failed|stale|not started)\s*(.*)$", line)
        if m:
            out[f"{m[1]} {m[2]}"] = (m[3], m[4])
    return out


def forget_killed_run(results: Path) -> None:
    """Remove the locks and incomplete markers a SIGKILLed Snakemake left in the workflow's .snakemake for files
    under ``results`` (and only those), as ``snakemake --unlock`` would."""
    meta = ROOT / ".snakemake"
    for lock in (meta / "locks").glob("*.lock"):
        lines = lock.read_text().splitlines()
        if lines and all(line.startswith(str(results)) for line in lines):
            lock.unlink()
    for marker in (meta / "incomplete").rglob("*"):
        name = "".join(part.removeprefix("@") for part in marker.relative_to(meta / "incomplete").parts)
        try:
            key = base64.urlsafe_b64decode(name).decode()
        except ValueError:
            continue
        if marker.is_file() and key.startswith(str(results)):
            marker.unlink()


@pytest.fixture
def results(tmp_path):
    yield tmp_path / "results"
    forget_killed_run(tmp_path / "results")


@pytest.mark.e2e
def test_a_killed_study_is_shown_as_the_files_on_disk_say(tmp_path, results):
    overlay = tmp_path / "watch.yaml"
    overlay.write_text(yaml.safe_dump(watch_overlay(results)))
    broken_data = Path(paths.dataset(str(results), "shapes-broken"))
    broken_data.parent.mkdir(parents=True)
    broken_data.write_bytes(b"not an HDF5 file\n" * 64)  # planted: Snakemake keeps it, its reader fails
    args = ["--configfile", str(overlay), "--config", "studies_to_run=[watch,broken]"]
    train = jobs.Job("train", {}, [], "", info={"state_dir": paths.train_state_dir(str(results), "watch", "unet", 0)})
    train_csv = Path(train.info["state_dir"]) / "train_log.csv"
    failed_log = Path(paths.log(str(results), "train_classifier", "shapes-broken"))
    log = open(tmp_path / "snakemake.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--keep-going", *args],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def trained_and_failed() -> bool:
            """the training to log 3 rows and the broken study's classifier to fail"""
            assert proc.poll() is None, (tmp_path / "snakemake.log").read_text()[-3000:]
            rows = train_csv.read_text().count("\n") - 1 if train_csv.exists() else 0
            return rows >= 60 and failed_log.exists() and "Error" in failed_log.read_text()

        wait_for(trained_and_failed)
        live = subprocess.run(
            [sys.executable, "-m", "core.status", "--no-write", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert live.returncode == 0, live.stderr
        live_rows = rows_of(live.stdout)
        assert live_rows["train watch/unet/r0"][0] == "running"
        assert "Snakemake running in" in live.stdout
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in our_processes(str(results)):  # anything of ours that left the group
            os.kill(pid, signal.SIGKILL)
        log.close()
    time.sleep(0.5)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results.rglob("*") if p.is_file()}
    out = subprocess.run(
        [sys.executable, "-m", "core.status", "--all", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results.rglob("*") if p.is_file()}
    assert {p: v for p, v in after.items() if p.name != "status.md"} == before  # looking changed nothing
    rows = rows_of(out.stdout)
    assert "no Snakemake process" in out.stdout and "locks are held" in out.stdout  # SIGKILL left Snakemake's locks
    # the killed training: stale (its next run resumes), at the step its live log reached
    step = int(train_csv.read_text().splitlines()[-1].split(",")[0])
    state, detail = rows["train watch/unet/r0"]
    assert state == "stale" and detail.startswith(f"step {step}/100000")
    assert rows["make_dataset shapes-tiny"][0] == "done"
    # the planted failure: the job, its log and the error line that ends it
    errors = [line for line in failed_log.read_text().splitlines() if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    assert rows["train_classifier shapes-broken"][0] == "failed"
    assert f"log {failed_log}\n      {errors[-1]}\n" in out.stdout
    assert rows["train broken/unet/r0"][0] == "failed"  # it reads the corrupt file too
    assert rows["sample broken/DDIM/r0/step0100000"][0] == "not started"  # downstream of the failures
    md = (results / "broken" / "status.md").read_text()
    assert "| train_classifier shapes-broken | failed |" in md and errors[-1].replace("|", "/") in md


@pytest.mark.e2e
def test_the_jobs_listed_are_snakemakes_with_its_outputs_logs_and_wildcard_order(tmp_path):
    """core.jobs mirrors rules/*.smk: the tiny preset's dry run names the same jobs, outputs, logs and wildcards
    (in the order the SLURM plugin joins them into its comment)."""
    results = str(tmp_path / "results")
    config = [f"results_dir={results}", "studies_to_run=[tiny]"]
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", *config],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = set()
    for block in re.split(r"\n(?=(?:rule|checkpoint|localrule) \w+:)", proc.stdout):
        head = re.match(r"(?:rule|checkpoint|localrule) (\w+):", block)
        if head is None or head[1] == "all":
            continue
        field = dict(re.findall(r"^    (output|log|wildcards): (.*)$", block, re.M))
        wildcards = (
            tuple(tuple(w.split("=", 1)) for w in field["wildcards"].split(", ")) if "wildcards" in field else ()
        )
        theirs.add((head[1], tuple(field["output"].split(", ")), field["log"], wildcards))
    plan = Plan(tiny_config(tmp_path))
    ours = {(j.rule, tuple(j.outputs), j.log, tuple(j.wildcards.items())) for j in jobs.study_jobs(plan, "tiny")}
    assert len(ours) == len(theirs) == 40  # with DDPM-CFG's two fresh draws (score_selected)
    assert ours == theirs


# ---- the stages' progress lines


def last_progress(text: str, stage: str) -> progress.Reading:
    readings = [r for r in map(progress.parse, text.splitlines()) if r is not None and r.stage == stage]
    assert readings, f"no progress line of {stage} in:\n{text[-2000:]}"
    return readings[-1]


def test_every_long_stage_ends_its_log_with_a_progress_line_and_batching_changes_no_feature(tmp_path, capsys):
    """train, sample, reference_stats and evaluate print `[progress]` lines that core.status reads (the last at the
    end: all done); extracting batch by batch for them gives the features of one call."""
    import numpy as np

    from core.features import load_extractor
    from core.stages import evaluate as evaluate_stage
    from core.stages import reference_stats, train_classifier
    from core.stages import sample as sample_stage
    from core.stages import train as train_stage
    from tests.conftest import TINY_MODEL, model_spec, sample_spec, shapes_dataset

    data_path = shapes_dataset(tmp_path / "d.h5")
    spec = model_spec({**TINY_MODEL, "train": {**TINY_MODEL["train"], "steps": 4, "checkpoint_every": 4}})
    train_stage.run(spec, str(data_path), str(tmp_path / "m"), "cpu")
    r = last_progress(capsys.readouterr().out, "train")
    assert (r.done, r.total, r.unit, r.eta_s) == (4, 4, "steps", 0)
    s_spec = sample_spec({"sampler": {"name": "ddim", "steps": 2}, "num_samples": 20, "batch_size": 8})
    sample_stage.run(str(tmp_path / "m" / "ckpt" / "step0000004.pt"), s_spec, str(tmp_path / "s.h5"), "cpu")
    r = last_progress(capsys.readouterr().out, "sample")
    assert (r.done, r.total, r.unit) == (20, 20, "images") and r.rate > 0
    clf = {"width": 8, "depth": 1, "steps": 5, "batch_size": 16, "lr": 0.003, "seed": 0}
    train_classifier.run(str(data_path), clf, str(tmp_path / "clf.pt"))
    extractor = {"kind": "classifier", "weights": str(tmp_path / "clf.pt")}
    reference_stats.run(str(data_path), "val", 0, extractor, str(tmp_path / "ref.npz"), batch_size=7)
    r = last_progress(capsys.readouterr().out, "reference_stats")
    assert (r.done, r.total) == (32, 32)
    import h5py

    with h5py.File(data_path, "r") as f:
        whole, _ = load_extractor(extractor).extract(f["val/images"][:], batch_size=7)
    np.testing.assert_array_equal(np.load(tmp_path / "ref.npz")["features"], whole)
    options = {"is_splits": 2, "kid_subsets": 5, "kid_subset_size": 8, "bootstrap": 0, "fd_infinity": False}
    evaluate_stage.run(
        str(tmp_path / "s.h5"),
        str(tmp_path / "ref.npz"),
        extractor,
        str(tmp_path / "m.json"),
        {**options, "batch_size": 8},
    )
    r = last_progress(capsys.readouterr().out, "evaluate")
    assert (r.done, r.total) == (20, 20)

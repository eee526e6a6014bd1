"""Checkpoint selection apart from scoring (core.selection, core.stages.score_selected, the report's rows): the
selection rule, the fresh draw's seed, which rows get one, and that the report's numbers, the Findings included,
are the fresh draw's and not the selection draw's minimum (the winner's curse)."""

import json
from pathlib import Path

import pytest
import yaml

from core import paths, selection
from core.plan import Plan
from core.reporting.results import load_runs
from tests.conftest import ROOT
from tests.test_report import exp, fake_run, study


def test_the_rule_picks_the_lowest_fd_and_the_earliest_of_ties():
    assert selection.select_step({300: 12.0, 600: 11.5, 900: 11.9}) == 600
    assert selection.select_step({900: 11.5, 300: 12.0, 600: 11.5}) == 600  # a tie: the earlier step
    assert selection.select_step({600: 3.0}) == 600
    with pytest.raises(ValueError, match="non-finite FD at step"):
        selection.select_step({300: float("nan"), 600: 11.0})  # NaN would lose every comparison, silently
    with pytest.raises(ValueError, match="no checkpoints"):
        selection.select_step({})


def test_the_fresh_seed_is_derived_and_never_a_selection_seed():
    top = 2**31 - 1  # the largest seed a config may name
    assert selection.fresh_seed(0) == 2**31 and selection.fresh_seed(7) == 2**31 + 7
    # every selection seed of replicates 0…9 of any configurable seed lies below every fresh seed of another
    assert selection.fresh_seed(0) > top
    assert {selection.fresh_seed(s) for s in range(10)}.isdisjoint(range(10))


def test_the_plan_scores_rows_that_select_among_checkpoints_on_a_fresh_draw():
    plan = Plan(yaml.safe_load((ROOT / "config.yaml").read_text()))
    # demo-b (ablation) and full-b: every row at every checkpoint; tiny (matrix): DDPM-CFG at every checkpoint
    assert all(plan.selects_checkpoint("demo-b", e) for e in plan.experiments["demo-b"])
    assert plan.selects_checkpoint("tiny", "DDPM-CFG") and plan.selects_checkpoint("full-b", "exp4-dim128")
    # a row at its final or best-validation checkpoint picks nothing by FD; a curve over training picks nothing
    assert not plan.selects_checkpoint("tiny", "DDIM") and not plan.selects_checkpoint("tiny", "DDIM-VAE-CFG")
    assert not plan.selects_checkpoint("tiny", "DDIM-VAE-CFG.ckpts")
    assert not any(plan.selects_checkpoint("full-a", e) for e in plan.experiments["full-a"])
    assert not plan.selects_checkpoint("full-b", "exp4-dim128.nfe-ddim-10")
    spec, own = plan.selected_spec("demo-b", "baseline", 2), plan.sample_spec("demo-b", "baseline", 2)
    assert own["seed"] == 2 and spec["selection_seed"] == 2 and spec["seed"] == 2 + 2**31
    assert {k: v for k, v in spec.items() if k not in ("seed", "selection_seed")} == {
        k: v for k, v in own.items() if k != "seed"
    }  # the same sampler, number of images, model replicate: only the seed differs


def fresh_run(tmp_path, per_step, fid, is_mean, experiment="run", replicate=0):
    """The fresh draw at the step ``per_step`` (the selection draw's FDs) selects, as score_selected writes it."""
    step = selection.select_step(per_step)
    metrics, samples = fake_run(tmp_path, step, fid, is_mean, experiment, replicate, tag=paths.SELECTED)
    m = json.loads(Path(metrics).read_text())
    m["samples"]["seed"] = selection.fresh_seed(replicate)  # fake_run's selection draws use seed = replicate
    m["selection"] = selection.record(per_step, replicate, m, [])
    Path(metrics).write_text(json.dumps(m))
    return metrics, samples


def selected_report(tmp_path, s, runs, fresh):
    from core.stages import report
    from tests.test_report import train_log

    samples = [x for _, x in runs] + [x for _, x in fresh]
    report.run(
        s, [m for m, _ in runs], samples, [train_log(tmp_path)], str(tmp_path / "out"), None, [m for m, _ in fresh]
    )
    return (tmp_path / "out" / "table.md").read_text()


def test_the_row_reports_the_fresh_draw_not_the_selection_minimum(tmp_path):
    # the selection draw: FD 30, 10, 20 at steps 100, 200, 300 (step 200 selected, its FD 10 the biased minimum);
    # the fresh draw at step 200: FD 14, IS 2.5
    per_step = {100: 30.0, 200: 10.0, 300: 20.0}
    runs = [fake_run(tmp_path, s, fd, 2.0 + s / 100, "a", spread=0.5) for s, fd in per_step.items()]
    fresh = [fresh_run(tmp_path, per_step, 14.0, 2.5, "a")]
    # a second, single-checkpoint row to claim against: FD 12 (between the biased 10 and the fresh 14)
    runs.append(fake_run(tmp_path, 300, 12.0, 2.0, "b", spread=0.5))
    claims = [{"claim": "a beats b", "a": "a", "b": "b", "metric": "fid", "expect": "less"}]
    table = selected_report(tmp_path, study({"a": exp(), "b": exp()}, "ablation", claims), runs, fresh)
    row = next(line for line in table.splitlines() if line.startswith("| a | 8 |"))
    m = json.loads(Path(fresh[0][0]).read_text())
    iv = m["bootstrap"]["fid_interval"]
    assert f"| 14.00 [{iv['low']:.2f}, {iv['high']:.2f}] (200) |" in row  # the fresh FD and its interval
    assert "| 2.50 [" in row and "| 10.00 |" in row  # the fresh IS; the selection draw's FD beside it
    assert "fresh draw at the selected step (step)" in table and "selection draw's FD there (biased low)" in table
    assert "seed = the selection draw's seed + 2³¹" in table and "winner's curse" in table
    # the Findings use the fresh draw: Δ = 14 − 12 = +2, not 10 − 12 = −2
    line = next(x for x in table.splitlines() if x.startswith("| a beats b |"))
    assert "| +2.00 [" in line
    rows = load_runs([m for m, _ in runs], [m for m, _ in fresh])
    assert rows["a"].values("fid").values == {0: 14.0} and rows["a"].estimate("is") == 2.5
    assert rows["a"].selection_estimate() == 10.0 and rows["a"].step_label() == "200"
    csv_text = (tmp_path / "out" / "table.csv").read_text()
    assert csv_text.count("per checkpoint") == 4 and csv_text.count("fresh (selected step)") == 1


def test_replicates_select_their_own_checkpoint(tmp_path):
    steps = {0: {100: 9.0, 200: 11.0}, 1: {100: 12.0, 200: 10.0}}
    runs = [fake_run(tmp_path, s, fd, 2.0, replicate=r) for r, d in steps.items() for s, fd in d.items()]
    fresh = [fresh_run(tmp_path, d, 13.0 + r, 2.0, replicate=r) for r, d in steps.items()]
    rows = load_runs([m for m, _ in runs], [m for m, _ in fresh])
    assert rows["run"].step_label() == "100/200" and rows["run"].values("fid").values == {0: 13.0, 1: 14.0}
    assert rows["run"].selection_estimate() == pytest.approx(9.5)


def test_a_stale_or_unfresh_selection_is_refused(tmp_path):
    per_step = {100: 30.0, 200: 10.0}
    runs = [fake_run(tmp_path, s, fd, 2.0) for s, fd in per_step.items()]
    metrics, _ = fresh_run(tmp_path, per_step, 14.0, 2.5)
    good = json.loads(Path(metrics).read_text())

    def refused(change, match):
        m = json.loads(json.dumps(good))
        change(m)
        Path(metrics).write_text(json.dumps(m))
        with pytest.raises(ValueError, match=match):
            load_runs([m for m, _ in runs], [metrics])

    refused(lambda m: m["selection"]["candidates"].update({"200": 9.0}), "stale")  # per-checkpoint FDs remade since
    refused(lambda m: m["samples"].update({"checkpoint_step": 100}), "the rule selects step 200")
    refused(lambda m: m["samples"].update({"seed": 0}), "not a fresh draw")  # scored on the selection draw's seed
    refused(lambda m: m.update({"fid": 10.0}), "not the fresh draw's")  # the selection FD written in its place
    refused(lambda m: m.pop("selection"), "no selection record")
    # a replicate without its fresh draw
    runs.append(fake_run(tmp_path, 100, 11.0, 2.0, replicate=1))
    Path(metrics).write_text(json.dumps(good))
    with pytest.raises(ValueError, match=r"missing for replicate\(s\) \[1\]"):
        load_runs([m for m, _ in runs], [metrics])


@pytest.mark.slow  # trains, samples and scores a tiny model; the fresh draw starts two stage processes (~40 s here)
def test_the_stage_selects_on_the_per_checkpoint_draw_and_scores_a_fresh_one(tiny_dataset, tmp_path):
    """A tiny model's checkpoints 4 and 8 sampled and scored (the selection draw, seed 5), then score_selected:
    it picks the lower FD's step, draws anew there with the fresh seed, and records both."""
    import h5py
    import numpy as np

    from core.stages import evaluate, reference_stats, sample, score_selected, train, train_classifier
    from tests.conftest import TINY_MODEL, model_spec, sample_spec

    train.run(
        model_spec({**TINY_MODEL, "train": {**TINY_MODEL["train"], "steps": 8, "checkpoint_every": 4}}),
        str(tiny_dataset),
        str(tmp_path / "m"),
        "cpu",
    )
    clf = {"width": 8, "depth": 1, "steps": 5, "batch_size": 16, "lr": 0.003, "seed": 0}
    train_classifier.run(str(tiny_dataset), clf, str(tmp_path / "clf.pt"))
    extractor = {"kind": "classifier", "weights": str(tmp_path / "clf.pt")}
    reference_stats.run(str(tiny_dataset), "val", 0, extractor, str(tmp_path / "ref.npz"))
    options = {"is_splits": 2, "kid_subsets": 5, "kid_subset_size": 8, "bootstrap": 10, "fd_infinity": False}
    options["batch_size"] = 8
    own = sample_spec({"sampler": {"name": "ddim", "steps": 3}, "num_samples": 16, "batch_size": 8, "seed": 5})
    files, fds = [], {}
    for step in (4, 8):
        s, m = tmp_path / f"s{step}.h5", str(tmp_path / f"m{step}.json")
        sample.run(str(tmp_path / "m" / "ckpt" / f"step{step:07d}.pt"), own, str(s), "cpu")
        fds[step] = evaluate.run(str(s), str(tmp_path / "ref.npz"), extractor, m, options)["fid"]
        files.append(m)
    spec = {**own, "seed": selection.fresh_seed(5), "selection_seed": 5}  # as Plan.selected_spec makes it
    out, samples_out = tmp_path / "selected.json", tmp_path / "selected.h5"
    args = (str(tmp_path / "m" / "ckpt"), spec, str(tmp_path / "ref.npz"), extractor, options)
    result = score_selected.run(files, *args, str(samples_out), str(out), device="cpu")
    best = min(fds, key=lambda s: (fds[s], s))
    sel = json.loads(out.read_text())["selection"]
    assert (
        sel["selected_step"] == best
        and sel["selection_fid"] == fds[best]
        and sel["candidates"] == {str(s): v for s, v in fds.items()}
    )
    assert (sel["selection_seed"], sel["fresh_seed"]) == (5, 5 + 2**31) and result["samples"]["seed"] == 5 + 2**31
    assert sel["fresh_fid"] == result["fid"] and result["samples"]["checkpoint_step"] == best
    with h5py.File(samples_out, "r") as f, h5py.File(tmp_path / f"s{best}.h5", "r") as g:
        assert f.attrs["seed"] == 5 + 2**31 and f.attrs["checkpoint_step"] == best
        assert not np.array_equal(f["samples/images"][:], g["samples/images"][:])  # new images, same checkpoint
    assert result["fid"] != fds[best]
    # the report accepts the record against the same per-checkpoint files
    assert load_runs(files, [str(out)])["X"].values("fid").values == {0: result["fid"]}
    # a spec whose fresh seed is the selection seed (no fresh draw) is refused before any sampling
    with pytest.raises(ValueError, match="do not match the selection draw's seed 5"):
        score_selected.run(files, args[0], own | {"selection_seed": 5}, *args[2:], "x.h5", "x.json", device="cpu")
    with pytest.raises(ValueError, match="is of X r0, not Y r0"):
        score_selected.run(files, args[0], spec | {"experiment": "Y"}, *args[2:], "x.h5", "x.json", device="cpu")


def test_a_fresh_draw_changed_after_its_evaluation_is_refused(tmp_path):
    import h5py

    from core import data

    per_step = {100: 30.0, 200: 10.0}
    runs = [fake_run(tmp_path, s, fd, 2.0) for s, fd in per_step.items()]
    fresh = [fresh_run(tmp_path, per_step, 14.0, 2.5)]
    with h5py.File(fresh[0][1], "a") as f:
        f["samples/images"].attrs["sha256"] = "00" * 32  # remade or edited since it was scored
    with pytest.raises(data.CorruptFile, match=r"selected\.h5 is not the sample file that"):
        selected_report(tmp_path, study({"run": exp()}, "ablation"), runs, fresh)

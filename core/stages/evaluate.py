"""Stage: metrics of one sample file against cached reference statistics, written as one JSON.

    python -m core.stages.evaluate --samples results/demo-a/samples/DDIM/r0/step0000800.h5 \
        --reference results/refstats/shapes12/val-classifier-n1000.npz --extractor '<JSON>' --options '<JSON>' \
        --out results/demo-a/metrics/DDIM/r0/step0000800.json

The sample file is verified first (complete, and its images and labels match the checksums written when it was
completed). Computes the Fréchet distance between Gaussian fits of extractor features (FID when the extractor is
Inception, "FD_clf" with the dataset classifier), the Inception-Score-style score exp E[KL(p(y|x) ‖ p(y))] over
``is_splits`` splits, KID (unbiased MMD², cubic kernel) and improved precision/recall (k = 3); with ``bootstrap``
B > 0 also B seeded resamples of the generated images (reference fixed) of FD and IS, the 95% interval of a single
run (``core.stats``; the resamples are kept for the report's differences between rows), and with ``fd_infinity``
the extrapolated FD∞. The JSON records what made each number: the extractor and its weights hash, the
preprocessing, N real and N generated, the sample file's settings, checksum and checkpoint, and the code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any

from core import costs, data, distributed, metrics, paths, progress, stats, tboard
from core.config import precision_of
from core.features import load_extractor, load_reference
from core.provenance import code_fingerprint, provenance, write_json

BOOTSTRAP_SEED = 20261202  # fixed: a rerun draws the same resamples


def kid_subset_size(option: int | None, n_gen: int, n_real: int) -> int:
    """``evaluation.kid_subset_size``, or (null) 1000, or fewer when fewer generated or real images exist."""
    return int(option) if option is not None else min(1000, n_gen, n_real)


def check_counts(n_gen: int, n_real: int, options: dict[str, Any]) -> None:
    """Fail before feature extraction when the sample counts cannot support the configured metrics."""
    splits, kid = int(options["is_splits"]), kid_subset_size(options["kid_subset_size"], n_gen, n_real)
    if n_gen < splits:
        raise ValueError(f"{n_gen} generated images are fewer than evaluation.is_splits = {splits}")
    k = int(options.get("precision_recall_k", 3))
    if min(n_gen, n_real) <= k:
        raise ValueError(
            f"precision and recall with evaluation.precision_recall_k = {k} need more than {k} generated ({n_gen}) "
            "and real ({n_real}) images; lower it or draw more samples (num_samples)"
        )
    if kid > min(n_gen, n_real):
        raise ValueError(
            f"evaluation.kid_subset_size = {kid} exceeds the generated ({n_gen}) or real ({n_real}) images; "
            "lower it or draw more samples (num_samples)"
        )


def run(samples: str, reference: str, extractor_spec: dict[str, Any], out: str, options: dict[str, Any]) -> dict | None:
    """Compute and write the metrics; under torchrun the extraction is split and only rank 0 writes."""
    device = distributed.device_for("auto")
    ctx = distributed.init(device)
    ref, ref_meta = load_reference(reference)
    extractor = load_extractor(extractor_spec)
    if ref_meta["extractor"]["weights_sha256"] != extractor.label["weights_sha256"]:
        raise ValueError(
            f"{reference} was computed with extractor weights {ref_meta['extractor']['weights_sha256'][:12]}…, "
            f"but the configured extractor has {extractor.label['weights_sha256'][:12]}…; rebuild the reference"
        )
    with data.open_images(samples, "samples") as f:
        if not f.attrs.get("complete", False):
            raise ValueError(f"{samples} is not a complete sample file (num_done={f.attrs.get('num_done')})")
        data.verify(f, samples)
        check_counts(f["samples/images"].shape[0], len(ref["features"]), options)
        sample_attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        checksums = {k: str(f[k].attrs["sha256"]) for k in ("samples/images", "samples/labels")}
        n_images = len(f["samples/images"])
        meter = costs.Meter(
            "evaluate",
            device,
            count_flops=bool(options.get("count_flops")),  # a rehearsal's options say so (core.costs)
            name=samples,
            extractor=extractor.label,
            images=n_images,
        )
        feats, logits = progress.extract(
            extractor, f["samples/images"], int(options["batch_size"]), device, ctx, "evaluate", meter
        )
    distributed.shutdown(ctx)
    if not ctx.is_main:
        return None
    n_gen, n_real = len(feats), len(ref["features"])
    splits = int(options["is_splits"])
    mu, sigma = metrics.feature_statistics(feats)
    # fewer images than feature dimensions (small runs, a rehearsal): factor the covariance through the images
    factor = metrics.covariance_factor(feats) if len(feats) <= feats.shape[1] else None
    # one Fréchet distance at the feature dimension (CPU), timed: the forecast prices the bootstrap's from it
    with meter.timed("fd", 1) if factor is None else contextlib.nullcontext():
        fd = metrics.frechet_distance(mu, sigma, ref["mu"], ref["sigma"], factor)
    is_mean, is_std = metrics.inception_score(logits, splits=splits)
    kid_size = kid_subset_size(options["kid_subset_size"], n_gen, n_real)
    kid_mean, kid_std = metrics.kernel_inception_distance(
        ref["features"], feats, num_subsets=int(options["kid_subsets"]), subset_size=kid_size
    )
    pr_k = int(options.get("precision_recall_k", 3))
    precision, recall = metrics.precision_recall(ref["features"], feats, k=pr_k)
    n_tag = f"{n_gen // 1000}k" if n_gen >= 1000 and n_gen % 1000 == 0 else str(n_gen)
    display = "" if extractor.is_inception else f"_{extractor.label['display']}"
    fd_name, is_name, kid_name = "FID" if extractor.is_inception else f"FD{display}", f"IS{display}", f"KID{display}"
    sample_prov = json.loads(sample_attrs.get("provenance", "{}"))
    result: dict[str, Any] = {
        "fid": fd,
        "is_mean": is_mean,
        "is_std": is_std,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "precision_recall_k": pr_k,
        "label": {
            "fid": f"{fd_name}@{n_tag}",
            "is": f"{is_name} ({splits} splits)",
            "kid": f"{kid_name} ({options['kid_subsets']}×{kid_size})",
        },
        "extractor": extractor.label,
        "n_generated": n_gen,
        "n_real": n_real,
        "reference": {
            "path": reference,
            "split": ref_meta["split"],
            "dataset": ref_meta["dataset"],
            "dataset_sha256": ref_meta.get("dataset_sha256"),
        },
        "samples": {
            "path": samples,
            "checksums": checksums,
            **{k: v for k, v in sample_attrs.items() if k not in ("provenance", "resume_hash")},
        },
        "sample_provenance": sample_prov,
        "training_precision": sample_prov.get("training_precision")
        or (precision_of(sample_prov["model_spec"]["train"]) if "model_spec" in sample_prov else None),
        "provenance": provenance(None, code=code_fingerprint("evaluate")),
    }
    resamples = int(options["bootstrap"])
    if resamples > 0:
        fd_boot = stats.bootstrap_fd(feats, ref["mu"], ref["sigma"], resamples, BOOTSTRAP_SEED)
        is_boot = stats.bootstrap_is(logits, splits, resamples, BOOTSTRAP_SEED)
        result["bootstrap"] = {
            "resamples": resamples,
            "seed": BOOTSTRAP_SEED,
            "method": stats.BOOTSTRAP_METHOD,
            "fid": fd_boot.tolist(),
            "is_mean": is_boot.tolist(),
            "fid_interval": stats.bootstrap_interval(fd, fd_boot).as_dict(),
            "is_interval": stats.bootstrap_interval(is_mean, is_boot).as_dict(),
        }
    if options["fd_infinity"]:
        fit = stats.fd_infinity(feats, ref["mu"], ref["sigma"], seed=BOOTSTRAP_SEED)
        result["fd_infinity"] = {
            "value": fit.fd_inf,
            "slope": fit.slope,
            "sizes": list(fit.sizes),
            "values": list(fit.values),
        }
    write_json(out, result)
    meter.write(paths.cost(out))
    if tboard.requested():  # config key tensorboard: the scores and the first 16 samples at the checkpoint's step
        with data.open_images(samples, "samples") as f:
            first = f["samples/images"][:16]
        tboard.log_evaluation(result["sample_provenance"], {"fid": fd, "is": is_mean}, first)
    print(
        f"[evaluate] {samples}: {result['label']['fid']} = {fd:.3f}, {result['label']['is']} = "
        f"{is_mean:.3f} ± {is_std:.3f}, precision {precision:.3f}, recall {recall:.3f}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--extractor", required=True, help="extractor spec as JSON: kind, weights")
    p.add_argument("--options", required=True, help="JSON: core.plan.Plan.evaluation_options")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run(args.samples, args.reference, json.loads(args.extractor), args.out, json.loads(args.options))


if __name__ == "__main__":
    main()

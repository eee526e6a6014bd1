"""Stage: metrics of one sample file against cached reference statistics, written as one JSON.

    python -m core.stages.evaluate --samples results/demo-a/samples/DDIM/step0002000.h5 \
        --reference results/refstats/shapes32/val-clf-n1000.npz --extractor '<JSON>' \
        --out results/demo-a/metrics/DDIM/step0002000.json

Computes the Fréchet distance between Gaussian fits of extractor features (FID when the extractor is
Inception, "FD_clf" with the dataset classifier), the Inception-Score-style score exp E[KL(p(y|x) ‖ p(y))]
over ``is_splits`` splits, KID (unbiased MMD², cubic kernel) and improved precision/recall (k = 3).
The JSON records what made each number: the extractor and its weights hash, the preprocessing, N real and
N generated, the sample file's sampler settings and checkpoint, and the code version.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from core import data, distributed, metrics
from core.features import load_extractor, load_reference
from core.provenance import provenance, write_json


def check_counts(n_gen: int, n_real: int, options: dict[str, Any]) -> None:
    """Fail before feature extraction when the sample counts cannot support the configured metrics."""
    splits, kid = int(options.get("is_splits", 10)), int(options.get("kid_subset_size", 1000))
    if n_gen < splits:
        raise ValueError(f"{n_gen} generated images are fewer than evaluation.is_splits = {splits}")
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
        check_counts(f["samples/images"].shape[0], len(ref["features"]), options)
        sample_attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        feats, logits = extractor.extract(
            f["samples/images"], batch_size=int(options.get("batch_size", 200)), device=device, ctx=ctx
        )
    distributed.shutdown(ctx)
    if not ctx.is_main:
        return None
    n_gen, n_real = len(feats), len(ref["features"])
    mu, sigma = metrics.feature_statistics(feats)
    fd = metrics.frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
    is_mean, is_std = metrics.inception_score(logits, splits=int(options.get("is_splits", 10)))
    kid_size = int(options.get("kid_subset_size", 1000))
    kid_mean, kid_std = metrics.kernel_inception_distance(
        ref["features"], feats, num_subsets=int(options.get("kid_subsets", 100)), subset_size=kid_size
    )
    precision, recall = metrics.precision_recall(ref["features"], feats, k=3)
    n_tag = f"{n_gen // 1000}k" if n_gen >= 1000 and n_gen % 1000 == 0 else str(n_gen)
    fd_name, is_name, kid_name = (
        ("FID", "IS", "KID")
        if extractor.is_inception
        else (
            f"FD_{extractor.label['display']}",
            f"IS_{extractor.label['display']}",
            f"KID_{extractor.label['display']}",
        )
    )
    result = {
        "fid": fd,
        "is_mean": is_mean,
        "is_std": is_std,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "label": {
            "fid": f"{fd_name}@{n_tag}",
            "is": f"{is_name} ({options.get('is_splits', 10)} splits)",
            "kid": f"{kid_name} ({options.get('kid_subsets', 100)}×{kid_size})",
        },
        "extractor": extractor.label,
        "n_generated": n_gen,
        "n_real": n_real,
        "reference": {"path": reference, "split": ref_meta["split"], "dataset": ref_meta["dataset"]},
        "samples": {
            "path": samples,
            **{k: v for k, v in sample_attrs.items() if k not in ("provenance", "resume_hash")},
        },
        "sample_provenance": json.loads(sample_attrs.get("provenance", "{}")),
        "provenance": provenance(None),
    }
    write_json(out, result)
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
    p.add_argument("--options", default="{}", help="JSON: is_splits, kid_subsets, kid_subset_size")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run(args.samples, args.reference, json.loads(args.extractor), args.out, json.loads(args.options))


if __name__ == "__main__":
    main()

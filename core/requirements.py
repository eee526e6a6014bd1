"""What the studies need of a dataset's splits — reference images, KID subsets, training and classifier batches, a
validation split — as a list of requirements, each naming the config key that asks for it. ``core.folders.
check_requirements`` checks them: at planning for the built-in data (``core.plan.Plan``), in the ingestion job for
image folders (rule ``make_dataset``), before any training. Free of heavy imports (planning imports it)."""

from __future__ import annotations

from typing import Any


def of_dataset(plan: Any, dataset: str) -> list[dict[str, Any]]:
    """What the studies on ``dataset`` of ``plan`` (a ``core.plan.Plan``, untyped here: it imports this module) need
    of its splits (``core.folders.check_requirements``): checked at planning for the built-in data and by the
    ingestion job for image folders, before any training."""
    reqs: list[dict[str, Any]] = []
    for study, s in plan.config["studies"].items():
        if s["dataset"] != dataset:
            continue
        ev, key = s["evaluation"], f"studies.{study}.evaluation"
        split = ev["reference_split"]
        reqs.append(
            {
                "key": f"{key}.reference_num",
                "split": split,
                "min": max(2, ev["reference_num"]),
                "why": "reference images",
            }
        )
        if ev["kid_subset_size"]:
            reqs.append(
                {
                    "key": f"{key}.kid_subset_size",
                    "split": split,
                    "min": ev["kid_subset_size"],
                    "why": "KID subsets",
                }
            )
        if plan.extractor_kind(study) == "classifier":
            c = ev["classifier"]
            reqs.append(
                {
                    "key": f"{key}.classifier.batch_size",
                    "split": "train",
                    "min": c["batch_size"],
                    "why": "the classifier's training batches",
                }
            )
            reqs.append(
                {
                    "key": f"{key}.extractor",
                    "split": "val",
                    "min": 1,
                    "why": "the classifier extractor's validation accuracy; add val images or set "
                    f"datasets.{dataset}.val_fraction",
                }
            )
        for m, spec in plan.models[study].items():
            t = spec["train"]
            if spec["space"] == "pixel":
                reqs.append(
                    {
                        "key": f"studies.{study}.models.{m}.train.batch_size",
                        "split": "train",
                        "min": t["batch_size"],
                        "why": "training batches",
                    }
                )
            if "early_stopping" in t:
                reqs.append(
                    {
                        "key": f"studies.{study}.models.{m}.train.early_stopping",
                        "split": "val",
                        "min": 1,
                        "why": "the validation loss",
                    }
                )
    for name, ae in plan.config["autoencoders"].items():
        if ae["dataset"] == dataset and not ae["checkpoint"]:
            reqs.append(
                {
                    "key": f"autoencoders.{name}.train.batch_size",
                    "split": "train",
                    "min": ae["train"]["batch_size"],
                    "why": "the autoencoder's training batches",
                }
            )
    return reqs

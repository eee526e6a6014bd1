"""Stage: train the dataset's small CNN classifier (``core.nets.classifier``), the feature extractor of the metrics
when no Inception weights are configured.

    python -m core.stages.train_classifier --data results/data/shapes32.h5 --spec '<JSON>' --out clf.pt
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
import torch.nn.functional as F

from core import data
from core.nets.classifier import Classifier
from core.provenance import atomic_path, file_sha256, provenance, write_json


def run(data_path: str, spec: dict[str, Any], out: str) -> dict[str, Any]:
    torch.manual_seed(int(spec["seed"]))
    gen = torch.Generator().manual_seed(int(spec["seed"]))
    with data.open_images(data_path, "train") as f:
        names = data.class_names(f)
        channels = int(f["train/images"].shape[3])
        data_sha256 = data.content_sha256(f, data_path)
    model = Classifier(len(names), int(spec["width"]), int(spec["depth"]), channels)
    opt = torch.optim.AdamW(model.parameters(), lr=float(spec["lr"]), weight_decay=1e-4)
    loader = data.ImageBatches(data_path, "train", int(spec["batch_size"]), gen)
    t0 = time.time()
    model.train()
    for step in range(1, int(spec["steps"]) + 1):
        images, labels = loader.next()
        x = data.to_model_range(images)
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = F.cross_entropy(model(x)[1], torch.as_tensor(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"[classifier] step {step} loss {loss.item():.4f}", flush=True)
    loader.close()
    model.eval()
    val_images, val_labels = data.read_split(data_path, "val")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(val_images), 500):
            logits = model(data.to_model_range(val_images[i : i + 500]))[1]
            correct += int((logits.argmax(1).numpy() == val_labels[i : i + 500]).sum())
    accuracy = correct / len(val_images)
    info = provenance(
        spec,
        kind="classifier",
        num_classes=len(names),
        class_names=names,
        in_channels=channels,
        data_sha256=data_sha256,
        feature_dim=model.feature_dim,
        val_accuracy=accuracy,
        train_seconds=round(time.time() - t0, 1),
        data=str(data_path),
    )
    with atomic_path(out) as tmp:
        torch.save({"model": model.state_dict(), "meta": info}, tmp)
    info["weights_sha256"] = file_sha256(out)
    write_json(str(out) + ".json", info)
    print(f"[classifier] validation accuracy {accuracy:.3f}; wrote {out}", flush=True)
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--spec", required=True, help="classifier spec as JSON: width, depth, steps, batch_size, lr, seed")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run(args.data, json.loads(args.spec), args.out)


if __name__ == "__main__":
    main()

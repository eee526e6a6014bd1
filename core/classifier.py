"""Stage and model: a small CNN classifier trained on a dataset's training images, used as an offline
feature extractor when no Inception weights are configured.

    python -m core.train_classifier --data results/data/shapes32.h5 --spec '<JSON>' --out clf.pt

Its penultimate layer (global-average-pooled, ``feature_dim`` wide) gives the features for a Fréchet
distance, its softmax the class posteriors for an Inception-Score-style score. Numbers made with it are
*not* Inception FID/IS and are labelled with the extractor's name and weights hash.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core import data
from core.provenance import atomic_path, file_sha256, provenance, write_json


class Classifier(nn.Module):
    """conv–BN–ReLU stages that halve the resolution, global average pool, linear head."""

    def __init__(self, num_classes: int, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(depth):
            c_out = width * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] → (penultimate features, logits)."""
        f = self.features(x).mean(dim=(2, 3))
        return f, self.head(f)


def train_classifier(data_path: str, spec: dict[str, Any], out: str) -> dict[str, Any]:
    torch.manual_seed(int(spec["seed"]))
    gen = torch.Generator().manual_seed(int(spec["seed"]))
    with data.open_images(data_path, "train") as f:
        names = data.class_names(f)
    model = Classifier(len(names), int(spec["width"]), int(spec["depth"]))
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


def load_classifier(path: str) -> tuple[Classifier, dict[str, Any]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt["meta"]
    spec = meta["spec"]
    model = Classifier(int(meta["num_classes"]), int(spec["width"]), int(spec["depth"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--spec", required=True, help="classifier spec as JSON: width, depth, steps, batch_size, lr, seed")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    train_classifier(args.data, json.loads(args.spec), args.out)


if __name__ == "__main__":
    main()

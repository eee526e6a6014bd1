"""A small CNN classifier of a dataset's images, used as an offline feature extractor when no Inception weights
are configured (trained by the stage ``train_classifier``).

Its penultimate layer (global-average-pooled, ``feature_dim`` wide) gives the features for a Fréchet distance, its
softmax the class posteriors for an Inception-Score-style score. Numbers made with it are *not* Inception FID/IS and
are labelled with the extractor's name and weights hash.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Classifier(nn.Module):
    """conv–BN–ReLU stages that halve the resolution, global average pool, linear head."""

    def __init__(self, num_classes: int, width: int = 32, depth: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
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


def load_classifier(path: str) -> tuple[Classifier, dict[str, Any]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt["meta"]
    spec = meta["spec"]
    model = Classifier(int(meta["num_classes"]), int(spec["width"]), int(spec["depth"]), int(meta["in_channels"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), meta

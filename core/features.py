"""One feature-extraction path for every metric: an extractor maps uint8 images to (features, logits).

Extractors:
- ``classifier``: the dataset's own small CNN (``core.classifier``), native resolution, x/127.5 − 1.
  Its numbers are labelled e.g. "FD_clf" / "IS_clf", never "Inception FID".

Every extractor carries a ``label`` dict (name, weights file and SHA-256, preprocessing, feature
dimension) that is copied into each statistics and metrics file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core import data
from core.provenance import file_sha256


@dataclass
class Extractor:
    name: str
    model: torch.nn.Module
    preprocessing: str
    label: dict[str, Any] = field(default_factory=dict)

    @torch.inference_mode()
    def extract(self, images: Any, batch_size: int = 500, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Features and logits (float64) of uint8 NHWC images (an array or an h5py dataset)."""
        n = images.shape[0]
        if n == 0:
            raise ValueError("no images to extract features from")
        first = images[:1]
        if first.dtype != np.uint8 or first.ndim != 4 or first.shape[-1] != 3:
            raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {first.dtype} {tuple(images.shape)}")
        self.model.to(device).eval()
        feats, logits = [], []
        for i in range(0, n, batch_size):
            x = data.to_model_range(np.asarray(images[i : i + batch_size])).to(device)
            f, lg = self.model(x)
            feats.append(f.double().cpu().numpy())
            logits.append(lg.double().cpu().numpy())
        return np.concatenate(feats), np.concatenate(logits)


def load_extractor(spec: dict[str, Any]) -> Extractor:
    """The extractor named by ``spec['kind']`` with its weights at ``spec['weights']``."""
    kind = spec["kind"]
    if kind == "classifier":
        from core.classifier import load_classifier

        model, meta = load_classifier(spec["weights"])
        label = {
            "extractor": "classifier",
            "display": "clf",
            "weights": str(spec["weights"]),
            "weights_sha256": file_sha256(spec["weights"]),
            "preprocessing": "native resolution, x/127.5-1",
            "feature_dim": model.feature_dim,
            "classifier_val_accuracy": meta.get("val_accuracy"),
        }
        return Extractor("classifier", model, label["preprocessing"], label)
    raise ValueError(f"unknown extractor kind {kind!r} (known: classifier)")

"""One feature-extraction path for every metric: an extractor maps uint8 images to (features, logits).

Extractors:
- ``inception``: the FID Inception-v3 (``core.nets.inception``) with the community's weights, 299² input in the
  configured preprocessing mode; its numbers are labelled "FID" / "IS".
- ``inception-standin``: the same architecture and preprocessing with random weights from ``seed``
  (``core.nets.inception.standin_fid_inception``), for the rehearsal, where the real weights are not at hand; no
  weights file. Its numbers are labelled "FD_standin" / "IS_standin" and mean nothing beyond "the job ran".
- ``classifier``: the dataset's own small CNN (``core.nets.classifier``), native resolution, x/127.5 − 1, for
  when no Inception weights are configured. Its numbers are labelled "FD_clf" / "IS_clf", never "FID".

Every extractor carries a ``label`` dict (name, weights file and SHA-256, preprocessing, feature
dimension) that is copied into each statistics and metrics file. Extraction runs without gradients, in
float32 with TF32 disabled, so metrics do not depend on the GPU's matmul precision settings; under torchrun
it is split across the processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core import data
from core.distributed import Context
from core.provenance import file_sha256


@dataclass
class Extractor:
    name: str
    model: torch.nn.Module
    prepare: Callable[[np.ndarray], torch.Tensor]
    label: dict[str, Any] = field(default_factory=dict)

    @property
    def is_inception(self) -> bool:
        return self.name == "inception"

    @torch.inference_mode()
    def extract(
        self, images: Any, batch_size: int = 200, device: str | torch.device = "cpu", ctx: Context | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features and logits (float64) of uint8 NHWC images (an array or an h5py dataset).

        With a data-parallel ``ctx`` (torchrun), rank r extracts the r-th contiguous part and every rank gets
        all rows back in order."""
        n = images.shape[0]
        if n == 0:
            raise ValueError("no images to extract features from")
        first = np.asarray(images[:1])
        if first.dtype != np.uint8 or first.ndim != 4 or first.shape[-1] not in (1, 3):
            raise ValueError(
                f"expected uint8 images of shape (N, H, W, 3 or 1), got {first.dtype} {tuple(images.shape)}"
            )
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            self.model.to(device).eval()
            lo, hi = 0, n
            if ctx is not None and ctx.enabled:
                per = -(-n // ctx.world_size)
                lo, hi = min(n, ctx.rank * per), min(n, (ctx.rank + 1) * per)
            feats, logits = [], []
            for i in range(lo, hi, batch_size):
                # uint8 to the device, resized and normalised there (299² float32 is 22× the bytes of 128² uint8)
                batch = torch.as_tensor(np.asarray(images[i : min(i + batch_size, hi)])).to(device)
                f, lg = self.model(self.prepare(batch))
                feats.append(f.double().cpu().numpy())
                logits.append(lg.double().cpu().numpy())
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        if ctx is not None and ctx.enabled:
            parts: list[Any] = [None] * ctx.world_size
            torch.distributed.all_gather_object(parts, (feats, logits))
            feats = [a for part in parts for a in part[0]]
            logits = [a for part in parts for a in part[1]]
        return np.concatenate(feats), np.concatenate(logits)


def load_extractor(spec: dict[str, Any]) -> Extractor:
    """The extractor named by ``spec['kind']`` with its weights at ``spec['weights']`` (verified)."""
    kind = spec["kind"]
    if kind == "classifier":
        from core.nets.classifier import load_classifier

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
        return Extractor("classifier", model, data.to_model_range, label)
    if kind == "inception":
        from core.nets import inception

        sha, mode = spec["sha256"], spec["preprocessing"]
        if mode not in inception.PREPROCESSING_MODES:
            raise ValueError(f"metrics.preprocessing must be one of {inception.PREPROCESSING_MODES}, got {mode!r}")
        model = inception.load_fid_inception(spec["weights"], sha)
        label = {
            "extractor": "inception-v3-fid",
            "display": "",
            "weights": str(spec["weights"]),
            "weights_sha256": sha,
            "preprocessing": mode,
            "feature_dim": 2048,
        }
        return Extractor("inception", model, lambda x: inception.preprocess(torch.as_tensor(x), mode), label)
    if kind == "inception-standin":
        from core.nets import inception

        mode, seed = spec["preprocessing"], spec.get("seed", 0)
        if mode not in inception.PREPROCESSING_MODES:
            raise ValueError(f"metrics.preprocessing must be one of {inception.PREPROCESSING_MODES}, got {mode!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"the stand-in Inception's seed must be an integer >= 0, got {seed!r}")
        model = inception.standin_fid_inception(seed)
        label = {
            "extractor": "inception-v3-random-standin",
            "display": "standin",
            "weights": f"none: random (seed {seed}), rehearsal stand-in",
            "weights_sha256": inception.state_sha256(model),
            "preprocessing": mode,
            "feature_dim": 2048,
            "standin": True,
        }
        return Extractor(kind, model, lambda x: inception.preprocess(torch.as_tensor(x), mode), label)
    raise ValueError(f"unknown extractor kind {kind!r} (known: classifier, inception, inception-standin)")


def load_reference(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reference statistics written by ``core.stages.reference_stats``; ValueError naming the file if unreadable."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("features", "logits", "mu", "sigma")}
            meta = json.loads(str(z["meta"]))
    except FileNotFoundError:
        raise
    except Exception as err:  # a truncated or overwritten .npz: zipfile, pickle or key errors
        raise ValueError(
            f"reference statistics {path} are unreadable ({type(err).__name__}: {err}); delete the file and rerun"
        ) from None
    return arrays, meta

"""Distribution metrics on extractor features and logits, in float64.

- Fréchet distance (Heusel et al. 2017): ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}. The trace of the
  matrix square root is Σ √λᵢ over the eigenvalues of Σ₂^{1/2} Σ₁ Σ₂^{1/2} (symmetric PSD, same spectrum as
  Σ₁Σ₂), which needs two ``eigh`` calls instead of ``scipy.linalg.sqrtm`` and is robust to singular Σ.
- Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)) per split, mean and std over splits.
- KID (Bińkowski et al. 2018): unbiased MMD² with k(x, y) = (xᵀy/d + 1)³ over random subsets.
- Improved precision/recall (Kynkäänniemi et al. 2019): k-NN balls around each real (fake) feature
  define the manifold; precision is the share of fakes inside the real manifold, recall the reverse.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def _as_2d(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof = 1) of (N, D) features."""
    f = _as_2d("features", features)
    if f.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _check_stats(mu1, sigma1, mu2, sigma2) -> tuple[np.ndarray, ...]:
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    return mu1, s1, mu2, s2


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) via the eigenvalues of Σ₂^{½} Σ₁ Σ₂^{½}."""
    mu1, s1, mu2, s2 = _check_stats(mu1, sigma1, mu2, sigma2)
    r = _psd_sqrt(s2)
    m = r @ s1 @ r
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def frechet_distance_sqrtm(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """The classic formulation with ``scipy.linalg.sqrtm`` (as in pytorch-fid), kept as a reference."""
    mu1, s1, mu2, s2 = _check_stats(mu1, sigma1, mu2, sigma2)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp E_x KL(p(y|x) ‖ p(y)) on each of ``splits`` consecutive splits; mean and std over splits."""
    z = _as_2d("logits", logits)
    n = z.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"inception score needs at least as many samples ({n}) as splits ({splits})")
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    scores = []
    for part in np.array_split(log_p, splits):
        p = np.exp(part)
        log_py = np.log(p.mean(axis=0) + 1e-300)
        scores.append(np.exp(np.mean(np.sum(p * (part - log_py), axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def kernel_inception_distance(
    real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD² with the cubic polynomial kernel, mean and std over random subsets."""
    x, y = _as_2d("real features", real), _as_2d("generated features", fake)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    m = subset_size
    if m < 2 or m > min(len(x), len(y)):
        raise ValueError(
            f"KID subset size {m} must be between 2 and the smaller sample count "
            f"(real {len(x)}, generated {len(y)}); lower evaluation.kid_subset_size"
        )
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        k_aa, k_bb, k_ab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        sum_aa = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
        sum_bb = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        mmds[i] = sum_aa + sum_bb - 2 * k_ab.mean()
    return float(mmds.mean()), float(mmds.std())


def _pairwise_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0.0)


def _knn_radii(x: np.ndarray, k: int, batch: int) -> np.ndarray:
    """Squared distance of each row of x to its k-th nearest other row."""
    radii = np.empty(len(x))
    for i in range(0, len(x), batch):
        d = _pairwise_sq_dists(x[i : i + batch], x)
        radii[i : i + batch] = np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself
    return radii


def _inside(points: np.ndarray, ref: np.ndarray, radii: np.ndarray, batch: int) -> np.ndarray:
    inside = np.zeros(len(points), dtype=bool)
    for i in range(0, len(points), batch):
        inside[i : i + batch] = (_pairwise_sq_dists(points[i : i + batch], ref) <= radii[None, :]).any(axis=1)
    return inside


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1000) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (k = 3 as in the paper)."""
    x, y = _as_2d("real features", real), _as_2d("generated features", fake)
    if min(len(x), len(y)) <= k:
        raise ValueError(f"precision/recall need more than k = {k} samples per set (real {len(x)}, fake {len(y)})")
    precision = _inside(y, x, _knn_radii(x, k, batch_size), batch_size).mean()
    recall = _inside(x, y, _knn_radii(y, k, batch_size), batch_size).mean()
    return float(precision), float(recall)

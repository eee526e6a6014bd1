"""Distribution metrics on extractor features and logits, computed in float64.

- Fréchet distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule..."):
  FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}. ``frechet_distance`` never forms the non-symmetric
  product Σ₁Σ₂: with any factor Σ₁ = A Aᵀ (Cholesky, or the symmetric square root when Σ₁ is singular),
  Σ₁Σ₂ is similar to the symmetric PSD matrix Aᵀ Σ₂ A, so tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ(Aᵀ Σ₂ A). That is one
  Cholesky (or ``eigh``) and one ``eigvalsh`` instead of ``scipy.linalg.sqrtm``'s Schur decomposition.
  ``frechet_distance_sqrtm`` is the classic formulation (pytorch-fid), kept as the reference.
- Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)) per split; mean and std over splits.
- Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"): unbiased MMD² with the
  cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³ over random subsets; mean and std over subsets.
- Improved precision and recall (Kynkäänniemi et al. 2019): the k-NN balls around the real (generated)
  features approximate the real (generated) manifold; precision is the share of generated samples inside
  the real manifold, recall the share of real samples inside the generated one.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_sqrtm",
    "inception_score",
    "kernel_inception_distance",
    "precision_recall",
]


# ----------------------------------------------------------------------------------------------- checks


def _as_2d(name: str, x: np.ndarray, min_rows: int = 1) -> np.ndarray:
    """``x`` as a finite float64 (N, D) array with N >= ``min_rows``, else a ValueError naming ``name``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {x.shape}")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} row(s) and 1 column, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: real {a.shape[1]} vs generated {b.shape[1]}")


def _check_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.ndim != 1:
        raise ValueError(f"mu1 must be a 1-D mean vector (D,), got shape {mu1.shape}")
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"mismatched statistics: expected mu (D,) and sigma (D, D) with D = {d}, got mu1 {mu1.shape}, "
            f"mu2 {mu2.shape}, sigma1 {s1.shape}, sigma2 {s2.shape}"
        )
    for name, arr in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    # covariances are symmetric up to rounding; use the exactly symmetric part
    return mu1, (s1 + s1.T) / 2, mu2, (s2 + s2.T) / 2


# --------------------------------------------------------------------------------------- Fréchet distance


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (``rowvar=False``, ``ddof=1``) of (N, D) features, in float64."""
    f = _as_2d("features", features, min_rows=2)
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False, ddof=1))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative rounding eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def covariance_factor(features: np.ndarray) -> np.ndarray:
    """A (D, N) with A Aᵀ = the covariance of (N, D) features (centred, / √(N − 1)): with fewer samples than
    dimensions, ``frechet_distance(..., factor1=A)`` takes the eigenvalues of an N×N matrix instead of D×D ones."""
    f = _as_2d("features", features, min_rows=2)
    return ((f - f.mean(axis=0)) / np.sqrt(f.shape[0] - 1)).T


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, a: np.ndarray | None = None) -> float:
    """tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ(Aᵀ Σ₂ A) for Σ₁ = A Aᵀ (given, or Cholesky, or the PSD square root if singular)."""
    if a is None:
        try:
            a = np.linalg.cholesky(s1)
        except np.linalg.LinAlgError:  # singular / rank-deficient Σ₁: symmetric square root instead
            a = _psd_sqrt(s1)
    m = a.T @ s2 @ a
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, factor1: np.ndarray | None = None
) -> float:
    """FD between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Heusel et al. 2017), via the eigenvalues of Aᵀ Σ₂ A, Σ₁ = A Aᵀ.

    Stable for singular covariances (fewer samples than dimensions, constant features); the result is
    clipped at 0, which only removes rounding below zero for identical statistics. ``factor1``: a known A
    (``covariance_factor`` of the features behind Σ₁), which saves the D×D factorisation.
    """
    mu1, s1, mu2, s2 = _check_stats(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2, factor1)
    return float(max(fd, 0.0))


def frechet_distance_sqrtm(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """The classic FD with ``scipy.linalg.sqrtm(Σ₁Σ₂)`` (as in pytorch-fid), kept as the reference.

    If the square root is not finite, ``eps`` is added to both diagonals and it is recomputed; the
    imaginary part that rounding leaves in the result is dropped.
    """
    mu1, s1, mu2, s2 = _check_stats(mu1, sigma1, mu2, sigma2)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(np.real(covmean)))


# ------------------------------------------------------------------------------------------ Inception Score


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def inception_score(
    logits: np.ndarray,
    splits: int = 10,
    shuffle_seed: int | None = None,
) -> tuple[float, float]:
    """IS = exp E_x KL(p(y|x) ‖ p(y)) (Salimans et al. 2016) on each of ``splits`` splits; (mean, std).

    p(y|x) = softmax(logits) in float64; p(y) is the mean of p(y|x) within the split. Split ``i`` holds
    samples [i·N/splits, (i+1)·N/splits) in the given order (the boundaries torch-fidelity uses); pass
    ``shuffle_seed`` to permute the samples first with ``np.random.RandomState(shuffle_seed)`` (torch-fidelity
    shuffles with seed 2020). The std is the population std (ddof = 0) over splits.
    """
    z = _as_2d("logits", logits)
    n = z.shape[0]
    if splits < 1:
        raise ValueError(f"the inception score needs at least 1 split, got splits = {splits}")
    if n < splits:
        raise ValueError(f"the inception score needs at least as many samples ({n}) as splits ({splits})")
    if shuffle_seed is not None:
        z = z[np.random.RandomState(shuffle_seed).permutation(n)]
    log_p = _log_softmax(z)
    scores = np.empty(splits)
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        p = np.exp(part)
        log_py = np.log(p.mean(axis=0))  # p(y) > 0: softmax outputs are positive
        scores[i] = np.exp(np.mean(np.sum(p * (part - log_py), axis=1)))
    return float(scores.mean()), float(scores.std())


# --------------------------------------------------------------------------------------------------- KID


def _unbiased_mmd2_cubic(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² of two equal-size samples with k(x, y) = (xᵀy / d + 1)³."""
    m, d = a.shape
    k_aa = (a @ a.T / d + 1.0) ** 3
    k_bb = (b @ b.T / d + 1.0) ** 3
    k_ab = (a @ b.T / d + 1.0) ** 3
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within - 2.0 * k_ab.mean())


def kernel_inception_distance(
    real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD², cubic polynomial kernel; (mean, std) over subsets.

    Each of ``num_subsets`` rounds draws ``subset_size`` real and ``subset_size`` generated samples without
    replacement (``np.random.default_rng(seed)``). The std is the population std over subsets.
    """
    x, y = _as_2d("real features", real), _as_2d("generated features", fake)
    _same_dim(x, y)
    if num_subsets < 1:
        raise ValueError(f"KID needs at least 1 subset, got num_subsets = {num_subsets}")
    m = subset_size
    if m < 2 or m > min(len(x), len(y)):
        raise ValueError(
            f"KID subset size {m} must be between 2 and the smaller sample count (real {len(x)}, "
            f"generated {len(y)}); lower evaluation.kid_subset_size or draw more samples"
        )
    rng = np.random.default_rng(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        mmds[i] = _unbiased_mmd2_cubic(a, b)
    return float(mmds.mean()), float(mmds.std())


# -------------------------------------------------------------------------------------- precision/recall


def _sq_dists(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of a and b, given their squared norms."""
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T), 0.0)


def _knn_radii(x: np.ndarray, x_sq: np.ndarray, k: int, batch: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row (the row itself excluded)."""
    radii = np.empty(len(x))
    for i in range(0, len(x), batch):
        d = _sq_dists(x[i : i + batch], x_sq[i : i + batch], x, x_sq)
        rows = np.arange(len(d))
        d[rows, i + rows] = -1.0  # the point itself sorts first, so position k holds the k-th neighbour
        radii[i : i + batch] = np.partition(d, k, axis=1)[:, k]
    return radii


def _inside_manifold(
    points: np.ndarray, ref: np.ndarray, ref_sq: np.ndarray, radii: np.ndarray, batch: int
) -> np.ndarray:
    """Whether each point lies in at least one ball ‖p − r‖ ≤ radius(r) around the reference rows."""
    p_sq = (points * points).sum(axis=1)
    inside = np.empty(len(points), dtype=bool)
    for i in range(0, len(points), batch):
        d = _sq_dists(points[i : i + batch], p_sq[i : i + batch], ref, ref_sq)
        inside[i : i + batch] = (d <= radii[None, :]).any(axis=1)
    return inside


def precision_recall(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = 3,
    batch_size: int = 1000,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds (k = 3 in the paper).

    precision = share of generated samples within the k-NN radius of some real sample; recall = share of
    real samples within the k-NN radius of some generated sample. Distances are computed in row blocks of
    ``batch_size`` (memory ~ 8·batch_size·N bytes), so 10k × 2048 features fit easily.
    """
    x, y = _as_2d("real features", real), _as_2d("generated features", fake)
    _same_dim(x, y)
    if k < 1:
        raise ValueError(f"precision/recall need k >= 1, got k = {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if min(len(x), len(y)) <= k:
        counts = f"real {len(x)}, generated {len(y)}"
        raise ValueError(f"precision/recall need more than k = {k} samples per set ({counts})")
    x_sq, y_sq = (x * x).sum(axis=1), (y * y).sum(axis=1)
    precision = _inside_manifold(y, x, x_sq, _knn_radii(x, x_sq, k, batch_size), batch_size).mean()
    recall = _inside_manifold(x, y, y_sq, _knn_radii(y, y_sq, k, batch_size), batch_size).mean()
    return float(precision), float(recall)

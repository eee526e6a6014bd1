"""Uncertainty for the report's numbers: intervals, differences between rows with verdicts, and FD∞.

A table number is either a mean over independent replicates (seeds) or a single run. Replicates get a
Student t interval (``t_interval``). A single run gets a bootstrap interval over its generated images
(``bootstrap_fd``, ``bootstrap_is``, ``bootstrap_interval``): the generated rows are resampled with
replacement, the reference statistics stay fixed (they are a property of the dataset, not of the run).

What a single-run interval covers. FD at N generated images is biased upward (the sample covariance's
noise adds to the distance), so the quantity an interval from one run can be asked to cover is E[FD_N], the
expected FD at this N over independent draws of N generated images, with the reference fixed — not the
population FD (see ``fd_infinity`` for that). Resampling with replacement (duplicate rows) inflates the FD a
second time, so the bootstrap distribution sits above the estimate and the plain percentile interval sits
too high. Which interval type covers E[FD_N] was decided by measuring (``bench/bench_stats.py``): Gaussian
features (power-law spectrum, trace D), reference statistics = the population's, a mean shift and a scaled,
rotated generated covariance; per case E[FD_N] from 2000 independent draws, then 200 seeded trials of one
draw with 200 resamples, 95% level. Coverage of E[FD_N]:

    D     N   FD_pop  E[FD_N]  sd FD_N  percentile  basic    bc  normal  centred
   16   300    0.000    0.217    0.037       0.000  0.045 0.000   0.995    0.995
   16   300    1.427    1.657    0.136       0.600  0.660 0.555   0.965    0.955
   16   300    6.255    6.488    0.301       0.875  0.780 0.805   0.940    0.925
   16  1000    1.889    1.956    0.072       0.865  0.815 0.805   0.945    0.935
   16  1000    5.793    5.863    0.130       0.910  0.900 0.900   0.935    0.920
   64   300    0.000    2.211    0.122       0.000  0.000 0.000   1.000    0.995
   64   300    6.386    8.702    0.314       0.000  0.000 0.000   0.980    0.975
   64   300    8.822   11.147    0.393       0.000  0.000 0.000   0.985    0.965
   64  1000    5.358    6.045    0.152       0.005  0.045 0.000   0.945    0.935
   64  1000   11.009   11.695    0.198       0.060  0.110 0.005   0.960    0.960
   all 2000 trials                           0.332  0.335 0.307   0.965    0.956
   mean |coverage - 0.95|                    0.618  0.614 0.643   0.022    0.023

At D = 256, N = 600 (D/N ≈ 0.4, as for Inception features at N = 5000; ``--large``, 100 trials × 100
resamples): FD_pop 24.89, E[FD_N] 38.85, sd 0.53; coverage percentile, basic and bc 0.00, normal and
centred 1.00 (mean width 3.6, against 2.1 from the true sd: the resampled FDs spread wider than FD_N does,
so these intervals are conservative when the bias is large).

The bootstrap's bias estimate (mean resampled FD − FD) matched the true bias E[FD_N] − FD_pop within 7%
(slightly low) in every case, so the percentile interval sits one bias too high and the basic interval,
which subtracts that bias, one bias too low (it aims at FD_pop); Efron's bias-corrected (bc) one is as far
off. Both intervals centred on the estimate cover E[FD_N]: "centred" (the percentile interval moved down by
the bootstrap bias) is closest to 95% over all trials (0.956; "normal" 0.965, slightly wider, the same mean
deviation within the Monte Carlo error of ±0.015 per case), and keeps the skew of the resampled values, so
it is the default.

Differences between report rows, their p-values, the multiplicity correction and the verdicts live in
``core.verdicts``; it builds on ``t_interval`` and ``bootstrap_interval`` here.

FD∞ (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find them"): the FD
bias is ≈ k/N, so FD_N is computed on random subsets of several sizes and FD_N = FD∞ + k/N is fitted by least
squares in 1/N; the intercept estimates the FD at infinitely many generated images.

Everything here is numpy/scipy in float64; FD values follow ``core.metrics.frechet_distance``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

from core import metrics

__all__ = [
    "BOOTSTRAP_METHOD",
    "BOOTSTRAP_METHODS",
    "FDInfinity",
    "Interval",
    "bootstrap_fd",
    "bootstrap_interval",
    "bootstrap_is",
    "fd_infinity",
    "fd_infinity_sizes",
    "t_interval",
]

#: bootstrap interval types ``bootstrap_interval`` knows (see its docstring)
BOOTSTRAP_METHODS = ("percentile", "basic", "bc", "normal", "centred")
#: the type used by default, chosen by the coverage simulation in the module docstring
BOOTSTRAP_METHOD = "centred"


# ---------------------------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval [low, high] at ``level``.

    ``method`` says how it was made (e.g. "t over 3 replicates", "bootstrap (centred), 200 resamples") and
    ``n`` counts what it was made from (replicates or resamples).
    """

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval."""
        return self.low <= value <= self.high

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the closed interval (e.g. ``excludes(0)``: a resolved sign)."""
        return not self.contains(value)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict[str, float | str | int]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "method": self.method,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, float | str | int]) -> Interval:
        return cls(
            float(d["estimate"]), float(d["low"]), float(d["high"]), float(d["level"]), str(d["method"]), int(d["n"])
        )


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"the confidence level must lie in (0, 1), got {level}")
    return float(level)


def _finite_1d(name: str, values: Sequence[float] | np.ndarray, min_len: int) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {x.shape}")
    if len(x) < min_len:
        raise ValueError(f"{name} needs at least {min_len} values, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    """Student t interval for the mean of n ≥ 2 replicate values: x̄ ± t_{(1+level)/2, n−1} · s/√n.

    The replicates (independent seeds) are treated as i.i.d. draws; s is the sample std (ddof = 1).
    """
    level = _check_level(level)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(
            f"a t interval needs at least 2 replicate values, got {x.size}; report a single run with a "
            "bootstrap interval instead"
        )
    x = _finite_1d("replicate values", x, 2)
    n = len(x)
    mean = float(x.mean())
    half = float(scipy.stats.t.ppf((1 + level) / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, level, f"t over {n} replicates", n)


# ---------------------------------------------------------------------------------------------- bootstrap


def bootstrap_interval(
    estimate: float,
    resampled: Sequence[float] | np.ndarray,
    level: float = 0.95,
    method: str = BOOTSTRAP_METHOD,
) -> Interval:
    """Bootstrap confidence interval for ``estimate`` from its values ``resampled`` on B resamples.

    With q_p the p-quantile of the resampled values, m their mean, s their std, α = 1 − level
    (Efron & Tibshirani 1993, ch. 13–14; Davison & Hinkley 1997, ch. 5):

    - "percentile": [q_{α/2}, q_{1−α/2}].
    - "basic" (reverse percentile): [2θ̂ − q_{1−α/2}, 2θ̂ − q_{α/2}]; also removes the bootstrap's bias
      estimate m − θ̂, so it aims at the bias-corrected quantity.
    - "bc" (Efron's bias-corrected percentile): percentile at Φ(2z₀ ± z_{1−α/2}), z₀ = Φ⁻¹(share of
      resamples below θ̂).
    - "normal": θ̂ ± z_{1−α/2} · s.
    - "centred": the percentile interval moved by the bootstrap bias estimate, [q_{α/2} − (m − θ̂),
      q_{1−α/2} − (m − θ̂)] — the bootstrap spread around the estimate itself. It aims at E[θ̂], which is
      what a single run can be asked to cover (see the module docstring for the measured coverages).
    """
    level = _check_level(level)
    theta = float(estimate)
    if not math.isfinite(theta):
        raise ValueError(f"the estimate must be finite, got {estimate}")
    r = _finite_1d("bootstrap resamples", resampled, 2)
    alpha = 1.0 - level
    if method == "percentile":
        low, high = np.quantile(r, [alpha / 2, 1 - alpha / 2])
    elif method == "basic":
        q_lo, q_hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
        low, high = 2 * theta - q_hi, 2 * theta - q_lo
    elif method == "bc":
        below = np.clip(np.mean(r < theta) + 0.5 * np.mean(r == theta), 0.5 / len(r), 1 - 0.5 / len(r))
        z0 = scipy.stats.norm.ppf(below)
        z = scipy.stats.norm.ppf(1 - alpha / 2)
        low, high = np.quantile(r, scipy.stats.norm.cdf([2 * z0 - z, 2 * z0 + z]))
    elif method == "normal":
        half = scipy.stats.norm.ppf(1 - alpha / 2) * r.std(ddof=1)
        low, high = theta - half, theta + half
    elif method == "centred":
        shift = r.mean() - theta
        q_lo, q_hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
        low, high = q_lo - shift, q_hi - shift
    else:
        raise ValueError(f"unknown bootstrap interval type {method!r}; choose one of {BOOTSTRAP_METHODS}")
    text = f"bootstrap ({method}), {len(r)} resamples"
    return Interval(theta, float(low), float(high), level, text, len(r))


def _resample_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """How often each of n rows appears in one resample with replacement: bincount of ``rng.integers(0, n, n)``."""
    return np.bincount(rng.integers(0, n, n), minlength=n)


def _covariance_factor(sigma: np.ndarray) -> np.ndarray:
    """A with A Aᵀ = Σ: Cholesky, or the symmetric PSD square root when Σ is singular (as in ``metrics``)."""
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        return metrics._psd_sqrt(sigma)


class _WeightedFrechet:
    """FD of row-weighted generated features against fixed reference statistics (μ_r, Σ_r).

    A weight vector c of non-negative integer counts (a bootstrap resample's multiplicities, or a 0/1 subset
    mask) stands for the feature matrix with row i repeated cᵢ times, n = Σ cᵢ rows; its mean and covariance
    (ddof = 1) are μ = x̄ + Σ cᵢ x̃ᵢ / n and Σ_c = (Σ cᵢ x̃ᵢ x̃ᵢᵀ − n δδᵀ)/(n − 1) with x̃ = x − x̄ the rows
    centred once, δ = μ − x̄. With Σ_r = A Aᵀ factored once,
    tr (Σ_c Σ_r)^{1/2} = Σ √λ(Aᵀ Σ_c A) and Aᵀ Σ_c A is built from the precomputed Y = X̃ A over the rows
    with cᵢ > 0 (≈ 63% of them for a bootstrap resample): one (n' × D)ᵀ(n' × D) product and one
    ``eigvalsh`` per FD, cheaper than ``np.cov`` plus ``frechet_distance`` on the resampled matrix.
    """

    def __init__(self, gen_features: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray):
        x = metrics._as_2d("generated features", gen_features, min_rows=2)
        d = x.shape[1]
        mu_r = np.asarray(ref_mu, dtype=np.float64)
        s_r = np.asarray(ref_sigma, dtype=np.float64)
        if mu_r.shape != (d,) or s_r.shape != (d, d):
            raise ValueError(
                f"reference statistics must be mu (D,) and sigma (D, D) with the features' D = {d}, got mu "
                f"{mu_r.shape} and sigma {s_r.shape}"
            )
        if not (np.isfinite(mu_r).all() and np.isfinite(s_r).all()):
            raise ValueError("reference statistics contain NaN or infinite values")
        s_r = (s_r + s_r.T) / 2
        self.n_rows = x.shape[0]
        self.mean = x.mean(axis=0)
        self.centred = x - self.mean
        self.sq_norms = np.einsum("ij,ij->i", self.centred, self.centred)
        self.y = self.centred @ _covariance_factor(s_r)
        self.mean_gap = self.mean - mu_r
        self.trace_ref = float(np.trace(s_r))

    def fd(self, counts: np.ndarray) -> float:
        """FD of the rows repeated ``counts`` times (at least 2 rows in all)."""
        rows = np.flatnonzero(counts)
        w = counts[rows].astype(np.float64)
        n = w.sum()
        if n < 2:
            raise ValueError("the Fréchet distance needs at least 2 generated rows")
        delta = w @ self.centred[rows] / n
        y = self.y[rows]
        y_bar = w @ y / n
        yw = y * np.sqrt(w)[:, None]
        m = (yw.T @ yw - n * np.outer(y_bar, y_bar)) / (n - 1)
        eig = np.linalg.eigvalsh((m + m.T) / 2)
        trace_gen = (w @ self.sq_norms[rows] - n * (delta @ delta)) / (n - 1)
        gap = self.mean_gap + delta
        fd = gap @ gap + trace_gen + self.trace_ref - 2.0 * np.sqrt(np.clip(eig, 0.0, None)).sum()
        return float(max(fd, 0.0))


def _check_resamples(resamples: int) -> int:
    if int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples}")
    return int(resamples)


def bootstrap_fd(
    gen_features: np.ndarray,
    ref_mu: np.ndarray,
    ref_sigma: np.ndarray,
    resamples: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """FD of each of ``resamples`` bootstrap resamples of the generated feature rows; reference fixed.

    Resample k draws N row indices with replacement, ``np.random.default_rng(seed).integers(0, N, N)`` (the
    k-th call), and its FD equals ``metrics.frechet_distance(*metrics.feature_statistics(x[idx]), ref_mu,
    ref_sigma)`` up to rounding — computed from the row counts instead (``_WeightedFrechet``), at about the
    cost of one FD per resample.
    """
    resamples = _check_resamples(resamples)
    fd = _WeightedFrechet(gen_features, ref_mu, ref_sigma)
    rng = np.random.default_rng(seed)
    return np.array([fd.fd(_resample_counts(rng, fd.n_rows)) for _ in range(resamples)])


def bootstrap_is(logits: np.ndarray, splits: int = 10, resamples: int = 200, seed: int = 0) -> np.ndarray:
    """IS mean (``metrics.inception_score`` with ``splits``) of each of ``resamples`` bootstrap resamples.

    Resample k is ``logits[idx]`` with ``idx = np.random.default_rng(seed).integers(0, N, N)`` (the k-th
    call); the splits are taken over the resampled rows in that (random) order.
    """
    resamples = _check_resamples(resamples)
    z = metrics._as_2d("logits", logits)
    rng = np.random.default_rng(seed)
    n = z.shape[0]
    return np.array([metrics.inception_score(z[rng.integers(0, n, n)], splits=splits)[0] for _ in range(resamples)])


# -------------------------------------------------------------------------------------------------- FD∞


@dataclass(frozen=True)
class FDInfinity:
    """FD∞ and the fit behind it: FD_N = ``fd_inf`` + ``slope``/N over ``sizes`` (mean FD ``values``)."""

    fd_inf: float
    slope: float
    sizes: tuple[int, ...]
    values: tuple[float, ...]
    repeats: int

    def predict(self, n: float) -> float:
        """The fitted FD at N = ``n`` generated images."""
        return self.fd_inf + self.slope / n


def fd_infinity_sizes(n: int, count: int = 15, smallest: int | None = None) -> tuple[int, ...]:
    """Default subset sizes for ``fd_infinity``: ``count`` sizes evenly spaced in 1/N from ``smallest`` to n.

    ``smallest`` defaults to max(n // 5, 2). Even spacing in 1/N spreads the points evenly along the fit's
    x-axis; the range [n/5, n] keeps the extrapolation to 1/N = 0 short (a quarter of the fitted span) while
    staying at sizes where the 1/N law holds. Rounded sizes that coincide are merged.
    """
    smallest = max(n // 5, 2) if smallest is None else int(smallest)
    if not 2 <= smallest <= n:
        raise ValueError(f"subset sizes must lie between 2 and N = {n}, got smallest = {smallest}")
    inv = np.linspace(1.0 / smallest, 1.0 / n, count)
    return tuple(sorted({round(float(1.0 / v)) for v in inv}))


def fd_infinity(
    gen_features: np.ndarray,
    ref_mu: np.ndarray,
    ref_sigma: np.ndarray,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    repeats: int = 2,
) -> FDInfinity:
    """FD∞ (Chong & Forsyth 2020): FD_N on random subsets, fit FD_N = FD∞ + k/N, extrapolate to 1/N = 0.

    For each size N_i (default ``fd_infinity_sizes(N)``: 15 sizes evenly spaced in 1/N over [N/5, N]),
    ``repeats`` subsets of N_i generated rows are drawn without replacement (``np.random.default_rng(seed)``;
    the reference is fixed) and their FDs averaged; FD∞ is the intercept of the least-squares line through
    (1/N_i, mean FD_i). The full-size subset is the whole set, so it is computed once.
    """
    fd = _WeightedFrechet(gen_features, ref_mu, ref_sigma)
    n = fd.n_rows
    sizes = fd_infinity_sizes(n) if sizes is None else tuple(sorted({int(s) for s in sizes}))
    if len(sizes) < 2:
        raise ValueError(f"FD∞ needs at least 2 distinct subset sizes, got {sizes}")
    if sizes[0] < 2 or sizes[-1] > n:
        raise ValueError(f"subset sizes must lie between 2 and N = {n}, got {sizes}")
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    rng = np.random.default_rng(seed)
    values = []
    for size in sizes:
        draws = 1 if size == n else repeats
        total = 0.0
        for _ in range(draws):
            counts = np.zeros(n, dtype=np.int64)
            counts[rng.choice(n, size, replace=False)] = 1
            total += fd.fd(counts)
        values.append(total / draws)
    slope, intercept = np.polyfit(1.0 / np.asarray(sizes, dtype=np.float64), np.asarray(values), 1)
    return FDInfinity(float(intercept), float(slope), sizes, tuple(float(v) for v in values), int(repeats))

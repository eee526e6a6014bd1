"""Statistics for the report: t and bootstrap intervals (formulas and coverage), the bootstrap FD/IS against
``core.metrics``, and FD∞ (differences between rows and verdicts: tests/test_verdicts.py)."""

import math

import numpy as np
import pytest
import scipy.stats

from core import metrics, stats
from tests.test_bench import load_script


def gaussian_population(d: int, shift: float, scale: float, seed: int):
    """Reference (μ_r, Σ_r) and generated (μ_g, Σ_g) Gaussian statistics: bench/bench_stats.py's population."""
    return load_script("bench_stats").population(d, shift, scale, seed)


def features(n: int, d: int, seed: int, offset: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d) + offset


def reference(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return metrics.feature_statistics(np.random.default_rng(seed).standard_normal((4 * d, d)) * 1.2)


# ------------------------------------------------------------------------------------------- t interval


def test_t_interval_closed_form():
    iv = stats.t_interval([1.0, 2.0, 3.0, 6.0], level=0.95)
    # mean 3, s² = (4 + 1 + 0 + 9) / 3, n = 4, t_{0.975, 3} = 3.182 (tables)
    t975 = scipy.stats.t.ppf(0.975, 3)
    assert t975 == pytest.approx(3.182, abs=5e-4)
    half = t975 * math.sqrt(14 / 3) / 2
    assert iv.estimate == 3.0
    assert (iv.low, iv.high) == pytest.approx((3 - half, 3 + half), rel=1e-12)
    assert (iv.level, iv.n, iv.method) == (0.95, 4, "t over 4 replicates")
    assert iv.half_width == pytest.approx(half, rel=1e-12)
    assert iv.excludes(-1.0) and not iv.excludes(3.0)
    # a 90% interval is narrower: t_{0.95, 3} = 2.353
    assert stats.t_interval([1.0, 2.0, 3.0, 6.0], 0.9).half_width == pytest.approx(2.353 * math.sqrt(14 / 3) / 2, 1e-3)


@pytest.mark.parametrize("values", [[1.0], [], [1.0, float("nan")]])
def test_t_interval_rejects_fewer_than_two_or_nonfinite(values):
    with pytest.raises(ValueError):
        stats.t_interval(values)


def test_t_interval_rejects_bad_level():
    with pytest.raises(ValueError, match="level"):
        stats.t_interval([1.0, 2.0], level=95)


def test_t_interval_covers_the_true_mean_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    draws = rng.normal(5.0, 2.0, size=(2000, 3))  # 3 replicates per trial: z instead of t would cover ~88%
    covered = np.mean([stats.t_interval(row).contains(5.0) for row in draws])
    assert 0.935 <= covered <= 0.965


# ---------------------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize(("n", "d"), [(300, 16), (40, 24)])  # N > D, and a singular generated covariance
def test_weighted_frechet_identity_and_counts_match_metrics(n, d):
    x = features(n, d, seed=1)
    mu_r, s_r = reference(d, seed=2)
    wf = stats._WeightedFrechet(x, mu_r, s_r)
    plain = metrics.frechet_distance(*metrics.feature_statistics(x), mu_r, s_r)
    assert wf.fd(np.ones(n, dtype=np.int64)) == pytest.approx(plain, rel=1e-7)
    counts = np.random.default_rng(3).integers(0, 3, n)  # rows repeated 0, 1 or 2 times
    repeated = np.repeat(x, counts, axis=0)
    expected = metrics.frechet_distance(*metrics.feature_statistics(repeated), mu_r, s_r)
    assert wf.fd(counts) == pytest.approx(expected, rel=1e-7)


def test_bootstrap_fd_equals_a_naive_loop_and_is_reproducible():
    x = features(120, 10, seed=4)
    mu_r, s_r = reference(10, seed=5)
    got = stats.bootstrap_fd(x, mu_r, s_r, resamples=6, seed=7)
    rng = np.random.default_rng(7)
    naive = []
    for _ in range(6):
        idx = rng.integers(0, 120, 120)
        naive.append(metrics.frechet_distance(*metrics.feature_statistics(x[idx]), mu_r, s_r))
    np.testing.assert_allclose(got, naive, rtol=1e-10)
    np.testing.assert_array_equal(got, stats.bootstrap_fd(x, mu_r, s_r, resamples=6, seed=7))
    assert not np.array_equal(got, stats.bootstrap_fd(x, mu_r, s_r, resamples=6, seed=8))
    assert len(np.unique(got)) == 6


def test_bootstrap_fd_rejects_mismatched_reference():
    x = features(50, 6, seed=0)
    with pytest.raises(ValueError, match="reference statistics"):
        stats.bootstrap_fd(x, np.zeros(5), np.eye(5), resamples=2)
    with pytest.raises(ValueError, match="resamples"):
        stats.bootstrap_fd(x, np.zeros(6), np.eye(6), resamples=0)


def test_bootstrap_is_equals_a_naive_loop_and_is_reproducible():
    logits = np.random.default_rng(0).normal(0, 3, (200, 7))
    got = stats.bootstrap_is(logits, splits=4, resamples=5, seed=11)
    rng = np.random.default_rng(11)
    naive = [metrics.inception_score(logits[rng.integers(0, 200, 200)], splits=4)[0] for _ in range(5)]
    np.testing.assert_array_equal(got, naive)
    np.testing.assert_array_equal(got, stats.bootstrap_is(logits, splits=4, resamples=5, seed=11))
    assert not np.array_equal(got, stats.bootstrap_is(logits, splits=1, resamples=5, seed=11))
    # the resampled scores scatter around the score of the images themselves
    is_mean = metrics.inception_score(logits, splits=4)[0]
    many = stats.bootstrap_is(logits, splits=4, resamples=100, seed=0)
    assert many.min() < is_mean < many.max()


def test_bootstrap_interval_formulas():
    r = np.arange(101, dtype=np.float64)  # quantiles q_p = 100 p exactly; mean 50
    est = 40.0
    iv = stats.bootstrap_interval(est, r, 0.9, "percentile")
    assert (iv.low, iv.high) == pytest.approx((5.0, 95.0))
    iv = stats.bootstrap_interval(est, r, 0.9, "basic")
    assert (iv.low, iv.high) == pytest.approx((80 - 95.0, 80 - 5.0))
    iv = stats.bootstrap_interval(est, r, 0.9, "centred")  # percentile moved down by the bias 50 - 40
    assert (iv.low, iv.high) == pytest.approx((-5.0, 85.0))
    iv = stats.bootstrap_interval(est, r, 0.9, "normal")
    half = scipy.stats.norm.ppf(0.95) * r.std(ddof=1)
    assert (iv.low, iv.high) == pytest.approx((40 - half, 40 + half))
    iv = stats.bootstrap_interval(50.0, r, 0.9, "bc")  # no bias: z₀ = 0, the percentile interval
    assert (iv.low, iv.high) == pytest.approx((5.0, 95.0))
    iv = stats.bootstrap_interval(est, r, 0.9, "bc")  # z₀ < 0 moves both ends down
    assert iv.high < 95.0 and iv.low < 5.0
    assert iv.estimate == est and iv.n == 101 and iv.method == "bootstrap (bc), 101 resamples"
    assert stats.bootstrap_interval(est, r).method == f"bootstrap ({stats.BOOTSTRAP_METHOD}), 101 resamples"
    with pytest.raises(ValueError, match="unknown bootstrap interval"):
        stats.bootstrap_interval(est, r, 0.9, "bca")


def _fd_coverage(method: str, trials: int, d: int = 16, n: int = 300, resamples: int = 100) -> tuple[float, float]:
    """Share of ``trials`` seeded trials whose bootstrap interval covers E[FD_N] (Monte Carlo)."""
    mu_r, s_r, mu_g, s_g = gaussian_population(d, shift=0.5, scale=1.1, seed=1)
    chol = np.linalg.cholesky(s_g)
    rng = np.random.default_rng(0)

    def fd_of_draw() -> tuple[np.ndarray, float]:
        x = mu_g + rng.standard_normal((n, d)) @ chol.T
        return x, metrics.frechet_distance(*metrics.feature_statistics(x), mu_r, s_r)

    target = np.mean([fd_of_draw()[1] for _ in range(2000)])  # E[FD_N], Monte Carlo s.e. ≈ 0.003
    hits = {m: 0 for m in (method, "percentile")}
    for t in range(trials):
        x, est = fd_of_draw()
        boot = stats.bootstrap_fd(x, mu_r, s_r, resamples=resamples, seed=t)
        for m in hits:
            hits[m] += stats.bootstrap_interval(est, boot, 0.95, m).contains(target)
    return hits[method] / trials, hits["percentile"] / trials


def test_chosen_bootstrap_interval_covers_expected_fd():
    covered, percentile = _fd_coverage(stats.BOOTSTRAP_METHOD, trials=150)
    assert 0.88 <= covered <= 0.99
    assert percentile < 0.8  # the case separates the types: the percentile interval sits too high here


# --------------------------------------------------------------------------------------------------- FD∞


def test_fd_infinity_sizes_are_even_in_inverse_n():
    sizes = stats.fd_infinity_sizes(5000)
    assert len(sizes) == 15 and sizes[0] == 1000 and sizes[-1] == 5000
    np.testing.assert_allclose(np.diff(1.0 / np.array(sizes)), (1 / 5000 - 1 / 1000) / 14, rtol=0.02)
    small = stats.fd_infinity_sizes(20)  # 15 points in 1/N over [4, 20] round to fewer distinct sizes
    assert small[0] == 4 and small[-1] == 20 and len(small) < 15
    assert list(small) == sorted(set(small))  # distinct, increasing
    with pytest.raises(ValueError):
        stats.fd_infinity_sizes(100, smallest=1)


def test_fd_infinity_is_closer_to_the_population_distance():
    d, n = 32, 800
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2.0, d)
    b = a * rng.uniform(0.7, 1.4, d)
    mu_g, mu_r = np.zeros(d), np.full(d, 0.05)
    # commuting (diagonal) covariances: FD = ‖μ_g − μ_r‖² + Σ (√aᵢ − √bᵢ)²
    true_fd = float(np.sum((mu_g - mu_r) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    x = rng.standard_normal((n, d)) * np.sqrt(a)
    fd_n = metrics.frechet_distance(*metrics.feature_statistics(x), mu_r, np.diag(b))
    fit = stats.fd_infinity(x, mu_r, np.diag(b), seed=0, repeats=3)
    assert fd_n - true_fd > 0.3  # FD_N is biased upward by ≈ 0.47 here (over seeds: sd 0.06)
    # over 40 seeds FD∞ − true FD had mean 0.01, sd 0.06, max |·| 0.14
    assert abs(fit.fd_inf - true_fd) < 0.2
    assert abs(fit.fd_inf - true_fd) < 0.5 * abs(fd_n - true_fd)
    assert fit.sizes[-1] == n and fit.values[-1] == pytest.approx(fd_n, rel=1e-9)
    assert fit.slope > 0 and fit.predict(n) == pytest.approx(fd_n, rel=0.05)
    assert stats.fd_infinity(x, mu_r, np.diag(b), seed=0, repeats=3) == fit


def test_fd_infinity_rejects_bad_sizes():
    x = features(50, 4, seed=0)
    with pytest.raises(ValueError, match="2 distinct"):
        stats.fd_infinity(x, np.zeros(4), np.eye(4), sizes=[30, 30])
    with pytest.raises(ValueError, match="between 2 and N"):
        stats.fd_infinity(x, np.zeros(4), np.eye(4), sizes=[10, 60])

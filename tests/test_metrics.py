import numpy as np
import pytest

from core import metrics


def random_cov(d, rng, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    # for commuting covariances: ‖Δμ‖² + Σ (√a − √b)²
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_commuting_full_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a, b = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_sqrtm_and_is_zero_for_identical():
    rng = np.random.default_rng(1)
    s1, s2 = random_cov(64, rng), random_cov(64, rng)
    mu1, mu2 = rng.standard_normal(64), rng.standard_normal(64)
    fast = metrics.frechet_distance(mu1, s1, mu2, s2)
    ref = metrics.frechet_distance_sqrtm(mu1, s1, mu2, s2)
    assert fast == pytest.approx(ref, rel=1e-6)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_near_singular_covariances():
    rng = np.random.default_rng(2)
    s1, s2 = random_cov(32, rng, rank=5), random_cov(32, rng, rank=7)
    fast = metrics.frechet_distance(np.zeros(32), s1, np.ones(32), s2)
    ref = metrics.frechet_distance_sqrtm(np.zeros(32), s1, np.ones(32), s2)
    assert np.isfinite(fast) and fast >= 0
    assert fast == pytest.approx(ref, rel=1e-4)


def test_feature_statistics_and_fd_of_samples():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20000, 3))
    mu, sigma = metrics.feature_statistics(x)
    assert np.allclose(mu, 0, atol=0.03) and np.allclose(sigma, np.eye(3), atol=0.05)
    with pytest.raises(ValueError, match="2-D"):
        metrics.feature_statistics(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        metrics.feature_statistics(np.array([[np.nan, 1.0], [1.0, 2.0]]))


def test_inception_score_closed_forms():
    assert metrics.inception_score(np.zeros((100, 7)), splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)
    onehot = np.full((500, 5), -1e4)
    onehot[np.arange(500), np.arange(500) % 5] = 0.0
    mean, std = metrics.inception_score(onehot, splits=10)
    assert mean == pytest.approx(5.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"samples \(5\).*splits \(10\)"):
        metrics.inception_score(np.zeros((5, 3)), splits=10)


def test_kid_same_vs_shifted_distribution():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
    same, _ = metrics.kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    shifted, _ = metrics.kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200)
    assert abs(same) < 0.02 < shifted
    with pytest.raises(ValueError, match="kid_subset_size"):
        metrics.kernel_inception_distance(a, b, subset_size=1000)


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((300, 8))
    assert metrics.precision_recall(a, a.copy(), k=3) == (1.0, 1.0)
    assert metrics.precision_recall(a, a + 100.0, k=3) == (0.0, 0.0)
    # a generator covering half of the real modes: high precision, recall about one half
    real = np.concatenate([rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) + 50])
    fake = rng.standard_normal((300, 2))
    p, r = metrics.precision_recall(real, fake, k=3)
    assert p > 0.9 and 0.4 < r < 0.6

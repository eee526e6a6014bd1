"""Metrics on features: closed forms, agreement with reference formulations, input checks."""

import numpy as np
import pytest

from core import metrics


def random_cov(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


# ----------------------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    # commuting covariances: ‖Δμ‖² + Σᵢ (√aᵢ − √bᵢ)²
    expected = (1 + 0 + 4) + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)
    assert metrics.frechet_distance_sqrtm(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_commuting_full_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a, b = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # same eigenvectors: Σ₁Σ₂ = Σ₂Σ₁
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_symmetric_and_matches_sqrtm_at_64d():
    rng = np.random.default_rng(1)
    for _ in range(3):
        s1, s2 = random_cov(64, rng), random_cov(64, rng)
        mu1, mu2 = rng.standard_normal(64), rng.standard_normal(64)
        fast = metrics.frechet_distance(mu1, s1, mu2, s2)
        ref = metrics.frechet_distance_sqrtm(mu1, s1, mu2, s2)
        assert fast == pytest.approx(ref, rel=1e-6)
        assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(fast, rel=1e-9)


def test_frechet_distance_zero_for_identical_statistics():
    rng = np.random.default_rng(2)
    mu, s = rng.standard_normal(64), random_cov(64, rng)
    assert metrics.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    mu, s = metrics.feature_statistics(rng.standard_normal((50, 128)))  # singular: 50 samples in 128-d
    assert metrics.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_near_singular_covariances():
    rng = np.random.default_rng(3)
    # rank-deficient features: 20 samples in 32-d, and a constant (dead) feature, as small sample sets give
    f1 = rng.standard_normal((20, 32))
    f2 = rng.standard_normal((24, 32)) * 1.5 + 0.3
    f1[:, 0] = 0.7
    (mu1, s1), (mu2, s2) = metrics.feature_statistics(f1), metrics.feature_statistics(f2)
    assert np.linalg.matrix_rank(s1) < 32 and np.linalg.matrix_rank(s2) < 32
    for a, b in (((mu1, s1), (mu2, s2)), ((mu2, s2), (mu1, s1))):  # singular Σ₁ (eigh fallback) and Σ₂
        fast = metrics.frechet_distance(*a, *b)
        ref = metrics.frechet_distance_sqrtm(*a, *b)
        assert np.isfinite(fast) and fast >= 0
        assert fast == pytest.approx(ref, rel=1e-4)
    # exactly rank-deficient covariances built directly
    s1, s2 = random_cov(32, rng, rank=5), random_cov(32, rng, rank=7)
    fast = metrics.frechet_distance(np.zeros(32), s1, np.ones(32), s2)
    assert np.isfinite(fast) and fast >= 0
    assert fast == pytest.approx(metrics.frechet_distance_sqrtm(np.zeros(32), s1, np.ones(32), s2), rel=1e-4)


def test_frechet_distance_validates_shapes_and_values():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="mismatched statistics"):
        metrics.frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="mismatched statistics"):
        metrics.frechet_distance(mu, np.eye(2), mu, s)
    with pytest.raises(ValueError, match="1-D"):
        metrics.frechet_distance(s, s, mu, s)
    with pytest.raises(ValueError, match=r"sigma2.*NaN"):
        metrics.frechet_distance(mu, s, mu, np.full((3, 3), np.nan))


def test_feature_statistics():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20000, 3)).astype(np.float32)
    mu, sigma = metrics.feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (3,) and sigma.shape == (3, 3)
    assert np.allclose(mu, 0, atol=0.03) and np.allclose(sigma, np.eye(3), atol=0.05)
    small = rng.standard_normal((5, 2))
    assert np.allclose(metrics.feature_statistics(small)[1], np.cov(small.T, ddof=1))
    assert metrics.feature_statistics(small[:, :1])[1].shape == (1, 1)
    with pytest.raises(ValueError, match="2-D"):
        metrics.feature_statistics(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        metrics.feature_statistics(np.array([[np.nan, 1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.feature_statistics(np.zeros((1, 4)))


# -------------------------------------------------------------------------------------------- Inception Score


def test_inception_score_closed_forms():
    assert metrics.inception_score(np.zeros((100, 7)), splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)
    n, c = 500, 5
    peaked = np.full((n, c), -1e4)  # softmax ≈ one-hot; balanced classes → p(y) uniform → IS = C
    peaked[np.arange(n), np.arange(n) % c] = 0.0
    mean, std = metrics.inception_score(peaked, splits=10)
    assert mean == pytest.approx(c, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    assert metrics.inception_score(peaked, splits=10, shuffle_seed=2020)[0] > 0.9 * c
    # a single class for all samples: p(y|x) = p(y) → IS = 1, however peaked
    one_class = np.zeros((40, 3))
    one_class[:, 1] = 50.0
    assert metrics.inception_score(one_class, splits=4)[0] == pytest.approx(1.0, abs=1e-9)


def test_inception_score_matches_a_direct_computation_and_is_shift_invariant():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((23, 6)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for i in range(3):
        part = p[i * 23 // 3 : (i + 1) * 23 // 3]
        py = part.mean(0)
        scores.append(np.exp(np.mean([np.sum(q * np.log(q / py)) for q in part])))
    mean, std = metrics.inception_score(logits, splits=3)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.std(scores), rel=1e-9)
    assert metrics.inception_score(logits + 1000.0, splits=3)[0] == pytest.approx(mean, rel=1e-12)


def test_inception_score_needs_enough_samples():
    with pytest.raises(ValueError, match=r"samples \(5\).*splits \(10\)"):
        metrics.inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(ValueError, match="2-D"):
        metrics.inception_score(np.zeros(30), splits=3)


# ------------------------------------------------------------------------------------------------------ KID


def test_kid_same_vs_shifted_distribution():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
    same, same_std = metrics.kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    shifted, _ = metrics.kernel_inception_distance(a, b + 0.5, num_subsets=20, subset_size=200)
    assert shifted > 0.05
    assert abs(same) < 0.02 * shifted and same_std >= 0
    # seeded: the same seed gives the same numbers
    assert metrics.kernel_inception_distance(a, b, num_subsets=3, subset_size=50, seed=7) == (
        metrics.kernel_inception_distance(a, b, num_subsets=3, subset_size=50, seed=7)
    )


def test_kid_is_the_unbiased_mmd2_of_the_cubic_kernel():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 4)) + 0.3

    def k(a, b):
        return (a @ b / 4 + 1) ** 3

    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    # a subset of all samples is a permutation, and the estimate does not depend on the order
    mean, std = metrics.kernel_inception_distance(x, y, num_subsets=2, subset_size=m)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std == pytest.approx(0.0, abs=1e-12)


def test_kid_errors():
    a = np.zeros((100, 4))
    with pytest.raises(ValueError, match=r"subset size 1000.*real 100.*generated 50.*kid_subset_size"):
        metrics.kernel_inception_distance(a, a[:50], subset_size=1000)
    with pytest.raises(ValueError, match="dimensions differ"):
        metrics.kernel_inception_distance(a, np.zeros((100, 5)), subset_size=10)
    with pytest.raises(ValueError, match="NaN"):
        metrics.kernel_inception_distance(a, np.full((100, 4), np.inf), subset_size=10)


# ------------------------------------------------------------------------------------------ precision/recall


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((300, 8))
    assert metrics.precision_recall(a, a.copy(), k=3) == (1.0, 1.0)
    assert metrics.precision_recall(a, a + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_mode_dropping_and_batching():
    rng = np.random.default_rng(9)
    # a generator covering one of two real modes: precision high, recall about one half
    real = np.concatenate([rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) + 50])
    fake = rng.standard_normal((300, 2))
    p, r = metrics.precision_recall(real, fake, k=3)
    assert p > 0.9 and 0.45 < r < 0.55
    assert metrics.precision_recall(real, fake, k=3, batch_size=7) == (p, r)


def test_precision_recall_knn_radius_by_hand():
    # real points on a line at 0, 1, 2, 3, 10: with k = 1 the radii are 1, 1, 1, 1, 7 (nearest other point)
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = np.array([[-0.9], [-1.1], [5.5], [16.9], [17.5]])
    # -0.9 is within 1 of 0; -1.1 is not; 5.5 and 16.9 are within 7 of 10; 17.5 is not
    p, _ = metrics.precision_recall(real, fake, k=1)
    assert p == pytest.approx(3 / 5)
    # k = 2: radii 2, 1, 1, 2, 8 → -1.1 (within 2 of 0) and 17.5 (within 8 of 10) are inside as well
    assert metrics.precision_recall(real, fake, k=2)[0] == pytest.approx(1.0)


def test_precision_recall_errors():
    a = np.zeros((10, 3))
    with pytest.raises(ValueError, match="more than k = 3"):
        metrics.precision_recall(a, a[:3], k=3)
    with pytest.raises(ValueError, match="dimensions differ"):
        metrics.precision_recall(a, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="2-D"):
        metrics.precision_recall(np.zeros((2, 3, 4)), a)


def test_frechet_distance_through_the_images_equals_the_full_factorisation():
    """Fewer images than dimensions (a rehearsal's 4 images at 2048-d): the N×N path (``factor1``) gives the FD of the
    D×D one and of scipy's sqrtm, at a size where each runs in well under a second."""
    rng = np.random.default_rng(3)
    gen, real = rng.normal(size=(5, 96)), rng.normal(0.3, 1.2, size=(40, 96))
    mu1, s1 = metrics.feature_statistics(gen)
    mu2, s2 = metrics.feature_statistics(real)
    a = metrics.covariance_factor(gen)
    assert a.shape == (96, 5) and np.allclose(a @ a.T, s1)
    full = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert metrics.frechet_distance(mu1, s1, mu2, s2, a) == pytest.approx(full, rel=1e-7)
    assert full == pytest.approx(metrics.frechet_distance_sqrtm(mu1, s1, mu2, s2), rel=1e-6)
    wrong = metrics.covariance_factor(gen[:-1])  # a factor of other features: another (wrong) number
    assert metrics.frechet_distance(mu1, s1, mu2, s2, wrong) != pytest.approx(full, rel=1e-3)

"""Differences between report rows and the verdicts on claims: closed forms (paired and Welch t against scipy, the
borrowed-seed-variance interval and TOST against hand-computed values, Holm and Benjamini–Hochberg on a known
p-vector), and the planted mistakes each would catch (a single run's seed variance ignored, the 95% interval used
for equivalence, no correction, verdict words on published numbers closer than the noise floor)."""

import json
import math

import numpy as np
import pytest
import scipy.stats

from core import stats, verdicts
from core.verdicts import Difference, RowValues

# ----------------------------------------------------------------------------------------- differences


def test_paired_difference_matches_scipy_interval_and_p_value():
    a, b = RowValues({2: 5.0, 0: 3.0, 1: 4.5}), RowValues([1.0, 2.0, 2.5])
    d = verdicts.difference(a, b)
    ref = scipy.stats.ttest_rel([3.0, 4.5, 5.0], [1.0, 2.0, 2.5])
    iv = d.interval(0.95)
    expected = ref.confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((expected.low, expected.high), rel=1e-10)
    assert d.estimate == pytest.approx(7 / 3) and d.method == "paired t over 3 replicates" and d.seed_variance
    assert verdicts.claim_p_value(d, "greater") == pytest.approx(ref.pvalue, rel=1e-10)


def test_paired_difference_cancels_a_shared_seed_effect_that_welch_cannot():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 10, 4)  # shared by both rows (same seeds): cancels in the paired difference
    a = RowValues(list(seed_effect + 2.0 + rng.normal(0, 0.01, 4)))
    iv = verdicts.difference(a, RowValues(list(seed_effect))).interval()
    assert iv.contains(2.0) and iv.high - iv.low < 0.1 and iv.excludes(0.0)
    welch = verdicts.difference(a, RowValues(dict(zip(range(1, 5), seed_effect, strict=True))))
    assert welch.method.startswith("Welch") and welch.interval().contains(0.0)


def test_welch_difference_uses_all_replicates_and_matches_scipy():
    a, b = [1.0, 2.0, 4.0, 3.0], [0.0, 2.5, 1.0, 1.0, 7.0]
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    expected = ref.confidence_interval(0.9)
    for rb in (RowValues(b), RowValues(dict(zip(range(5, 10), b, strict=True)))):
        d = verdicts.difference(RowValues(a), rb)
        iv = d.interval(0.9)
        assert (iv.low, iv.high) == pytest.approx((expected.low, expected.high), rel=1e-10)
        assert d.method == "Welch t over 4 vs 5 replicates" and d.n == 9
        assert verdicts.claim_p_value(d, "less") == pytest.approx(ref.pvalue, rel=1e-10)


def test_a_single_run_against_replicates_borrows_their_seed_variance():
    # b = 8, 9, 10: mean 9, s = 1; a single run a = 12. Δ̂ = 3, se = s·√(1 + 1/3), t_{0.975, 2} = 4.302653 (tables)
    d = verdicts.difference(RowValues([12.0], resamples=np.zeros(10)), RowValues([8.0, 9.0, 10.0]))
    iv = d.interval(0.95)
    half = 4.302653 * math.sqrt(4 / 3)
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((3.0, 3.0 - half, 3.0 + half), abs=1e-5)
    assert d.seed_variance and d.df == 2 and "borrowed" in d.method and "of b" in d.method
    # mirrored: the replicated row on side a
    m = verdicts.difference(RowValues([8.0, 9.0, 10.0]), RowValues([12.0]))
    assert (m.estimate, m.se, m.df) == pytest.approx((-3.0, d.se, 2.0)) and "of a" in m.method
    # the planted bias: replicate 0 against the single run by the bootstrap (seed spread ignored) would be far
    # narrower; the borrowed interval is as wide as the seed spread says
    assert iv.half_width > 4.9


def test_two_single_runs_use_the_bootstrap_of_the_difference_and_are_tentative():
    rng = np.random.default_rng(0)
    ra, rb = rng.normal(10.4, 0.3, 200), rng.normal(8.2, 0.3, 200)
    d = verdicts.difference(RowValues([10.0], resamples=ra), RowValues([8.0], resamples=rb))
    iv, expected = d.interval(), stats.bootstrap_interval(2.0, ra - rb, 0.95, "centred")
    assert (iv.estimate, iv.low, iv.high) == (2.0, expected.low, expected.high) and not d.seed_variance
    assert d.method == "bootstrap (centred) of the difference, one run each, 200 resamples"
    # p-value: the share of centred resamples at or beyond the estimate, (k + 1)/(B + 1)
    z = (ra - rb) - (ra - rb).mean()
    assert d.p_above(0.0) == pytest.approx((np.sum(z >= 2.0) + 1) / 201)
    with pytest.raises(ValueError, match="missing for b"):
        verdicts.difference(RowValues([10.0], resamples=ra), RowValues([8.0]))
    with pytest.raises(ValueError, match="different numbers"):
        verdicts.difference(RowValues([10.0], resamples=ra), RowValues([8.0], resamples=rb[:100]))
    with pytest.raises(ValueError, match="replicate 0"):
        verdicts.difference(RowValues([10.0], resamples=ra), RowValues({3: 8.0}, resamples=rb))


def test_borrowed_interval_covers_the_seed_averaged_difference():
    """A setting's effect 1.0, seed sd 2 on both rows, sampling noise in the values: one run of a against three of
    b. The borrowed interval covers the true effect at ~95%; replicate 0's sampling-only interval would not."""
    rng = np.random.default_rng(1)
    covered = 0
    trials = 800
    for _ in range(trials):
        a = 1.0 + rng.normal(0, 2.0)
        b = rng.normal(0, 2.0, 3)
        covered += verdicts.difference(RowValues([a]), RowValues(list(b))).interval().contains(1.0)
    assert 0.925 <= covered / trials <= 0.975  # ±3.5 Monte Carlo s.e.


# ------------------------------------------------------------------------------------- tests and verdicts


def constructed(estimate: float, se: float, df: float) -> Difference:
    return Difference(estimate, "constructed", 3, True, se, df)


def test_tost_is_the_90_percent_interval_test():
    # Δ̂ 0.5, se 0.4, 10 df, margin 1.3: 90% interval 0.5 ± 1.812·0.4 = [−0.225, 1.225] lies inside ±1.3, the 95%
    # interval 0.5 ± 2.228·0.4 = [−0.391, 1.391] does not: TOST at 5% holds (the 95% convention would not).
    d = constructed(0.5, 0.4, 10)
    p = verdicts.claim_p_value(d, "equal", 1.3)
    assert p == pytest.approx(scipy.stats.t.cdf(-2.0, 10), rel=1e-12)  # the nearer bound: (0.5 − 1.3)/0.4 = −2
    assert 0.025 < p < 0.05  # t_{0.95,10} = 1.812 < 2 < t_{0.975,10} = 2.228
    assert verdicts.decide(d, "equal", 1.3, p, 1) == "holds"
    assert d.interval(0.9).high < 1.3 < d.interval(0.95).high
    # a margin of 1.1: the 90% interval reaches past it, not resolved
    assert verdicts.decide(d, "equal", 1.1, verdicts.claim_p_value(d, "equal", 1.1), 1) == "not resolved"
    # clearly different: 95% interval far outside the margin
    far = constructed(5.0, 0.4, 10)
    assert verdicts.decide(far, "equal", 1.3, verdicts.claim_p_value(far, "equal", 1.3), 1) == "reversed"


def test_holm_and_benjamini_hochberg_on_a_known_p_vector():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    assert verdicts.adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: m/j·p = 0.02, 0.02, 0.04, 0.04 (sorted), running min from the top
    assert verdicts.adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert verdicts.adjust(p, "none") == p and verdicts.adjust([], "holm") == []
    assert verdicts.adjust([0.5, 0.9], "holm") == [1.0, 1.0]
    with pytest.raises(ValueError, match="multiplicity"):
        verdicts.adjust(p, "bonferroni")
    with pytest.raises(ValueError, match="p-values"):
        verdicts.adjust([1.5], "holm")


def test_benjamini_hochberg_takes_the_running_minimum_from_the_top():
    # m = 4, unsorted on purpose. Sorted: 0.01, 0.03, 0.04, 0.05; m/j·p = 0.04, 0.06, 0.0533…, 0.05. The step-up
    # running minimum from the largest p down gives 0.05 for ranks 2 and 3 (the raw ratios 0.06 and 0.0533 exceed
    # the 0.05 of rank 4), so the adjusted values keep the order of the raw ones.
    p = [0.04, 0.01, 0.05, 0.03]
    assert verdicts.adjust(p, "bh") == pytest.approx([0.05, 0.04, 0.05, 0.05], abs=1e-15)
    # a rank whose own ratio is below those above it keeps its ratio: sorted 0.001, 0.02, 0.021 → 0.003, 0.03, 0.021
    # → running minimum 0.003, 0.021, 0.021
    assert verdicts.adjust([0.021, 0.001, 0.02], "bh") == pytest.approx([0.021, 0.003, 0.021], abs=1e-15)


def test_the_correction_can_unresolve_a_claim():
    d = constructed(-1.0, 0.35, 4)  # two-sided p = 2·t.cdf(−2.857, 4) ≈ 0.046
    p = verdicts.claim_p_value(d, "less")
    assert p == pytest.approx(2 * scipy.stats.t.cdf(-1.0 / 0.35, 4), rel=1e-12) and 0.04 < p < 0.05
    assert verdicts.decide(d, "less", None, p, 1) == "holds"
    assert verdicts.decide(d, "greater", None, p, 1) == "reversed"
    adjusted = verdicts.adjust([p, 0.001, 0.9], "holm")[0]  # rank 2 of 3: ×2
    assert adjusted == pytest.approx(2 * p) and verdicts.decide(d, "less", None, adjusted, 3) == "not resolved"


def test_claims_are_checked():
    d = constructed(0.0, 1.0, 3)
    with pytest.raises(ValueError, match="margin"):
        verdicts.claim_p_value(d, "equal")
    with pytest.raises(ValueError, match="margin"):
        verdicts.claim_p_value(d, "equal", 0.0)
    with pytest.raises(ValueError, match="margin applies"):
        verdicts.claim_p_value(d, "less", 0.5)
    with pytest.raises(ValueError, match="expect"):
        verdicts.claim_p_value(d, "lower")


# ---------------------------------------------------------------------------------------- published numbers


def test_noise_floor_closed_form():
    # 1.959964 · √2 · 0.1 · (10 + 12)/2 = 3.0490
    assert verdicts.noise_floor(0.1, 10.0, 12.0) == pytest.approx(1.959964 * math.sqrt(2) * 1.1, rel=1e-6)
    assert verdicts.noise_floor(None, 10.0, 12.0) is None


@pytest.mark.parametrize(
    ("a", "b", "expect", "margin", "floor", "result"),
    [
        (168.2, 167.7, "less", None, 2.0, "too close to call"),  # the seed's 0.3% gap: no direction
        (168.2, 167.7, "less", None, None, "no verdict (no spread)"),
        (1.0, 5.0, "less", None, 2.0, "holds"),
        (5.0, 1.0, "less", None, 2.0, "reversed"),
        (5.0, 1.0, "greater", None, 2.0, "holds"),
        (2.0, 2.4, "equal", 1.0, 0.5, "holds"),  # |Δ| 0.4 < 1 − 0.5
        (2.0, 2.8, "equal", 1.0, 0.5, "too close to call"),
        (2.0, 4.0, "equal", 1.0, 0.5, "reversed"),  # |Δ| 2 > 1 + 0.5
    ],
)
def test_published_direction_against_the_noise_floor(a, b, expect, margin, floor, result):
    assert verdicts.published_direction(a, b, expect, margin, floor) == result


def test_the_quoted_coverage_matches_the_bench_results():
    # the report's "covers 69–84% of the time" comes from SEED_EFFECT_COVERAGE: it must be what the bench measured
    # (the lowest and highest coverage over its settings with a seed effect, τ > 0)
    from tests.conftest import ROOT

    recorded = json.loads((ROOT / verdicts.COVERAGE_SOURCE).read_text())["verdict_coverage"]
    seeded = [c["coverage"] for c in recorded if c["tau"] > 0]
    assert seeded, "the bench recorded no setting with a training-seed effect"
    for kind, (low, high) in verdicts.SEED_EFFECT_COVERAGE.items():
        measured = [c[kind] for c in seeded]
        assert (low, high) == (min(measured), max(measured)), kind
    assert verdicts.coverage_range("diff_boot") == "69–84%" and verdicts.coverage_range("fd_boot") == "76–87%"

"""Benchmark and simulation for ``core.stats`` and ``core.verdicts``: which bootstrap interval covers E[FD_N], its
cost, and the coverage of every interval the report's rows and Findings use when training seeds matter.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/bench_stats.py [--out bench/results-stats-cpu.json]
        [--trials 200] [--resamples 200] [--mc 2000] [--skip-timing] [--skip-coverage] [--large]
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/bench_stats.py --verdicts \
        [--out bench/results-verdicts-cpu.json] [--trials 300] [--resamples 100] [--mc 2000]

Verdicts (``--verdicts``): two settings a and b, each a Gaussian "generated" population at a different mean shift
from the reference (D = 16); each trained model (seed) moves the generated mean by τ·v, v ~ N(0, I/D) drawn per
model, so FD varies between seeds as well as between draws of N images. The targets are seed-averaged: E[FD_N]
of a setting and Δ = E_a − E_b, each from ``--mc`` (model, draw) pairs. Per trial: 3 models of a and 3 of b (one
draw each), and the coverage at 95% of the per-row t interval (3 runs), the paired t (3 vs 3, same indices),
Welch (3 vs 2), the borrowed-seed-sd t (1 vs 3), the single run's FD bootstrap (centred) of E_a, and the
bootstrap of the difference of two single runs (paired resample indices, as ``BOOTSTRAP_SEED`` makes them) of Δ;
at τ = 0 (no seed effect) and τ > 0, at the demo's N (150: Demo B, 300: Demo A).

Coverage: Gaussian "generated" features N(μ_g, Σ_g) against fixed reference statistics (μ_r, Σ_r) (the
population values, never resampled). For each configuration (D, N, mean shift, covariance scale) E[FD_N] is
estimated from ``--mc`` independent draws of N generated rows; then in each of ``--trials`` seeded trials
one draw of N rows gives FD_N, ``core.stats.bootstrap_fd`` gives ``--resamples`` bootstrap FDs, and each
interval type of ``core.stats.bootstrap_interval`` is checked for covering E[FD_N] (95% level).

Timing: seconds per bootstrap resample at D=64/N=300 and D=2048/N=5000, beside one plain FD (``np.cov`` +
``metrics.frechet_distance``) on the same features.

Prints tables and writes JSON with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import metrics, stats, verdicts

# (D, N, mean shift ‖μ_g − μ_r‖, covariance scale Σ_g = scale · Σ_r rotated): from "same distribution"
# (FD_N is all bias) to a shift that dominates the bias
CONFIGS = [
    (16, 300, 0.0, 1.0),
    (16, 300, 0.5, 1.1),
    (16, 300, 2.0, 1.1),
    (16, 1000, 0.5, 1.1),
    (16, 1000, 2.0, 1.1),
    (64, 300, 0.0, 1.0),
    (64, 300, 0.5, 1.1),
    (64, 300, 2.0, 1.1),
    (64, 1000, 0.5, 1.1),
    (64, 1000, 2.0, 1.1),
]
# D/N ≈ 0.4 as for Inception features (D = 2048) at N = 5000: slower, run with --large (fewer trials)
CONFIGS_LARGE = [(256, 600, 0.5, 1.1)]


def population(d: int, shift: float, scale: float, seed: int):
    """Reference (μ_r, Σ_r) and generated (μ_g, Σ_g): power-law spectrum with trace D, a mean shift along a
    random direction, and a scaled, slightly rotated generated covariance (scale 1.0: the same distribution)."""
    rng = np.random.default_rng(seed)
    lam = 1.0 / np.arange(1, d + 1)
    lam *= d / lam.sum()
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    sigma_r = (q * lam) @ q.T
    mu_r = rng.standard_normal(d)
    u = rng.standard_normal(d)
    mu_g = mu_r + shift * u / np.linalg.norm(u)
    if scale == 1.0:
        sigma_g = sigma_r
    else:
        rot, _ = np.linalg.qr(np.eye(d) + 0.4 / np.sqrt(d) * rng.standard_normal((d, d)))
        sigma_g = scale * rot @ sigma_r @ rot.T
    return mu_r, sigma_r, mu_g, (sigma_g + sigma_g.T) / 2


def coverage(args: argparse.Namespace) -> list[dict]:
    rows = []
    z = stats.BOOTSTRAP_METHODS
    print(
        f"{'D':>4} {'N':>5} {'shift':>5} {'scale':>5} {'FD_pop':>8} {'E[FD_N]':>8} {'bias':>7} {'sd':>7} "
        + " ".join(f"{m:>10}" for m in z)
    )
    configs = CONFIGS_LARGE if args.large else CONFIGS
    for ci, (d, n, shift, scale) in enumerate(configs, start=len(CONFIGS) if args.large else 0):
        t0 = time.perf_counter()
        mu_r, s_r, mu_g, s_g = population(d, shift, scale, seed=ci)
        chol = np.linalg.cholesky(s_g)
        fd_pop = metrics.frechet_distance(mu_g, s_g, mu_r, s_r)
        rng = np.random.default_rng(1000 + ci)

        def draw(rng=rng, chol=chol, mu_g=mu_g, n=n, d=d):
            return mu_g + rng.standard_normal((n, d)) @ chol.T

        mc = np.array(
            [metrics.frechet_distance(*metrics.feature_statistics(draw()), mu_r, s_r) for _ in range(args.mc)]
        )
        target = float(mc.mean())
        hits = {m: 0 for m in z}
        above = {m: 0 for m in z}  # interval entirely above the target
        widths = {m: 0.0 for m in z}
        boot_bias = 0.0
        for t in range(args.trials):
            x = draw()
            est = metrics.frechet_distance(*metrics.feature_statistics(x), mu_r, s_r)
            boot = stats.bootstrap_fd(x, mu_r, s_r, args.resamples, seed=t)
            boot_bias += (boot.mean() - est) / args.trials
            for m in z:
                iv = stats.bootstrap_interval(est, boot, 0.95, m)
                hits[m] += iv.contains(target)
                above[m] += iv.low > target
                widths[m] += (iv.high - iv.low) / args.trials
        cov = {m: hits[m] / args.trials for m in z}
        row = {
            "D": d,
            "N": n,
            "shift": shift,
            "scale": scale,
            "fd_population": fd_pop,
            "e_fd_n": target,
            "e_fd_n_mc_se": float(mc.std(ddof=1) / np.sqrt(args.mc)),
            "bias": target - fd_pop,
            "sd_fd_n": float(mc.std(ddof=1)),
            "bootstrap_bias": boot_bias,
            "coverage": cov,
            "miss_above": {m: above[m] / args.trials for m in z},
            "mean_width": widths,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(
            f"{d:>4} {n:>5} {shift:>5} {scale:>5} {fd_pop:>8.3f} {target:>8.3f} {target - fd_pop:>7.3f} "
            f"{row['sd_fd_n']:>7.3f} " + " ".join(f"{cov[m]:>10.3f}" for m in z)
        )
    print("mean coverage:     " + " ".join(f"{m}={np.mean([r['coverage'][m] for r in rows]):.3f}" for m in z))
    print(
        "mean |cov - 0.95|: " + " ".join(f"{m}={np.mean([abs(r['coverage'][m] - 0.95) for r in rows]):.3f}" for m in z)
    )
    print("worst coverage:    " + " ".join(f"{m}={min(r['coverage'][m] for r in rows):.3f}" for m in z))
    return rows


# (N, τ): the demos' sample counts, without and with a seed effect
VERDICT_CONFIGS = [(150, 0.0), (150, 0.6), (300, 0.0), (300, 0.6)]


def verdict_coverage(args: argparse.Namespace) -> list[dict]:
    """Coverage of the report's intervals under training-seed variance (module docstring)."""
    d = 16
    mu_r, s_r, mu_a, s_g = population(d, 0.5, 1.1, seed=1)
    u = (mu_a - mu_r) / np.linalg.norm(mu_a - mu_r)
    mu_b = mu_r + 1.0 * u  # setting b: twice a's shift
    chol = np.linalg.cholesky(s_g)
    ones = {}
    rows = []
    print(" N     tau   E_a     E_b   sd_seed  row_t  paired  welch  borrowed  fd_boot  diff_boot  (coverage at 95%)")
    for n, tau in VERDICT_CONFIGS:
        rng = np.random.default_rng(17)
        ones.setdefault(n, np.ones(n, dtype=np.int64))

        def run(mu: np.ndarray, rng: np.random.Generator = rng, n: int = n, tau: float = tau) -> np.ndarray:
            """One trained model's generated features: its seed offset, then one draw of N images."""
            model_mu = mu + tau * rng.standard_normal(d) / np.sqrt(d)
            return model_mu + rng.standard_normal((n, d)) @ chol.T

        def fd(x: np.ndarray, n: int = n) -> float:
            return stats._WeightedFrechet(x, mu_r, s_r).fd(ones[n])

        t0 = time.perf_counter()
        mc_a = np.array([fd(run(mu_a)) for _ in range(args.mc)])
        mc_b = np.array([fd(run(mu_b)) for _ in range(args.mc)])
        e_a, e_b = float(mc_a.mean()), float(mc_b.mean())
        delta = e_a - e_b
        hits = dict.fromkeys(("row_t", "paired", "welch", "borrowed", "fd_boot", "diff_boot"), 0)
        for t in range(args.trials):
            xa = [run(mu_a) for _ in range(3)]
            xb = [run(mu_b) for _ in range(3)]
            fa, fb = [fd(x) for x in xa], [fd(x) for x in xb]
            hits["row_t"] += stats.t_interval(fa).contains(e_a)
            hits["paired"] += (
                verdicts.difference(verdicts.RowValues(fa), verdicts.RowValues(fb)).interval().contains(delta)
            )
            welch = verdicts.difference(verdicts.RowValues(fa), verdicts.RowValues({5: fb[0], 6: fb[1]}))
            hits["welch"] += welch.interval().contains(delta)
            hits["borrowed"] += (
                verdicts.difference(verdicts.RowValues(fa[:1]), verdicts.RowValues(fb)).interval().contains(delta)
            )
            ba = stats.bootstrap_fd(xa[0], mu_r, s_r, args.resamples, seed=t)
            bb = stats.bootstrap_fd(xb[0], mu_r, s_r, args.resamples, seed=t)  # same seed: same indices, as evaluated
            hits["fd_boot"] += stats.bootstrap_interval(fa[0], ba).contains(e_a)
            two = verdicts.difference(verdicts.RowValues(fa[:1], ba), verdicts.RowValues(fb[:1], bb))
            hits["diff_boot"] += two.interval().contains(delta)
        cov = {k: v / args.trials for k, v in hits.items()}
        # the seed sd of FD: total variance of FD_N over (model, draw) minus the within-model (draw) part is not
        # separable from one draw per model; report the total sd and the draw-only sd at τ = 0 for comparison
        row = {
            "N": n,
            "tau": tau,
            "e_fd_a": e_a,
            "e_fd_b": e_b,
            "delta": delta,
            "sd_fd_a_total": float(mc_a.std(ddof=1)),
            "mc_se_delta": float(np.sqrt(mc_a.var(ddof=1) / args.mc + mc_b.var(ddof=1) / args.mc)),
            "coverage": cov,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(
            f"{n:>4} {tau:>5} {e_a:>6.3f} {e_b:>6.3f} {row['sd_fd_a_total']:>7.3f} "
            + " ".join(f"{cov[k]:>7.3f}" for k in hits)
        )
    return rows


def timing() -> list[dict]:
    out = []
    rng = np.random.default_rng(0)
    for d, n, resamples in ((64, 300, 200), (2048, 5000, 3)):
        x = rng.standard_normal((n, d)) @ (rng.standard_normal((d, d)) / np.sqrt(d))
        mu_r = rng.standard_normal(d) * 0.1
        s_r = metrics.feature_statistics(rng.standard_normal((2 * d, d)))[1] + 0.1 * np.eye(d)
        t_fd = min(
            _time(lambda x=x, mu_r=mu_r, s_r=s_r: metrics.frechet_distance(*metrics.feature_statistics(x), mu_r, s_r))
            for _ in range(2)
        )
        t_setup = _time(lambda x=x, mu_r=mu_r, s_r=s_r: stats._WeightedFrechet(x, mu_r, s_r))
        t_boot = _time(lambda x=x, mu_r=mu_r, s_r=s_r, r=resamples: stats.bootstrap_fd(x, mu_r, s_r, r, 0))
        per = (t_boot - t_setup) / resamples
        row = {"D": d, "N": n, "resamples": resamples, "one_fd_s": t_fd, "setup_s": t_setup, "per_resample_s": per}
        out.append(row)
        print(
            f"D={d} N={n}: one FD (np.cov + frechet_distance) {t_fd:.4f} s; bootstrap_fd setup {t_setup:.4f} s, "
            f"{per:.4f} s per resample ({resamples} resamples)"
        )
    return out


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results-stats-cpu.json")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--resamples", type=int, default=200)
    p.add_argument("--mc", type=int, default=2000)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-coverage", action="store_true")
    p.add_argument("--large", action="store_true", help="coverage at D=256, N=600 instead of the small cases")
    p.add_argument("--verdicts", action="store_true", help="only the coverage of the report's intervals under seeds")
    args = p.parse_args()
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__},
        "settings": {
            "large": args.large,
            "trials": args.trials,
            "resamples": args.resamples,
            "mc": args.mc,
            "level": 0.95,
        },
    }
    if args.verdicts:
        result["settings"]["verdict_configs"] = VERDICT_CONFIGS
        result["verdict_coverage"] = verdict_coverage(args)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        return
    if not args.skip_timing:
        result["timing"] = timing()
    if not args.skip_coverage:
        result["coverage"] = coverage(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

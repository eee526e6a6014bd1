"""The report's Findings: each claim's difference, interval, raw and adjusted p-values, verdict, what differs
between its rows, and the reference study's published direction (``core.reporting.results.test_claims``)."""

from __future__ import annotations

from core import verdicts
from core.reporting.markdown import md_table, signed_interval
from core.reporting.results import Finding


def _p(p: float | None) -> str:
    return "–" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def findings_table(findings: list[Finding]) -> str:
    """The claims with Δ, its interval, raw and adjusted p-values, the verdict (tentative where one training run
    stands on each side), what differs between the rows, and the reference study's published direction."""
    if not findings:
        return ""
    correction = findings[0].claim.get("correction", "holm")
    out = []
    for f in findings:
        c = f.claim
        metric = "FD" if c["metric"] == "fid" else "IS"
        relation = {"less": "<", "greater": ">", "equal": "≈"}[c["expect"]]
        expected = f"{c['a']} {relation} {c['b']}" + (f" (|Δ| < {c['margin']:g})" if c["expect"] == "equal" else "")
        diff = "–"
        if f.difference:
            diff = signed_interval(f.difference) + f" ({round(100 * f.difference.level)}%)"
        method = f.difference.method if f.difference else f.note
        verdict = f"{f.verdict}, tentative (one training run each)" if f.tentative else f"**{f.verdict}**"
        differs = "; ".join(c.get("differs", [])) or "–"
        if c.get("confounded"):
            differs = "**confounded**: " + differs
        published = "–"
        if f.published:
            pa, pb = f.published_values
            ref = c.get("reference")  # another study's claim: name its rows and margin
            rows_of = f"{ref['study']}: {ref['a']} vs {ref['b']}, " if ref else ""
            within = f", |Δ| < {ref['margin']:g}" if ref and ref["expect"] == "equal" else ""
            floor = f", noise floor {f.floor:.2f}" if f.floor is not None else ""
            published = f"{f.published} ({rows_of}{pa:g} vs {pb:g}: Δ {pa - pb:+.2f}{within}{floor})"
        out.append(
            [
                c["claim"],
                f"{metric}: {expected}",
                diff,
                method,
                _p(f.p_raw),
                _p(f.p_adjusted),
                verdict,
                differs,
                published,
            ]
        )
    adjusted = {
        "holm": "Holm's step-down correction over the study's claims (family-wise error rate 5%)",
        "bh": "the Benjamini–Hochberg correction over the study's claims (false discovery rate 5%)",
        "none": "no multiplicity correction (each claim at 5% on its own)",
    }[correction]
    return (
        "\n## Findings\n\n"
        + md_table(
            [
                "claim",
                "expected",
                "Δ = a − b [CI]",
                "interval",
                "p",
                f"p ({correction})",
                "verdict",
                "what differs (b → a)",
                "reference study (published)",
            ],
            out,
        )
        + "\nVerdicts rest on p-values adjusted by "
        + adjusted
        + ". A directional claim (<, >) **holds** when its adjusted two-sided p of Δ = 0 is below 0.05 and Δ lies "
        "on the expected side, is **reversed** when it is below 0.05 on the other side, and is **not resolved** "
        "otherwise; its interval is the unadjusted 95% one. An equivalence claim (≈) is the standard two "
        "one-sided tests (TOST) at 5%: it **holds** when the adjusted TOST p is below 0.05 (the 90% interval "
        "shown lies inside ±margin), and is **reversed** when the two-sided p of |Δ| ≤ margin, times the number "
        "of claims, is below 0.05. Rows with the same replicates (replicate k: trained copy k, sample seed seed + "
        "k) are compared pairwise (a paired t over the per-replicate differences), rows with different replicates "
        "by Welch's t over all of them, and a single run against a row with R ≥ 2 replicates by a t interval that "
        "borrows that row's seed standard deviation (R − 1 df; it assumes both settings vary alike between "
        "seeds). Two single runs are compared by the bootstrap of the difference of their generated images "
        "(paired resample indices): it covers the sampling noise only, not the spread between training seeds, so "
        "its verdict is marked tentative. What differs lists every setting in which the two rows' resolved specs "
        "differ; a claim is **confounded** when they differ in more than the settings it names (`varies`). The "
        "reference study's published numbers have no spread: its Δ is read as a direction only beyond a noise "
        "floor, 1.96·√2 times the median relative seed standard deviation our own replicated rows show, times the "
        "published values' mean (the half-width for two single runs); closer than that it is **too close to "
        "call**. A claim that names the same claim in another study (its `reference`, e.g. the full study's) "
        "shows that claim's rows, numbers and margin." + coverage_note(findings) + "\n"
    )


def coverage_note(findings: list[Finding]) -> str:
    """Where a verdict rests on the bootstrap of two single runs: how often that interval covers, as measured
    (``verdicts.SEED_EFFECT_COVERAGE``); nothing otherwise."""
    if not any(f.tentative for f in findings):
        return ""
    return (
        " The difference of two single runs covers the seed-averaged difference "
        f"{verdicts.coverage_range('diff_boot')} of the time at nominal 95% when trained models differ by seed "
        "(bench/RESULTS.md, coverage under training-seed variance); such verdicts are marked tentative."
    )

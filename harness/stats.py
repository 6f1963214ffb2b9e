"""Judging samples: did every backend answer, is the choice uniform, is it a rotation? And
percentiles of timings with their confidence intervals (the benchmarks).

Each judge returns a `Verdict` whose `detail` is written for a person reading a
failed test: it names what was expected and prints the per-backend counts.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap, chisquare

log = logging.getLogger(__name__)

# Chance that `uniformity` fails although the choice really is uniform random.
# Small on purpose: the suites run this check many times per mode, and a
# false alarm costs a person an investigation.
FALSE_ALARM_RATE = 1e-4

# The chi-square approximation is trusted only when every backend is expected
# to get at least this many answers (the usual rule of thumb).
MIN_EXPECTED_PER_BACKEND = 5

# How many names of an order to show in a detail line.
_SHOW = 12


@dataclass
class Verdict:
    """The result of one judgement, with the numbers it was based on."""
    ok: bool
    detail: str
    counts: dict[str, int]
    pvalue: float | None = None


def format_counts(counts: Mapping[str, int]) -> str:
    """`a=3, b=5` in name order, or `none`."""
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


def _with_expected(counts: Mapping[str, int], expected: set[str] | None) -> dict[str, int]:
    """Counts including a zero for every expected backend that never answered."""
    out = {k: int(v) for k, v in counts.items() if v > 0}
    for name in expected or ():
        out.setdefault(name, 0)
    return out


def coverage(backends: Mapping[str, int], expected: set[str]) -> Verdict:
    """Every expected backend answered at least once, and no other backend did."""
    counts = _with_expected(backends, expected)
    answered = {k for k, v in counts.items() if v > 0}
    missing = sorted(expected - answered)
    unexpected = sorted(answered - expected)
    problems = []
    if missing:
        problems.append(f"never answered: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected backends answered: {', '.join(unexpected)}")
    if problems:
        detail = f"{'; '.join(problems)}; counts: {format_counts(counts)}"
    else:
        detail = (f"all {len(expected)} expected backends answered; "
                  f"counts: {format_counts(counts)}")
    return Verdict(ok=not problems, detail=detail, counts=counts)


def min_sample_for(k_backends: int) -> int:
    """The fewest requests for which `uniformity` will give a verdict.

    This is the validity floor of the chi-square approximation, not a sample
    size with good power: to notice a moderate skew use many more (e.g. 100
    per backend).
    """
    return MIN_EXPECTED_PER_BACKEND * max(k_backends, 1)


def uniformity(counts: Mapping[str, int], expected: set[str] | None = None,
               alpha: float = FALSE_ALARM_RATE) -> Verdict:
    """Chi-square goodness-of-fit test of `counts` against equal shares.

    The categories are the expected backends (a backend that never answered
    counts as zero) plus any other backend that answered. The test fails when
    the p-value is below `alpha`: if the backend really is chosen uniformly at
    random, the test wrongly fails with probability alpha, by default 1e-4,
    i.e. 1 run in 10,000 (approximately: chi-square is an approximation that
    needs an expected count of at least MIN_EXPECTED_PER_BACKEND per backend,
    so smaller samples are refused rather than judged).
    """
    full = _with_expected(counts, expected)
    names = sorted(full)
    k, n = len(names), sum(full.values())
    if n == 0:
        return Verdict(False, "no answers to judge", full)
    if k == 1:
        # One category is trivially uniform; scipy would return NaN.
        return Verdict(True, f"only one backend; counts: {format_counts(full)}",
                       full, 1.0)
    if n < min_sample_for(k):
        return Verdict(False, (f"sample too small to judge: {n} answers over {k} "
                               f"backends, need at least {min_sample_for(k)} "
                               f"({MIN_EXPECTED_PER_BACKEND} expected per backend); "
                               f"counts: {format_counts(full)}"), full)
    stat, p = chisquare([full[name] for name in names])  # equal shares by default
    p = float(p)
    ok = p >= alpha
    word = "consistent with" if ok else "NOT consistent with"
    detail = (f"{word} uniform choice (chi-square={float(stat):.2f}, "
              f"dof={k - 1}, p={p:.3g}, alpha={alpha:g}); expected {n / k:.1f} each; "
              f"counts: {format_counts(full)}")
    log.debug("%s", detail)
    return Verdict(ok, detail, full, p)


def round_robin(order: list[str], expected: set[str] | None = None) -> Verdict:
    """Strict rotation: the first k answers name k distinct backends, then repeat.

    `order` must be in request order (see `Sample.order`), so probe with
    concurrency 1. Two full rounds are needed; one round shows no rotation.
    """
    counts = _with_expected(Counter(order), expected)
    k = len(expected) if expected else len(set(order))
    shown = ", ".join(order[:_SHOW]) + (", ..." if len(order) > _SHOW else "")

    def verdict(ok: bool, what: str) -> Verdict:
        return Verdict(ok, f"{what}; order: [{shown}]; counts: {format_counts(counts)}",
                       counts)

    if k == 0 or not order:
        return verdict(False, "no answers to judge")
    # A break is reported before "too short": it is the stronger finding.
    first_round = order[:k]
    for i, name in enumerate(first_round):
        if name in first_round[:i]:
            return verdict(False, f"rotation breaks at position {i}: {name} repeats within the "
                                  f"first round of {k}")
    if expected and set(first_round) != expected:
        # A backend is missing from the first round or a stranger is in it.
        return verdict(False, f"first round {first_round} is not the expected backends "
                              f"{sorted(expected)}")
    for i, name in enumerate(order):
        if name != order[i % k]:
            return verdict(False, f"rotation breaks at position {i}: got {name}, rotation "
                                  f"expected {order[i % k]}")
    if len(order) < 2 * k:
        return verdict(False, f"too few answers: {len(order)}, need two rounds of {k}")
    return verdict(True, f"strict rotation over {k} backends for {len(order)} answers")


# ---- percentiles of timings ---------------------------------------------------------------------
CONFIDENCE = 0.95
RESAMPLES = 2000


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation between order statistics; None for none."""
    return float(np.percentile(values, q)) if len(values) else None


def percentile_ci(values, q: float, confidence: float = CONFIDENCE, seed: int = 0) -> dict | None:
    """The q-th percentile with a percentile-bootstrap interval: {"value", "low", "high"}; None for
    no values. Seeded, so a saved run redraws the same intervals."""
    if not len(values):
        return None
    value = percentile(values, q)
    if len(values) < 2:
        return {"value": value, "low": value, "high": value}
    res = bootstrap((np.asarray(values, dtype=float),), lambda x, axis: np.percentile(x, q, axis=axis),
                    n_resamples=RESAMPLES, confidence_level=confidence, method="percentile", vectorized=True,
                    rng=np.random.default_rng(seed))
    return {"value": value, "low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high)}

"""Confidence intervals for the means in every table: `mean_ci` (mean, half-width of the t interval,
bounds, n) and `t_critical`.

Student's t quantiles are computed here (bisection on the exact finite series of the t distribution's
CDF, a Cornish-Fisher expansion for large df) rather than taken from scipy, which the kit does not
otherwise need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# --- aggregation ---------------------------------------------------------------------------------


def _t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df, by the finite series in cos(theta), theta =
    atan(t / sqrt(df)) (exact for every integer df; odd and even df have different series)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for k in range(1, (df - 3) // 2 + 1):
                term *= (2 * k) / (2 * k + 1) * c2
                total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    total, term = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return math.sin(theta) * total


def _normal_quantile(p: float) -> float:
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
    return (lo + hi) / 2


def t_critical(df: int, confidence: float = 0.95) -> float:
    """Two-sided critical value of Student's t: P(|T| <= t) = confidence (df=1, 0.95 -> 12.706). No scipy:
    bisection on the exact series for df <= 1000; above that the Cornish-Fisher expansion around the
    normal quantile, whose error there is far below the third decimal."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df > 1000:
        z = _normal_quantile(0.5 + confidence / 2)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, 1.0
    while _t_within(hi, df) < confidence:
        lo, hi = hi, hi * 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_within(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample std and the half-width `ci` of the t confidence interval. Undefined values are NaN
    (mean for n = 0; std and ci for n = 1: one value has no spread), which plots skip and tables show
    as "–"."""
    n, nan = len(values), float("nan")
    mean = sum(values) / n if n else nan
    if n < 2:
        return {"mean": mean, "std": nan, "ci": nan, "ci_low": nan, "ci_high": nan, "n": n}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_critical(n - 1, confidence) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci": half, "ci_low": mean - half, "ci_high": mean + half, "n": n}

"""Means with 95 % Student-t intervals, medians and Welch differences, in plain Python (scipy is not installed).

The interval of a mean over n cases is mean +- t(0.975, n-1) * sd / sqrt(n) with the sample SD (ddof 1): it
assumes the cases are independent draws from the population the estimate is about (true of the control arm,
see app.campaign.draw) and is approximate for bounded, skewed values such as Dice with few cases.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 5 % critical values of Student's t for 1..30 degrees of freedom.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
Z_975 = 1.959964


def t_critical(df: float) -> float:
    """t(0.975, df); beyond the table a Cornish-Fisher expansion (error < 0.001 for df > 30).

    A fractional df (Welch) is rounded down: a slightly wider, conservative interval.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    whole = math.floor(df)
    if whole <= len(T_975):
        return T_975[whole - 1]
    z = Z_975
    return z + (z**3 + z) / (4 * whole) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * whole**2)


@dataclass(frozen=True)
class Estimate:
    n: int
    mean: float | None
    low: float | None  # 95 % CI; None with fewer than 2 values
    high: float | None


def mean_ci(values: list[float]) -> Estimate:
    n = len(values)
    if n == 0:
        return Estimate(0, None, None, None)
    mean = statistics.fmean(values)
    if n < 2:
        return Estimate(1, mean, None, None)
    half = t_critical(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Estimate(n, mean, mean - half, mean + half)


def difference_ci(a: list[float], b: list[float]) -> Estimate:
    """mean(a) - mean(b) with a Welch 95 % interval (unequal variances); n is len(a) + len(b)."""
    if len(a) < 2 or len(b) < 2:
        diff = statistics.fmean(a) - statistics.fmean(b) if a and b else None
        return Estimate(len(a) + len(b), diff, None, None)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return Estimate(len(a) + len(b), diff, diff, diff)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_critical(df) * math.sqrt(va + vb)
    return Estimate(len(a) + len(b), diff, diff - half, diff + half)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None

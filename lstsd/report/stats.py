"""The statistics of a report: a summary of one statistic over seeds, and a paired comparison with a baseline.

``paired`` is the paired t-test over the seeds two configurations share (scipy's ``ttest_rel``): the mean of
the per-seed differences, its 95 % confidence interval (mean +- t_{0.975, n-1} s / sqrt(n)) and the two-sided
p-value. Pairing by seed removes what two runs of the same seed share (initialisation, data order), so it
detects smaller differences than comparing two unpaired means.
"""
from __future__ import annotations

import math
import statistics
from typing import Optional


def describe(values: list[float]) -> dict:
    """n, mean, sample std (None below two values), min and max; all None but n for no values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": n, "mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else None,
            "min": min(values), "max": max(values)}


def paired(values: dict, baseline: dict, confidence: float = 0.95) -> Optional[dict]:
    """``values`` and ``baseline`` map a seed to a score; over the seeds both have (at least two): the mean
    difference, its confidence interval and the paired t-test's p-value (None where the differences do not vary
    and average 0). None with fewer than two shared seeds."""
    from scipy import stats

    seeds = sorted(set(values) & set(baseline))
    if len(seeds) < 2:
        return None
    diffs = [values[s] - baseline[s] for s in seeds]
    mean = statistics.fmean(diffs)
    if statistics.pstdev(diffs) == 0.0:  # every seed moved by the same amount: no spread to test against
        return {"n": len(seeds), "mean": mean, "ci_low": mean, "ci_high": mean, "p": 0.0 if mean else None}
    test = stats.ttest_rel([values[s] for s in seeds], [baseline[s] for s in seeds])
    ci = test.confidence_interval(confidence)
    p = float(test.pvalue)
    return {"n": len(seeds), "mean": mean, "ci_low": float(ci.low), "ci_high": float(ci.high),
            "p": p if math.isfinite(p) else None}

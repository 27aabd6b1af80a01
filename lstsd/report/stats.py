"""The statistics of a report: a summary of one statistic over seeds, a paired comparison of two methods, and the
family-wise adjustment of a table's p-values.

``paired`` compares two methods on the seeds both ran (pairing by seed removes what two runs of one seed share:
initialisation, data order):

* the mean of the per-seed differences, their standard deviation and the 95 % confidence interval
  mean +- t_{0.975, n-1} s / sqrt(n);
* ``p``: the two-sided paired t-test (scipy's ``ttest_rel``); none where the differences do not vary, since a
  t statistic has no spread to divide by;
* ``p_exact``: the exact paired permutation test, which needs no normality: under "no difference" each per-seed
  difference is as likely to have the other sign, so p is the share of the 2^n sign flips whose mean is at least
  as far from 0 as the observed one (all of them for n <= 20, a seeded Monte Carlo of 100,000 above). It cannot
  go below 2 / 2^n: 0.0625 at n = 5;
* ``n_power80``: how many seeds a paired t-test needs for 80 % power at alpha 0.05 (two-sided) if the true mean
  difference and its standard deviation were the ones observed (the noncentral t distribution): a planning
  figure for the next run, not a test.

A table's p-values are one family: :func:`adjust` gives Holm's step-down adjustment (controls the family-wise
error rate) or Benjamini-Hochberg's q (the false discovery rate).
"""
from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

import numpy as np

EXACT_UP_TO = 20  # seeds; above, the permutation p is a Monte Carlo estimate
MONTE_CARLO = 100_000
POWER_LIMIT = 100_000  # seeds: n_power80 is inf beyond it


def describe(values: list[float]) -> dict:
    """n, mean, sample std (None below two values), min and max; all None but n for no values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": n, "mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else None,
            "min": min(values), "max": max(values)}


def paired(values: dict, baseline: dict, confidence: float = 0.95) -> Optional[dict]:
    """``values`` and ``baseline`` map a seed to a score; over the seeds both have (at least two): n, the mean
    difference and its sd, its confidence interval, ``p`` (t-test; None where the differences do not vary),
    ``p_exact`` and ``n_power80`` (see the module's docstring). None with fewer than two shared seeds."""
    from scipy import stats

    seeds = sorted(set(values) & set(baseline))
    if len(seeds) < 2:
        return None
    diffs = [values[s] - baseline[s] for s in seeds]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    out = {"n": len(seeds), "mean": mean, "sd": sd, "ci_low": mean, "ci_high": mean, "p": None,
           "p_exact": sign_flip_p(diffs), "n_power80": seeds_for_power(mean, sd)}
    if sd > 0:
        test = stats.ttest_rel([values[s] for s in seeds], [baseline[s] for s in seeds])
        ci = test.confidence_interval(confidence)
        out |= {"ci_low": float(ci.low), "ci_high": float(ci.high), "p": float(test.pvalue)}
    return out


def sign_flip_p(diffs: Sequence[float], rounds: int = MONTE_CARLO, seed: int = 0) -> float:
    """Two-sided p of the paired permutation test: the share of sign flips of ``diffs`` whose sum is at least as
    far from 0 as theirs (every flip up to :data:`EXACT_UP_TO` values; above, ``rounds`` random flips from a
    generator seeded by ``seed``, p = (1 + hits) / (1 + rounds))."""
    d = np.asarray(diffs, dtype=np.float64)
    observed = abs(d.sum()) * (1 - 1e-12)  # a flip that ties the observed sum counts, whatever the rounding
    n = len(d)
    if n <= EXACT_UP_TO:
        hits, total, chunk = 0, 1 << n, 1 << 16
        bits = np.arange(n, dtype=np.int64)
        for start in range(0, total, chunk):
            codes = np.arange(start, min(start + chunk, total), dtype=np.int64)
            signs = 1 - 2 * ((codes[:, None] >> bits) & 1)
            hits += int(np.count_nonzero(np.abs(signs @ d) >= observed))
        return hits / total
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, rounds, 10_000):
        signs = rng.choice((-1.0, 1.0), size=(min(10_000, rounds - start), n))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed))
    return (1 + hits) / (1 + rounds)


def power(n: int, effect: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test on n seeds for a standardised mean difference ``effect``
    (mean / sd of the differences): P(|T| > t_{1 - alpha/2, n-1}) with T noncentral t (n - 1, effect sqrt n)."""
    from scipy import stats

    df, nc = n - 1, abs(effect) * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_for_power(mean: float, sd: float, target: float = 0.8, alpha: float = 0.05) -> Optional[float]:
    """The smallest n >= 2 whose :func:`power` for the effect mean / sd reaches ``target``; inf beyond
    :data:`POWER_LIMIT` seeds (a mean of 0), None where the differences do not vary (no t-test to plan)."""
    if not sd > 0:
        return None
    effect = abs(mean) / sd
    if effect == 0 or power(POWER_LIMIT, effect, alpha) < target:
        return math.inf
    low, high = 2, POWER_LIMIT  # power grows with n: the first n that reaches the target
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if power(mid, effect, alpha) < target else (low, mid)
    return low


def holm(ps: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjusted p-values: sorted ascending, p_(i) * (m - i + 1), made non-decreasing, capped at
    1. A missing p (no test) counts in m and sorts last; its adjusted value stays missing."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: (ps[i] is None, ps[i] if ps[i] is not None else 0.0))
    out: list[Optional[float]] = [None] * m
    running = 0.0
    for rank, i in enumerate(order):
        if ps[i] is None:
            break
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def benjamini_hochberg(ps: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Benjamini-Hochberg q-values: sorted ascending, p_(i) * m / i, made non-decreasing from the largest down,
    capped at 1. A missing p counts in m; its q stays missing."""
    m = len(ps)
    order = sorted((i for i in range(m) if ps[i] is not None), key=lambda i: ps[i])
    out: list[Optional[float]] = [None] * m
    running = 1.0
    for rank in range(len(order) - 1, -1, -1):
        i = order[rank]
        running = min(running, ps[i] * m / (rank + 1))
        out[i] = min(1.0, running)
    return out


ADJUSTED = {"holm": ("p_holm", holm), "bh": ("q_bh", benjamini_hochberg)}


def adjust(ps: Sequence[Optional[float]], method: str) -> tuple[Optional[str], list[Optional[float]]]:
    """The column name and the adjusted values of a family's p-values (``holm``, ``bh``); (None, []) for
    ``none``."""
    if method == "none":
        return None, []
    name, fn = ADJUSTED[method]
    return name, fn(ps)

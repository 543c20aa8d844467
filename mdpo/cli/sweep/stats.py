"""Statistics of sweep results: means, interquartile means, percentile-bootstrap CIs.

The IQM follows rliable (Agarwal et al. 2021): the mean of the middle 50% of the runs,
``scipy.stats.trim_mean(x, 0.25)`` — ``floor(0.25·n)`` values cut at each end. Confidence
intervals are percentile bootstraps over runs with a fixed generator, so reports are
reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def iqm(values: np.ndarray | list[float]) -> float:
    """Interquartile mean: cut ``floor(n/4)`` values at each end, average the rest."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("iqm of no values")
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def bootstrap_ci(
    values: np.ndarray | list[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 5000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic`` over ``values``.

    Args:
        values: one score per run.
        statistic: maps a resample (1-D array) to a number.
        confidence: coverage of the interval.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling generator.

    Returns:
        ``(low, high)``.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap of no values")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    stats = np.array([statistic(x[row]) for row in idx])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(values: list[float], seed: int = 0) -> dict[str, float]:
    """Mean, IQM, their 95% CIs, and the count."""
    mean_lo, mean_hi = bootstrap_ci(values, np.mean, seed=seed)
    iqm_lo, iqm_hi = bootstrap_ci(values, iqm, seed=seed)
    return {
        "n": len(values),
        "mean": float(np.mean(values)),
        "mean_ci_low": mean_lo,
        "mean_ci_high": mean_hi,
        "iqm": iqm(values),
        "iqm_ci_low": iqm_lo,
        "iqm_ci_high": iqm_hi,
    }

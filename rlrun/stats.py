"""The statistics ``rlrun plot`` draws: the mean and the interquartile mean over runs, percentile-bootstrap
confidence intervals, and curves of different runs smoothed and put on one step grid. Plain numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Statistic = Callable[..., np.ndarray]


# ----------------------------------------------------------------- statistics over runs
def mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over runs: ``(1/n) * sum_i x_i`` along ``axis``."""
    return np.mean(np.asarray(x, dtype=float), axis=axis)


def iqm(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean over runs (Agarwal et al. 2021): the mean of the middle 50% of the values.

    With the values sorted, ``x_(1) <= ... <= x_(n)``, each holds the quantile interval
    ``[(i-1)/n, i/n]`` and

        IQM = (1 / 0.5) * integral_{0.25}^{0.75} Q(u) du = sum_i w_i x_(i),
        w_i = |[(i-1)/n, i/n] ∩ [0.25, 0.75]| / 0.5,

    so a value that straddles a quartile counts with the fraction of it inside. When ``n`` is a
    multiple of 4 this is the plain mean of the middle ``n/2`` values, as rliable computes it with
    ``scipy.stats.trim_mean(x, 0.25)``; otherwise trim_mean drops ``floor(n/4)`` whole values from each
    end, while here the boundary values count in part: n=3 gives ``(x_(1) + 4 x_(2) + x_(3)) / 6``,
    n=2 the mean, n=1 the value.
    """
    x = np.sort(np.asarray(x, dtype=float), axis=axis)
    n = x.shape[axis]
    edges = np.arange(n + 1) / n
    weights = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None) / 0.5  # [n], sums to 1
    return np.tensordot(weights, np.moveaxis(x, axis, 0), axes=1)


AGGREGATES: dict[str, Statistic] = {"mean": mean, "iqm": iqm}


def bootstrap_ci(x: np.ndarray, statistic: Statistic = mean, n_boot: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence interval of ``statistic`` over runs (axis 0 of ``x``).

    Draw ``B = n_boot`` sets of ``n`` runs with replacement, ``I_1..I_B``, compute
    ``theta_b = statistic(x[I_b])`` and return the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the
    ``theta_b`` (Efron's percentile interval; c = ``confidence``). ``x`` is ``[n]`` (one value per run)
    or ``[n, T]`` (a curve per run; the same resampled runs serve every step). The generator is seeded,
    so the same input gives the same interval. With one run the interval is the value itself.
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    if n == 1:
        return x[0].copy(), x[0].copy()
    flat = x.reshape(n, -1)  # [n, T]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # [B, n]
    alpha = 100 * (1 - confidence) / 2
    low, high = np.empty(flat.shape[1]), np.empty(flat.shape[1])
    chunk = max(1, 2**22 // (n_boot * n))  # bounds the [B, n, chunk] resample array at 32 MB
    for start in range(0, flat.shape[1], chunk):
        cols = slice(start, start + chunk)
        thetas = statistic(flat[idx, cols], axis=1)  # [B, n, C] -> [B, C]
        low[cols], high[cols] = np.percentile(thetas, [alpha, 100 - alpha], axis=0)
    return low.reshape(x.shape[1:]), high.reshape(x.shape[1:])


# ----------------------------------------------------------------- curves on a common step grid
def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: ``y_t = mean(v_{t-N+1..t})`` over the up to ``N = window`` points so far."""
    values = np.asarray(values, dtype=float)
    if window <= 1:
        return values
    sums = np.cumsum(np.concatenate([[0.0], values]))
    t = np.arange(1, len(values) + 1)
    start = np.maximum(t - window, 0)
    return (sums[t] - sums[start]) / (t - start)


def common_grid(steps: Sequence[np.ndarray]) -> np.ndarray:
    """The steps at which a group's runs are compared: every step any run logged, from the latest first
    step to the earliest last step, so each point averages all the runs and none is extrapolated.

    Runs that do not overlap at all (rare: one ended before another began) fall back to the union of
    all their steps.
    """
    union = np.unique(np.concatenate(steps))
    lo, hi = max(s[0] for s in steps), min(s[-1] for s in steps)
    inside = union[(union >= lo) & (union <= hi)]
    return inside if len(inside) else union


def align(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """``[n, T]``: each run's ``(steps, values)`` linearly interpolated onto ``grid`` (held flat past its ends)."""
    return np.stack([np.interp(grid, steps, values) for steps, values in curves])

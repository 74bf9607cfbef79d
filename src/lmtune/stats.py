"""Seeded percentile bootstrap intervals, shared by the graders and the evaluation (numpy only).

    low, high = bootstrap_ci(lambda idx: scores[idx].mean(axis=1), n=len(scores), n_boot=1000, seed=0)
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(indices) where indices has shape (n_boot, n)."""
    if n < 1 or n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n >= 1, n_boot >= 1 and 0 < level < 1, got {n}, {n_boot}, {level}")
    # All resamples at once: statistic gets a (n_boot, n) index matrix and returns n_boot values.
    indices = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    values = np.asarray(statistic(indices), dtype=np.float64)
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)

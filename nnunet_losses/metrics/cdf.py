"""Empirical cumulative distribution function over runs."""
from __future__ import annotations

import numpy as np


def _finite_sample(values: np.ndarray) -> np.ndarray:
    sample = np.asarray(values, dtype=float).ravel()
    if sample.size == 0:
        raise ValueError("values must contain at least one value")
    n_nan = int(np.count_nonzero(np.isnan(sample)))
    if n_nan:
        raise ValueError(
            f"values contain {n_nan} NaN of {sample.size}; handle failed or undefined runs before the ECDF"
        )
    return np.sort(sample)


def empirical_cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF of ``M`` values at its jump points.

    ``F(x) = (1/M) * sum_m 1[v_m <= x]`` (region-wise loss paper §4.3-4.4, over the Dice
    of ``M`` runs; ``docs/metrics.md#empirical-cdf``). Returns ``(x, F(x))`` with ``x`` the sorted unique values;
    ``F`` is unitless, non-decreasing and ends at 1. Raises ``ValueError`` for an empty
    input or NaN values (the message gives their count).
    """
    sample = _finite_sample(values)
    x, counts = np.unique(sample, return_counts=True)
    return x, np.cumsum(counts) / sample.size


def ecdf_at(values: np.ndarray, x: np.ndarray | float) -> np.ndarray:
    """The empirical CDF of ``values`` evaluated at ``x``: ``F(x) = (1/M) * #{v_m <= x}``.

    Returns an array of ``x``'s shape (0-d for a scalar); a NaN in ``x`` gives NaN there.
    NaN in ``values`` raises ``ValueError`` as in :func:`empirical_cdf`.
    """
    sample = _finite_sample(values)
    points = np.asarray(x, dtype=float)
    result = np.searchsorted(sample, points, side="right") / sample.size
    return np.where(np.isnan(points), np.nan, result)

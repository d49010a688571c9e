"""Paired significance tests: sign-flip permutation test and one-tailed paired t-test (``docs/metrics.md``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

_TIE_TOLERANCE = 1e-12
_CHUNK = 4096


@dataclass(frozen=True)
class PermutationResult:
    """Result of :func:`paired_permutation_test`.

    ``n_permutations``: sign patterns evaluated (``2**n`` when ``exact``);
    ``n_dropped``: pairs removed because either value was NaN.
    """

    statistic: float
    p_value: float
    n_permutations: int
    exact: bool
    n_dropped: int


@dataclass(frozen=True)
class TTestResult:
    """Result of :func:`paired_t_test_one_tailed`; ``n_dropped`` counts NaN pairs removed."""

    statistic: float
    p_value: float
    df: int
    n_dropped: int


def _paired_differences(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"a and b must be 1D, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be paired (equal length), got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if not np.all(np.isfinite(d)):
        raise ValueError("a and b must not contain infinite values")
    if d.size < 2:
        raise ValueError(f"at least 2 complete pairs are needed, got {d.size} after dropping NaN pairs")
    return d, int(a.size - d.size)


def _count_at_least(d: np.ndarray, signs: np.ndarray, threshold: float) -> int:
    return int(np.count_nonzero(np.abs(signs @ d) / d.size >= threshold))


def paired_permutation_test(
    a: np.ndarray, b: np.ndarray, n_permutations: int = 10000, seed: int | None = 0
) -> PermutationResult:
    """Two-sided paired two-sample permutation test by random sign flips.

    With paired differences ``d_i = a_i - b_i`` (i = 1..n), the statistic is
    ``T = |mean(d)|``, the "mean absolute difference" of the region-wise loss paper
    (§4.1): the absolute value of the mean difference, since ``mean(|d|)`` is invariant
    under sign flips and would give p = 1 always. Under H0 (exchangeable pairs) each
    ``d_i`` is equally likely to have either sign; the null distribution is that of
    ``|mean(s * d)|`` over sign vectors ``s in {-1, 1}^n``.

    - ``2**n <= n_permutations``: all ``2**n`` sign patterns are enumerated and
      ``p = #{T_s >= T} / 2**n`` (``exact=True``).
    - otherwise ``n_permutations`` patterns are drawn with ``np.random.default_rng(seed)``
      and ``p = (1 + #{T_s >= T}) / (1 + n_permutations)`` (``exact=False``), which is
      never 0.

    ``T_s >= T`` is evaluated as ``T_s >= T - 1e-12 * max(1, T)`` so that ties lost to
    rounding count. Units of ``statistic`` are those of ``a`` and ``b``; ``p`` is in
    (0, 1]. Pairs where either value is NaN (e.g. an undefined metric) are dropped and
    counted in ``n_dropped``. Raises ``ValueError`` for unequal lengths, non-1D input,
    infinite values, fewer than 2 remaining pairs or ``n_permutations < 1``.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    d, n_dropped = _paired_differences(a, b)
    n = d.size
    observed = float(np.abs(np.ones(n) @ d) / n)
    threshold = observed - _TIE_TOLERANCE * max(1.0, observed)
    if 2**n <= n_permutations:
        patterns = np.arange(2**n)[:, None] >> np.arange(n)[None, :]
        signs = 1.0 - 2.0 * (patterns & 1)
        count = _count_at_least(d, signs, threshold)
        return PermutationResult(observed, count / 2**n, 2**n, True, n_dropped)
    rng = np.random.default_rng(seed)
    count = 0
    for start in range(0, n_permutations, _CHUNK):
        size = min(_CHUNK, n_permutations - start)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(size, n))
        count += _count_at_least(d, signs, threshold)
    return PermutationResult(
        observed, (1 + count) / (1 + n_permutations), n_permutations, False, n_dropped
    )


def paired_t_test_one_tailed(
    a: np.ndarray, b: np.ndarray, alternative: Literal["greater", "less"] = "greater"
) -> TTestResult:
    """One-tailed paired Student's t-test (the centroid-distance loss paper's test).

    ``t = mean(d) / (s_d / sqrt(n))`` with ``d = a - b``, ``s_d`` the sample standard
    deviation (ddof = 1) and ``df = n - 1``; ``alternative='greater'`` tests
    H1: mean(a - b) > 0 with ``p = P(T_df >= t)``, ``'less'`` tests mean(a - b) < 0 with
    ``p = P(T_df <= t)``. Computed by ``scipy.stats.ttest_rel``. ``statistic`` is unitless.

    Pairs where either value is NaN are dropped and counted in ``n_dropped``. If all
    differences are equal, ``s_d = 0`` and the statistic is undefined (scipy returns NaN
    or +-inf). Raises ``ValueError`` for unequal lengths, non-1D input, infinite values,
    fewer than 2 remaining pairs or another ``alternative``.
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    d, n_dropped = _paired_differences(a, b)
    result = stats.ttest_rel(d, np.zeros_like(d), alternative=alternative)
    return TTestResult(float(result.statistic), float(result.pvalue), d.size - 1, n_dropped)

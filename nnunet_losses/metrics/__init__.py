"""Evaluation metrics and statistics (numpy/scipy/cc3d only).

Overlap: ``dice``, ``dice_per_class``.
Surface distances in mm: ``surface_metrics``, ``hausdorff``, ``hausdorff95``, ``assd``, with the
worst case ``image_diagonal`` when ``one_mask_empty``.
Centroids: ``component_centroids``, ``component_count``, ``centroid_distance``, ``d_3d``,
``component_count_difference``.
Statistics: ``paired_permutation_test`` (``PermutationResult``),
``paired_t_test_one_tailed`` (``TTestResult``).
Run distributions: ``empirical_cdf``, ``ecdf_at``.

Definitions, edge cases and worst cases: ``docs/metrics.md``.
"""
from __future__ import annotations

from .cdf import ecdf_at, empirical_cdf
from .centroid import (
    centroid_distance,
    component_centroids,
    component_count,
    component_count_difference,
    d_3d,
)
from .overlap import dice, dice_per_class
from .statistics import (
    PermutationResult,
    TTestResult,
    paired_permutation_test,
    paired_t_test_one_tailed,
)
from .surface import assd, hausdorff, hausdorff95, image_diagonal, one_mask_empty, surface_metrics

__all__ = [
    "PermutationResult",
    "TTestResult",
    "assd",
    "centroid_distance",
    "component_centroids",
    "component_count",
    "component_count_difference",
    "d_3d",
    "dice",
    "dice_per_class",
    "ecdf_at",
    "empirical_cdf",
    "hausdorff",
    "hausdorff95",
    "image_diagonal",
    "one_mask_empty",
    "paired_permutation_test",
    "paired_t_test_one_tailed",
    "surface_metrics",
]

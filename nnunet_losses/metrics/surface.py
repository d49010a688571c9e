"""Surface-distance metrics in physical units: Hausdorff, HD95 and ASSD.

Worst case: when exactly one of prediction and reference is empty there is no surface
to measure to; all three metrics then take the image diagonal in mm,
``sqrt(sum_i (n_i * s_i)^2)`` for an array of shape ``n`` and spacing ``s``
(:func:`image_diagonal`), no finite prediction can be farther off inside the image,
so a missed (or hallucinated) class counts against the model instead of dropping out
of a mean. Both empty: 0.0 (the surfaces agree). See ``docs/metrics.md#worst-cases``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ._validation import as_mask_pair, as_spacing


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one face-neighbour outside the mask (outside the array counts)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def image_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of an array's extent in mm: ``sqrt(sum_i (n_i * s_i)^2)``, e.g. 10 x 20 voxels at (2, 1) mm -> sqrt(20^2 + 20^2).

    The worst-case surface distance of :func:`surface_metrics` when exactly one mask is empty.
    """
    sampling = as_spacing(spacing, len(shape))
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sampling))))


def one_mask_empty(pred: np.ndarray, gt: np.ndarray) -> bool:
    """Whether exactly one of the two masks is empty: the case in which the surface metrics take the worst case."""
    p, g = as_mask_pair(pred, gt)
    return bool(p.any()) != bool(g.any())


def _directed_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | float:
    """Distances pred-boundary -> gt-boundary and gt-boundary -> pred-boundary, in mm.

    Returns the image diagonal (the worst case) when exactly one mask is empty and two
    empty arrays when both are.
    """
    p, g = as_mask_pair(pred, gt)
    sampling = as_spacing(spacing, p.ndim)
    p_any, g_any = bool(p.any()), bool(g.any())
    if not p_any and not g_any:
        return np.empty(0), np.empty(0)
    if p_any != g_any:
        return image_diagonal(p.shape, sampling)
    bp, bg = _boundary(p), _boundary(g)
    pred_to_gt = ndimage.distance_transform_edt(~bg, sampling=sampling)[bp]
    gt_to_pred = ndimage.distance_transform_edt(~bp, sampling=sampling)[bg]
    return pred_to_gt, gt_to_pred


def _summarise(distances: tuple[np.ndarray, np.ndarray] | float) -> dict[str, float]:
    if isinstance(distances, float):
        return {"hausdorff": distances, "hausdorff95": distances, "assd": distances}
    pred_to_gt, gt_to_pred = distances
    if pred_to_gt.size == 0:
        return {"hausdorff": 0.0, "hausdorff95": 0.0, "assd": 0.0}
    return {
        "hausdorff": float(max(pred_to_gt.max(), gt_to_pred.max())),
        "hausdorff95": float(max(np.percentile(pred_to_gt, 95), np.percentile(gt_to_pred, 95))),
        "assd": float(np.concatenate([pred_to_gt, gt_to_pred]).mean()),
    }


def surface_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Hausdorff, HD95 and ASSD of two binary masks, sharing one boundary/distance computation.

    Boundary of a mask: its voxels with at least one face-neighbour (4-neighbourhood in
    2D, 6 in 3D) outside the mask, the array edge counting as outside. ``d(A -> B)`` is
    the set of Euclidean distances from each boundary voxel of A to the nearest boundary
    voxel of B, computed with ``scipy.ndimage.distance_transform_edt(~boundary_B,
    sampling=spacing)``, the construction of MedPy's surface distances.

    Returns ``{"hausdorff": ..., "hausdorff95": ..., "assd": ...}``, see
    :func:`hausdorff`, :func:`hausdorff95` and :func:`assd`. Units are those of
    ``spacing`` (mm), one entry per array axis in numpy axis order; 2D or 3D masks of
    equal shape, non-zero = foreground.

    Edge cases: both masks empty -> 0.0 for all three (the surfaces agree); exactly one
    empty -> the worst case, the image diagonal in mm (:func:`image_diagonal`), for all
    three (:func:`one_mask_empty` tells when it applied).
    Raises ``ValueError`` on differing shapes or a spacing of the wrong length or with
    non-positive entries.
    """
    return _summarise(_directed_distances(pred, gt, spacing))


def hausdorff(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric Hausdorff distance ``HD = max(max d(P -> G), max d(G -> P))`` in mm.

    The HD of the region-wise loss paper (Tables 2-4) and of the spine-MRI loss study.
    Boundaries, units and edge cases (both empty -> 0.0, one empty -> image diagonal) as in
    :func:`surface_metrics`.
    """
    return surface_metrics(pred, gt, spacing)["hausdorff"]


def hausdorff95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance ``HD95 = max(P95 d(P -> G), P95 d(G -> P))`` in mm.

    The maximum of the two directed 95th percentiles, as in MONAI's
    ``compute_hausdorff_distance(percentile=95)``; MedPy's ``hd95`` instead takes the 95th
    percentile of the pooled distances, which can be smaller. Percentiles use numpy's
    default linear interpolation. Boundaries, units and edge cases (both empty -> 0.0,
    one empty -> image diagonal) as in :func:`surface_metrics`.
    """
    return surface_metrics(pred, gt, spacing)["hausdorff95"]


def assd(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm.

    ``ASSD = mean(concat(d(P -> G), d(G -> P)))``: the mean over the union of both
    directed distance sets, so every boundary voxel of either mask has equal weight, as in
    MONAI's ``compute_average_surface_distance(symmetric=True)``. MedPy's ``assd`` instead
    averages the two directed means, which differs when the boundaries have different
    sizes. Boundaries, units and edge cases (both empty -> 0.0, one empty -> image diagonal) as in
    :func:`surface_metrics`.
    """
    return surface_metrics(pred, gt, spacing)["assd"]

"""Connected-component centroids and the centroid-distance metrics ``d_3D`` and ``Delta`` (``docs/metrics.md#centroid-metrics``)."""
from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np

from ._validation import as_mask_pair, as_spacing

_CONNECTIVITIES = {2: (4, 8), 3: (6, 18, 26)}
_DEFAULT_CONNECTIVITY = {2: 8, 3: 26}


def _label(mask: np.ndarray, connectivity: int | None) -> tuple[np.ndarray, int]:
    mask = np.asarray(mask)
    if mask.ndim not in _CONNECTIVITIES:
        raise ValueError(f"mask must be 2D or 3D, got {mask.ndim} dimensions")
    if connectivity is None:
        connectivity = _DEFAULT_CONNECTIVITY[mask.ndim]
    if connectivity not in _CONNECTIVITIES[mask.ndim]:
        raise ValueError(
            f"connectivity for a {mask.ndim}D mask must be one of {_CONNECTIVITIES[mask.ndim]}, got {connectivity}"
        )
    labels, n = cc3d.connected_components(mask.astype(bool), connectivity=connectivity, return_N=True)
    return labels, int(n)


def component_count(mask: np.ndarray, connectivity: int | None = None) -> int:
    """Number of connected components of the foreground (non-zero) of a 2D or 3D mask.

    ``connectivity``: 4 or 8 in 2D, 6, 18 or 26 in 3D; ``None`` -> 8 in 2D, 26 in 3D.
    """
    return _label(mask, connectivity)[1]


def component_centroids(
    mask: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int | None = None
) -> np.ndarray:
    """Centroids of the connected components of a 2D or 3D mask, shape ``(N, mask.ndim)``.

    Centroid of component ``k`` (voxel set ``V_k``): ``spacing * mean_{v in V_k} v``, the
    mean voxel index per axis (numpy axis order) scaled by ``spacing``. This is the
    ``gamma``/``phi`` of the centroid-distance loss paper. Units: voxels when ``spacing``
    is ``None`` (the paper's convention), else those of ``spacing``.

    Components are found with ``cc3d`` at ``connectivity`` (4 or 8 in 2D, 6, 18 or 26 in
    3D; ``None`` -> 8 in 2D, 26 in 3D) and listed in ``cc3d``'s label order (order of first
    appearance in a C-order scan). A mask without foreground gives an array of shape
    ``(0, mask.ndim)``.
    """
    labels, n = _label(mask, connectivity)
    scale = as_spacing(spacing, labels.ndim)
    if n == 0:
        return np.empty((0, labels.ndim))
    coords = np.nonzero(labels)
    ids = labels[coords].astype(np.intp) - 1
    counts = np.bincount(ids, minlength=n)
    sums = np.stack([np.bincount(ids, weights=axis, minlength=n) for axis in coords], axis=1)
    return sums / counts[:, None] * scale


def centroid_distance(gt_centroids: np.ndarray, pred_centroids: np.ndarray) -> float:
    """Mean over ground-truth centroids of the distance to the nearest predicted centroid.

    ``d = (1 / N_Gamma) * sum_{gamma in Gamma} min_{phi in Phi} |gamma - phi|`` with
    Euclidean ``|.|`` (centroid-distance loss paper, Eq. (2) on projections and Eq. (7)
    for ``d_3D``). Inputs are ``(N, k)`` arrays of points in any dimension ``k``; the
    result has their units. Not symmetric: false-positive predicted components that are
    not the nearest to any ground-truth centroid do not count.

    Edge cases (the paper leaves them undefined): both sets empty -> 0.0 (nothing to
    place, nothing placed); exactly one set empty -> NaN (no distance exists).
    """
    gt = np.asarray(gt_centroids, dtype=float)
    pred = np.asarray(pred_centroids, dtype=float)
    if gt.ndim != 2 or pred.ndim != 2 or gt.shape[1] != pred.shape[1]:
        raise ValueError(
            f"centroids must be (N, k) arrays with the same k, got {gt.shape} and {pred.shape}"
        )
    if len(gt) == 0 and len(pred) == 0:
        return 0.0
    if len(gt) == 0 or len(pred) == 0:
        return float("nan")
    distances = np.linalg.norm(gt[:, None, :] - pred[None, :, :], axis=-1)
    return float(distances.min(axis=1).mean())


def d_3d(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    connectivity: int | None = None,
) -> float:
    """The centroid-distance metric ``d_3D`` of two 3D (or 2D) masks.

    ``d_3D = (1 / N_Gamma) * sum_i min_j |gamma_i - phi_j|`` over the connected-component
    centroids ``gamma`` of ``gt`` and ``phi`` of ``pred`` (centroid-distance loss paper,
    Eq. (7)): :func:`centroid_distance` of :func:`component_centroids`. Units: voxels when
    ``spacing`` is ``None`` (as in the paper), else those of ``spacing``. Connectivity as in
    :func:`component_centroids`.

    Edge cases: neither mask has a component -> 0.0; exactly one has none -> NaN.
    """
    p, g = as_mask_pair(pred, gt)
    return centroid_distance(
        component_centroids(g, spacing, connectivity), component_centroids(p, spacing, connectivity)
    )


def component_count_difference(
    pred: np.ndarray, gt: np.ndarray, connectivity: int | None = None
) -> int:
    """``Delta = |N_Gamma - N_Phi|``, the difference in connected-component counts.

    ``N_Gamma`` and ``N_Phi`` are the numbers of components of ``gt`` and ``pred``
    (centroid-distance loss paper, Eq. (8)). Unitless, defined for every pair of masks
    (two empty masks give 0). Connectivity as in :func:`component_centroids`.
    """
    p, g = as_mask_pair(pred, gt)
    return abs(component_count(g, connectivity) - component_count(p, connectivity))

"""Euclidean distance transforms of label arrays, in physical units.

All functions take an integer label array (2D or 3D, numpy axis order) and a voxel
``spacing`` in mm (one entry per axis, same order). Distances are measured between
voxel centres, as in SciPy's ``distance_transform_edt(mask, sampling=spacing)``:

* the *own-class distance* of voxel ``i`` with label ``c`` is the distance to the
  nearest voxel whose label differs from ``c`` (the inner EDT of class ``c``; at least
  one voxel spacing for every voxel);
* the *distance to class k* of a voxel outside class ``k`` is the distance to the
  nearest voxel of class ``k`` (0 inside class ``k``).

The array border is not a boundary: a class that fills the whole array has no voxel
of another class to measure to, and its own-class distance is ``inf`` (callers define
what that means for their map). The ``edt`` package computes the own-class distance of
every class in one multi-label pass.
"""
from __future__ import annotations

from collections.abc import Sequence

import edt
import numpy as np

Spacing = Sequence[float]


def validate_labels(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Return ``labels`` as a C-contiguous integer array, checking dimension and range.

    Raises ``ValueError`` for a non-integer array, a dimension other than 2 or 3, an
    empty array, negative labels, or labels ``>= num_classes`` when it is given.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D or 3D, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError("labels is empty")
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ValueError(f"labels must be >= 0, found {low}")
    if num_classes is not None and high >= num_classes:
        raise ValueError(f"label {high} found but num_classes={num_classes} (labels must be < num_classes)")
    return np.ascontiguousarray(labels)


def validate_spacing(spacing: Spacing | None, ndim: int) -> tuple[float, ...]:
    """Return the spacing as a tuple of ``ndim`` positive floats (``None`` means 1 mm)."""
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} entries but the array has {ndim} axes")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return spacing


def own_class_distance(labels: np.ndarray, spacing: Spacing | None = None, threads: int = 1) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest voxel of a different class.

    ``d(i) = min_{j : y_j != y_i} ||i - j||`` with the spacing applied per axis; this is
    the inner EDT of each voxel's own class, for all classes at once. ``inf`` where the
    array holds a single class. Returns float32.
    """
    labels = validate_labels(labels)
    spacing = validate_spacing(spacing, labels.ndim)
    # edt treats label 0 as background (distance 0); shifting makes every class a label.
    dtype = np.uint8 if labels.max() < np.iinfo(np.uint8).max else np.uint32
    shifted = labels.astype(dtype) + dtype(1)
    return edt.edt(shifted, anisotropy=spacing, black_border=False, parallel=threads)


def padded_bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the ``True`` voxels of a non-empty mask, grown by one voxel on each side (within the array)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, mask.shape[axis])))
    return tuple(box)


def distance_to_class(labels: np.ndarray, k: int, spacing: Spacing | None = None, threads: int = 1) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest voxel of class ``k``; 0 inside ``k``.

    ``inf`` everywhere when class ``k`` is absent. Returns float32.

    Only the box ``P`` around the voxels outside ``k``, grown by one voxel, is transformed:
    every voxel of ``P``'s outer layer that lies outside that bounding box belongs to ``k``,
    and clamping any voxel ``q`` of class ``k`` into ``P`` shortens its distance to each
    point of the box per axis, so the nearest voxel of ``k`` is always found inside ``P``.
    For the background of a typical case (the foreground is a small box) this is much
    cheaper than a transform of the whole array.
    """
    labels = validate_labels(labels)
    spacing = validate_spacing(spacing, labels.ndim)
    outside = labels != k
    if not outside.any():
        return np.zeros(labels.shape, dtype=np.float32)
    box = padded_bounding_box(outside)
    # edt is several times faster on uint8 than on bool input
    cropped = edt.edt(np.ascontiguousarray(outside[box]).view(np.uint8), anisotropy=spacing, black_border=False, parallel=threads)
    if cropped.shape == labels.shape:
        return cropped
    distance = np.zeros(labels.shape, dtype=np.float32)
    distance[box] = cropped
    return distance

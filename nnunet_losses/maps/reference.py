"""Slow, obvious SciPy versions of the maps: the reference the fast maps are tested and timed against.

One ``scipy.ndimage.distance_transform_edt`` per class (and per complement), as
boundary-loss's ``one_hot2dist`` and the RW reference code compute them. Not used by the
package itself; kept here so that tests, benchmarks and users check the fast maps
against the same independent definition.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from .distance import Spacing


def scipy_signed_distance_map(labels: np.ndarray, num_classes: int, spacing: Spacing | None = None, shift: float = 0.0) -> np.ndarray:
    """``EDT(outside) * outside - (EDT(inside) - shift) * inside`` per present class; 0 for absent or whole-array classes."""
    out = np.zeros((num_classes,) + labels.shape, dtype=np.float32)
    for k in range(num_classes):
        inside = labels == k
        if inside.any() and not inside.all():
            outside = ~inside
            out[k] = distance_transform_edt(outside, sampling=spacing) * outside - (distance_transform_edt(inside, sampling=spacing) - shift) * inside
    return out


def scipy_rrw_map(labels: np.ndarray, num_classes: int, spacing: Spacing | None = None) -> np.ndarray:
    """``-EDT(inside) / max`` inside each present class, 1 elsewhere (eq. 4)."""
    out = np.ones((num_classes,) + labels.shape, dtype=np.float32)
    for k in range(num_classes):
        inside = labels == k
        if inside.any():
            d = distance_transform_edt(inside, sampling=spacing)
            out[k][inside] = -d[inside] / d[inside].max()
    return out

"""Input checks shared by the metric modules."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``pred`` and ``gt`` as boolean arrays (non-zero = foreground) of equal shape."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


def as_spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    """Return ``spacing`` as a float array of length ``ndim`` (``None`` -> all ones)."""
    if spacing is None:
        return np.ones(ndim)
    values = np.asarray(spacing, dtype=float)
    if values.ndim != 1 or values.size != ndim:
        raise ValueError(
            f"spacing must have one entry per array axis ({ndim}), got {tuple(np.atleast_1d(values))}"
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing entries must be finite and positive, got {tuple(values)}")
    return values

"""Overlap metrics: the Dice coefficient."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._validation import as_mask_pair


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient of two binary masks.

    ``D = 2 |P ∩ G| / (|P| + |G|)`` (Dice 1945; the overlap measure of every paper the
    package follows, ``docs/metrics.md#dice``). Unitless, in [0, 1]. Non-zero entries count as foreground; the masks
    must have the same shape.

    Edge cases: both masks empty -> NaN, following nnU-Net's evaluation (the score is
    undefined and left out of means by ``np.nanmean``); exactly one empty -> 0.0.
    """
    p, g = as_mask_pair(pred, gt)
    denominator = int(p.sum()) + int(g.sum())
    if denominator == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(p, g).sum()) / denominator


def dice_per_class(
    pred_labels: np.ndarray, gt_labels: np.ndarray, classes: Iterable[int]
) -> dict[int, float]:
    """Dice coefficient of each class ``c`` in ``classes``: ``dice(pred_labels == c, gt_labels == c)``.

    Label maps must have the same shape. A class absent from both maps gets NaN (see
    :func:`dice`).
    """
    pred_labels = np.asarray(pred_labels)
    gt_labels = np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(
            f"pred_labels and gt_labels must have the same shape, got {pred_labels.shape} and {gt_labels.shape}"
        )
    return {int(c): dice(pred_labels == c, gt_labels == c) for c in classes}

"""Distribution-based losses: cross-entropy, weighted cross-entropy, focal (SPEC §1, §5).

Per voxel ``i`` with true class ``y_i``: ``CE_i = -log s[y_i, i]`` (log-softmax, stable).

* CE: mean of ``CE_i`` over valid voxels. With ``class_weights`` the mean is weighted,
  ``sum_i w[y_i] CE_i / sum_i w[y_i]`` (PyTorch's convention).
* RRW-weighted CE (the RW paper's "wCE" row, §4.1): ``mean_i (1 + |z[y_i, i]|) CE_i``,
  with ``z`` the RRW map. The paper's formula was lost in extraction and its reference
  code does not contain it; this weighting (1 plus the voxel's normalised distance to
  its class boundary) is the documented choice. Needs the ``rrw`` map.
* Focal loss (Lin et al. 2017, non-alpha-balanced as in the RW paper):
  ``mean_i -(1 - s[y_i, i])^gamma log s[y_i, i]``, ``gamma = 2``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import SegmentationLoss
from .inputs import LossInput


def true_class_log_prob(batch: LossInput) -> Tensor:
    """``log s[y_i, i]`` of shape (B, 1, *spatial)."""
    return batch.log_probs.gather(1, batch.labels.unsqueeze(1))


class CrossEntropyLoss(SegmentationLoss):
    """Cross-entropy, optionally class-weighted (``sum w CE / sum w``)."""

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if class_weights is not None and not all(w >= 0 for w in class_weights):
            raise ValueError(f"class_weights must be >= 0, got {list(class_weights)}")
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def compute(self, batch: LossInput) -> Tensor:
        ce = -true_class_log_prob(batch)
        if self.class_weights is None:
            return batch.masked_mean(ce)
        if len(self.class_weights) != batch.num_classes:
            raise ValueError(f"{len(self.class_weights)} class_weights for {batch.num_classes} classes")
        w = self.class_weights.to(ce.device)[batch.labels].unsqueeze(1)
        if batch.mask is not None:
            w = w * batch.mask
        return (w * ce).sum() / w.sum().clamp_min(1e-12)


class RRWWeightedCrossEntropyLoss(SegmentationLoss):
    """Cross-entropy weighted per voxel by ``1 + |z[y_i, i]|`` from the RRW map (needs ``rrw``)."""

    required_maps = ("rrw",)

    def compute(self, batch: LossInput) -> Tensor:
        weights = 1.0 + batch.require_map("rrw").abs()
        return batch.masked_mean(-weights * true_class_log_prob(batch))


class FocalLoss(SegmentationLoss):
    """Focal loss ``mean -(1 - s_y)^gamma log s_y`` (Lin et al. 2017; gamma = 2, no alpha)."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def compute(self, batch: LossInput) -> Tensor:
        log_p = true_class_log_prob(batch)
        return batch.masked_mean(-(1.0 - log_p.exp()).pow(self.gamma) * log_p)

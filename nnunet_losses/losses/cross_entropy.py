"""Distribution-based losses: cross-entropy, weighted cross-entropy, focal (``docs/losses.md``).

Per voxel ``i`` with true class ``y_i``: ``CE_i = -log s[y_i, i]`` (log-softmax, stable).

* CE: mean of ``CE_i`` over valid voxels. With ``class_weights`` the mean is weighted,
  ``sum_i w[y_i] CE_i / sum_i w[y_i]`` (PyTorch's convention).
* RRW-weighted CE (the "wCE" row of Valverde et al., "Region-wise loss for biomedical
  image segmentation", §4.1): ``mean_i (1 + |z[y_i, i]|) CE_i``, with ``z`` the RRW map.
  The paper's formula was lost in extraction and its reference code does not contain
  it; this weighting (1 plus the voxel's normalised distance to its class boundary) is
  the documented choice. Reads the ``rrw`` map.
* Focal loss (Lin et al., "Focal loss for dense object detection", 2017; not
  alpha-balanced, as in the RW paper): ``mean_i -(1 - s[y_i, i])^gamma log s[y_i, i]``,
  ``gamma = 2``.

``reduction="none"``: each sample's share of the (weighted) voxel mean, ``B`` times its
sum over the batch's denominator, which is its own mean when no voxel is masked or
weighted (:func:`~.inputs.voxel_mean`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import SegmentationLoss, functional_form
from .inputs import LossInput, Reduction, reduce_ratio


def true_class_log_prob(batch: LossInput) -> Tensor:
    """``log s[y_i, i]`` of shape (B, 1, *spatial)."""
    return batch.log_probs.gather(1, batch.labels.unsqueeze(1))


def _class_weight_tensor(class_weights: Sequence[float] | Tensor | None) -> Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32)
    if not bool((weights >= 0).all()):
        raise ValueError(f"class_weights must be >= 0, got {weights.tolist()}")
    return weights


def cross_entropy_of_batch(batch: LossInput, class_weights: Tensor | None = None, reduction: Reduction = "mean") -> Tensor:
    """CE, optionally class-weighted (``sum w CE / sum w``)."""
    ce = -true_class_log_prob(batch)
    if class_weights is None:
        return batch.voxel_mean(ce, reduction)
    if len(class_weights) != batch.num_classes:
        raise ValueError(f"{len(class_weights)} class_weights for {batch.num_classes} classes")
    (w,) = batch.masked(class_weights.to(ce.device)[batch.labels].unsqueeze(1))
    if reduction == "mean":
        return (w * ce).sum() / w.sum().clamp_min(1e-12)
    return reduce_ratio((w * ce).flatten(1).sum(1), w.sum().clamp_min(1e-12), reduction)


def rrw_weighted_cross_entropy_of_batch(batch: LossInput, reduction: Reduction = "mean") -> Tensor:
    """``mean_i (1 + |z[y_i, i]|) CE_i`` from the compact RRW map."""
    weights = 1.0 + batch.require_map("rrw").abs()
    return batch.voxel_mean(-weights * true_class_log_prob(batch), reduction)


def focal_of_batch(batch: LossInput, gamma: float = 2.0, reduction: Reduction = "mean") -> Tensor:
    """``mean_i -(1 - s_y)^gamma log s_y``."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    log_p = true_class_log_prob(batch)
    return batch.voxel_mean(-(1.0 - log_p.exp()).pow(gamma) * log_p, reduction)


class CrossEntropyLoss(SegmentationLoss):
    """Cross-entropy, optionally class-weighted (``sum w CE / sum w``)."""

    def __init__(self, class_weights: Sequence[float] | None = None, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("class_weights", _class_weight_tensor(class_weights), persistent=False)

    def compute(self, batch: LossInput) -> Tensor:
        return cross_entropy_of_batch(batch, self.class_weights, self.reduction)


class RRWWeightedCrossEntropyLoss(SegmentationLoss):
    """Cross-entropy weighted per voxel by ``1 + |z[y_i, i]|`` from the RRW map (reads ``rrw``)."""

    required_maps = ("rrw",)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None, *, rrw: Tensor | None = None) -> Tensor:
        return self.call_with_maps(logits, target, mask, rrw=rrw)

    def compute(self, batch: LossInput) -> Tensor:
        return rrw_weighted_cross_entropy_of_batch(batch, self.reduction)


class FocalLoss(SegmentationLoss):
    """Focal loss ``mean -(1 - s_y)^gamma log s_y`` (Lin et al. 2017; gamma = 2, no alpha)."""

    def __init__(self, gamma: float = 2.0, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def compute(self, batch: LossInput) -> Tensor:
        return focal_of_batch(batch, self.gamma, self.reduction)


cross_entropy_loss = functional_form(CrossEntropyLoss, "cross_entropy_loss")
rrw_weighted_cross_entropy_loss = functional_form(RRWWeightedCrossEntropyLoss, "rrw_weighted_cross_entropy_loss")
focal_loss = functional_form(FocalLoss, "focal_loss")

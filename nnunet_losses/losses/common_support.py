"""Common-support losses of Marzola et al.'s temporal loss ("Temporal loss for ultrasound
segmentation"; ``docs/losses.md``, its schedule in ``docs/schedules.md``).

The common-support mask ``M`` is 1, for class ``k``, on every *line* (an image column
in the paper: all voxels sharing the coordinates of the other axes) where both the
target and the thresholded prediction contain class ``k``. The prediction is
thresholded by its argmax, which for two classes is the paper's 0.5 threshold.
``line_axis`` is the spatial axis the lines run along (default ``-2``: the rows axis
``y`` of ``(y, x)`` or ``(z, y, x)`` arrays, i.e. image columns). ``M`` carries no
gradient.

* CDL (eq. 3): the generalised Dice loss of ``M * T`` and ``M * P``.
* Common-support boundary loss (eq. 4): ``(1/(N C)) sum_k sum_i M D P`` with ``D`` the
  distance map of Kervadec's boundary loss (the ``signed_distance`` map; negative
  inside the class, so the loss is negative at its optimum). ``reduction="none"``: each
  sample's share of the voxel mean (:func:`~.inputs.voxel_mean`).

CDL is only defined with ``reduction="mean"`` (its class weights pool the batch).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import SegmentationLoss, functional_form
from .inputs import LossInput, Reduction
from .overlap import GeneralizedDiceLoss, generalized_dice


def common_support_mask(target_onehot: Tensor, prediction_onehot: Tensor, line_axis: int = -2) -> Tensor:
    """``M[b, k, ...] = 1`` on lines along ``line_axis`` where both one-hot inputs contain class ``k``.

    Inputs are (B, C, *spatial); ``line_axis`` indexes the spatial axes (negative counts
    from the last). Returns a float tensor of the inputs' shape.
    """
    if target_onehot.shape != prediction_onehot.shape:
        raise ValueError(f"shapes differ: {tuple(target_onehot.shape)} vs {tuple(prediction_onehot.shape)}")
    spatial = target_onehot.ndim - 2
    if not -spatial <= line_axis < spatial:
        raise ValueError(f"line_axis {line_axis} is not a spatial axis of a {spatial}D input")
    dim = 2 + (line_axis % spatial)
    both = (target_onehot.amax(dim=dim, keepdim=True) > 0) & (prediction_onehot.amax(dim=dim, keepdim=True) > 0)
    return both.expand_as(target_onehot).to(target_onehot.dtype)


def common_support(batch: LossInput, line_axis: int = -2) -> Tensor:
    """The common-support mask ``M`` of this batch (detached), from the argmax prediction."""
    probs = batch.probs.detach()
    predicted = torch.zeros_like(probs).scatter_(1, probs.argmax(1, keepdim=True), 1.0)
    return common_support_mask(batch.onehot, predicted, line_axis)


def common_support_dice_of_batch(batch: LossInput, line_axis: int = -2) -> Tensor:
    """CDL: the generalised Dice loss of ``M T`` and ``M P`` (eq. 3)."""
    (m,) = batch.masked(common_support(batch, line_axis))
    return generalized_dice(m * batch.onehot, m * batch.probs)


def common_support_boundary_of_batch(batch: LossInput, line_axis: int = -2, reduction: Reduction = "mean") -> Tensor:
    """``mean_{b,k,i} M phi_G s`` (eq. 4)."""
    return batch.voxel_mean(common_support(batch, line_axis) * batch.require_map("signed_distance") * batch.probs, reduction)


class CommonSupportDiceLoss(SegmentationLoss):
    """CDL: generalised Dice loss restricted to the common support ``M`` (eq. 3). Only ``reduction="mean"``."""

    pooled_over_batch = GeneralizedDiceLoss.pooled_over_batch

    def __init__(self, line_axis: int = -2, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.line_axis = line_axis

    def compute(self, batch: LossInput) -> Tensor:
        return common_support_dice_of_batch(batch, self.line_axis)


class CommonSupportBoundaryLoss(SegmentationLoss):
    """``mean_{b,k,i} M * phi_G * s`` over the common support (eq. 4; reads ``signed_distance``)."""

    required_maps = ("signed_distance",)

    def __init__(self, line_axis: int = -2, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.line_axis = line_axis

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None, *, signed_distance: Tensor | None = None) -> Tensor:
        return self.call_with_maps(logits, target, mask, signed_distance=signed_distance)

    def compute(self, batch: LossInput) -> Tensor:
        return common_support_boundary_of_batch(batch, self.line_axis, self.reduction)


common_support_dice_loss = functional_form(CommonSupportDiceLoss, "common_support_dice_loss")
common_support_boundary_loss = functional_form(CommonSupportBoundaryLoss, "common_support_boundary_loss")

"""Common-support losses of the temporal loss (Marzola et al., ``papers/temporal-loss-ultrasound.txt``; SPEC §3).

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
  inside the class, so the loss is negative at its optimum).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import SegmentationLoss
from .inputs import LossInput
from .overlap import generalized_dice


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


class _CommonSupport(SegmentationLoss):
    def __init__(self, line_axis: int = -2) -> None:
        super().__init__()
        self.line_axis = line_axis

    def support(self, batch: LossInput) -> Tensor:
        """The common-support mask ``M`` of this batch (detached)."""
        probs = batch.probs.detach()
        predicted = torch.zeros_like(probs).scatter_(1, probs.argmax(1, keepdim=True), 1.0)
        return common_support_mask(batch.onehot, predicted, self.line_axis)


class CommonSupportDiceLoss(_CommonSupport):
    """CDL: generalised Dice loss restricted to the common support ``M`` (eq. 3)."""

    def compute(self, batch: LossInput) -> Tensor:
        m = self.support(batch)
        if batch.mask is not None:
            m = m * batch.mask
        return generalized_dice(m * batch.onehot, m * batch.probs)


class CommonSupportBoundaryLoss(_CommonSupport):
    """``mean_{b,k,i} M * phi_G * s`` over the common support (eq. 4; needs ``signed_distance``)."""

    required_maps = ("signed_distance",)

    def compute(self, batch: LossInput) -> Tensor:
        return batch.masked_mean(self.support(batch) * batch.require_map("signed_distance") * batch.probs)

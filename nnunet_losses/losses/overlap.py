"""Region-based losses from soft true/false positives and false negatives (SPEC §3, §5).

With softmax ``s``, one-hot target ``g`` and voxel mask ``m``, per class ``k``:
``TP_k = sum s g m``, ``FP_k = sum s (1-g) m``, ``FN_k = sum (1-s) g m``, summed over the
voxels of each sample, or also over the batch (``batch_dice=True``, nnU-Net's option).

* Soft Dice (Milletari et al.): ``1 - mean_k (2TP + eps) / (2TP + FP + FN + eps)``.
* Tversky (Salehi et al. 2017): ``TI_k = (TP + eps) / (TP + a FP + b FN + eps)``,
  loss ``1 - mean_k TI_k``; ``a = b = 0.5`` is Dice.
* Focal Tversky (Abraham & Khan 2018): ``mean_k (1 - TI_k)^(1/gamma)``, ``gamma = 4/3``.
* Asymmetric F-beta (Hashemi et al. 2019): ``F_k = (1+b^2) TP / ((1+b^2) TP + b^2 FN + FP)``,
  loss ``1 - mean_k F_k`` (Tversky with ``a = 1/(1+b^2)``, ``b' = b^2/(1+b^2)``).
* Generalised Dice (Sudre et al., as in the temporal-loss paper eq. 1-2):
  ``1 - 2 sum_k w_k sum_i T P / sum_k w_k sum_i (T^2 + P^2)``, ``w_k = 1 / (sum_i T_k)^2``
  over the whole batch. An empty class would get an infinite weight; it gets the
  largest finite weight instead (as MONAI does), so predicting an absent class is
  still penalised.

``include_background=False`` (the default, as nnU-Net) averages over foreground
classes only; ``eps`` keeps empty classes finite (an empty, unpredicted class scores 1).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import SegmentationLoss
from .inputs import LossInput


def soft_counts(batch: LossInput, batch_dice: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Soft ``(TP, FP, FN)`` of shape ``(C,)`` (batch_dice) or ``(B, C)``."""
    s, g = batch.probs, batch.onehot
    if batch.mask is not None:
        s, g = s * batch.mask, g * batch.mask
    axes = (0, *range(2, s.ndim)) if batch_dice else tuple(range(2, s.ndim))
    tp = (s * g).sum(axes)
    fp = s.sum(axes) - tp
    fn = g.sum(axes) - tp
    return tp, fp, fn


class _TverskyFamily(SegmentationLoss):
    """Shared machinery: per-class Tversky index from soft counts, averaged over classes."""

    def __init__(self, alpha: float, beta: float, include_background: bool, batch_dice: bool, smooth: float) -> None:
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta <= 0:
            raise ValueError(f"alpha and beta must be >= 0 with a positive sum, got {alpha}, {beta}")
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.alpha, self.beta = alpha, beta
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth = smooth

    def tversky_index(self, batch: LossInput) -> Tensor:
        tp, fp, fn = soft_counts(batch, self.batch_dice)
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(1e-8)
        return index if self.include_background else index[..., 1:]

    def compute(self, batch: LossInput) -> Tensor:
        return 1.0 - self.tversky_index(batch).mean()


class SoftDiceLoss(_TverskyFamily):
    """Soft Dice loss ``1 - mean_k (2TP + eps)/(2TP + FP + FN + eps)`` (Milletari et al. 2016)."""

    def __init__(self, include_background: bool = False, batch_dice: bool = False, smooth: float = 1e-5) -> None:
        super().__init__(0.5, 0.5, include_background, batch_dice, smooth)


class TverskyLoss(_TverskyFamily):
    """Tversky loss ``1 - mean_k TP/(TP + alpha FP + beta FN)`` (Salehi et al. 2017; a=0.3, b=0.7)."""

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__(alpha, beta, include_background, batch_dice, smooth)


class FocalTverskyLoss(_TverskyFamily):
    """Focal Tversky loss ``mean_k (1 - TI_k)^(1/gamma)`` (Abraham & Khan 2018; gamma = 4/3)."""

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4.0 / 3.0,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__(alpha, beta, include_background, batch_dice, smooth)
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.gamma = gamma

    def compute(self, batch: LossInput) -> Tensor:
        # clamp keeps the gradient of x^(1/gamma) finite at a perfect class (x = 0)
        return (1.0 - self.tversky_index(batch)).clamp_min(1e-6).pow(1.0 / self.gamma).mean()


class AsymmetricFBetaLoss(_TverskyFamily):
    """Asymmetric F-beta loss ``1 - mean_k (1+b^2)TP / ((1+b^2)TP + b^2 FN + FP)`` (Hashemi et al. 2019; b = 1.5)."""

    def __init__(
        self, beta: float = 1.5, include_background: bool = False, batch_dice: bool = False, smooth: float = 1e-5
    ) -> None:
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        b2 = beta * beta
        super().__init__(1.0 / (1.0 + b2), b2 / (1.0 + b2), include_background, batch_dice, smooth)
        self.beta_f = beta


def generalized_dice(t: Tensor, p: Tensor, eps: float = 1e-6) -> Tensor:
    """Generalised Dice loss of (already masked) target ``t`` and prediction ``p``, (B, C, *).

    Weights ``w_k = 1/(sum T_k)^2`` over the whole batch; empty classes take the largest
    finite weight. All classes empty (everything masked): 0.
    """
    axes = (0, *range(2, t.ndim))
    volume = t.sum(axes)
    present = volume > 0
    if not present.any():
        return (p * 0.0).sum()
    weights = torch.where(present, 1.0 / volume.clamp_min(1e-12).square(), torch.zeros_like(volume))
    weights = torch.where(present, weights, weights.max())
    numerator = (weights * (t * p).sum(axes)).sum()
    denominator = (weights * (t.square() + p.square()).sum(axes)).sum()
    return 1.0 - 2.0 * numerator / (denominator + eps * weights.max())


class GeneralizedDiceLoss(SegmentationLoss):
    """Generalised Dice loss with batch-wise class weights (temporal-loss paper eq. 1-2)."""

    def compute(self, batch: LossInput) -> Tensor:
        t, p = batch.onehot, batch.probs
        if batch.mask is not None:
            t, p = t * batch.mask, p * batch.mask
        return generalized_dice(t, p)

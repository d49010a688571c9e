"""Region-based losses from soft true/false positives and false negatives (``docs/losses.md``).

With softmax ``s``, one-hot target ``g`` and voxel mask ``m``, per class ``k``:
``TP_k = sum s g m``, ``FP_k = sum s (1-g) m``, ``FN_k = sum (1-s) g m``, summed over the
voxels of each sample, or also over the batch (``batch_dice=True``, nnU-Net's option).

* Soft Dice (Milletari et al., "V-Net"): ``1 - mean_k (2TP + smooth) / (2TP + FP + FN + smooth)``.
* Tversky (Salehi et al., "Tversky loss function for image segmentation using 3D fully
  convolutional deep networks", 2017): ``TI_k = (TP + smooth) / (TP + a FP + b FN + smooth)``,
  loss ``1 - mean_k TI_k``; ``a = b = 0.5`` is Dice.
* Focal Tversky (Abraham & Khan, "A novel focal Tversky loss function ...", 2019):
  ``mean_k (1 - TI_k)^(1/gamma)``, ``gamma = 4/3``.
* Asymmetric F-beta (Hashemi et al., "Asymmetric loss functions and deep densely-connected
  networks ...", 2018): ``F_k = (1+b^2) TP / ((1+b^2) TP + b^2 FN + FP)``, loss
  ``1 - mean_k F_k`` (Tversky with ``a = 1/(1+b^2)``, ``b' = b^2/(1+b^2)``).
* Generalised Dice (Sudre et al., "Generalised Dice overlap as a deep learning loss
  function ...", as in Marzola et al.'s temporal loss, eq. 1-2):
  ``1 - 2 sum_k w_k sum_i T P / sum_k w_k sum_i (T^2 + P^2)``, ``w_k = 1 / (sum_i T_k)^2``
  over the whole batch. An empty class would get an infinite weight; it gets the
  largest finite weight instead (as MONAI does), so predicting an absent class is
  still penalised.

``include_background=False`` (the default, as nnU-Net) averages over foreground
classes only; ``smooth`` keeps empty classes finite (an empty, unpredicted class scores 1).
``reduction="none"``: per-sample Dice/Tversky (mean over the classes of each sample);
undefined with ``batch_dice=True`` and for the generalised Dice (batch statistics).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import SegmentationLoss, functional_form
from .inputs import LossInput, Reduction, check_reduction, reduce_samples

_BATCH_DICE = "batch_dice=True pools TP, FP and FN over the batch"
_GDL = "the generalised Dice pools its class weights and sums over the batch"


def soft_counts(batch: LossInput, batch_dice: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Soft ``(TP, FP, FN)`` of shape ``(C,)`` (batch_dice) or ``(B, C)``."""
    s, g = batch.masked(batch.probs, batch.onehot)
    axes = (0, *range(2, s.ndim)) if batch_dice else tuple(range(2, s.ndim))
    tp = (s * g).sum(axes)
    fp = s.sum(axes) - tp
    fn = g.sum(axes) - tp
    return tp, fp, fn


def tversky_index(batch: LossInput, alpha: float, beta: float, include_background: bool, batch_dice: bool, smooth: float) -> Tensor:
    """``TI_k = (TP + smooth) / (TP + alpha FP + beta FN + smooth)``, ``(C',)`` or ``(B, C')``."""
    tp, fp, fn = soft_counts(batch, batch_dice)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(1e-8)
    return index if include_background else index[..., 1:]


def tversky_family_loss(
    batch: LossInput,
    alpha: float,
    beta: float,
    include_background: bool = False,
    batch_dice: bool = False,
    smooth: float = 1e-5,
    gamma: float | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """``1 - TI_k`` (``gamma=None``) or ``(1 - TI_k)^(1/gamma)`` averaged over classes, reduced over samples."""
    _check_tversky_options(alpha, beta, smooth, gamma)
    check_reduction(reduction, _BATCH_DICE if batch_dice else None)
    index = tversky_index(batch, alpha, beta, include_background, batch_dice, smooth)
    # clamp keeps the gradient of x^(1/gamma) finite at a perfect class (x = 0)
    per_class = 1.0 - index if gamma is None else (1.0 - index).clamp_min(1e-6).pow(1.0 / gamma)
    return reduce_samples(per_class, reduction)


def _check_tversky_options(alpha: float, beta: float, smooth: float, gamma: float | None = None) -> None:
    if gamma is not None and gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    if alpha < 0 or beta < 0 or alpha + beta <= 0:
        raise ValueError(f"alpha and beta must be >= 0 with a positive sum, got {alpha}, {beta}")
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")


def _f_beta_weights(beta: float) -> tuple[float, float]:
    """Tversky ``(alpha, beta)`` of the F-beta score."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    b2 = beta * beta
    return 1.0 / (1.0 + b2), b2 / (1.0 + b2)


class _TverskyFamily(SegmentationLoss):
    """Shared machinery: per-class Tversky index from soft counts, averaged over classes."""

    def __init__(
        self,
        alpha: float,
        beta: float,
        include_background: bool,
        batch_dice: bool,
        smooth: float,
        reduction: Reduction,
        gamma: float | None = None,
    ) -> None:
        super().__init__(reduction, _BATCH_DICE if batch_dice else None)
        _check_tversky_options(alpha, beta, smooth, gamma)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth = smooth

    def compute(self, batch: LossInput) -> Tensor:
        return tversky_family_loss(
            batch, self.alpha, self.beta, self.include_background, self.batch_dice, self.smooth, self.gamma, self.reduction
        )


class SoftDiceLoss(_TverskyFamily):
    """Soft Dice loss ``1 - mean_k (2TP + smooth)/(2TP + FP + FN + smooth)`` (Milletari et al. 2016)."""

    def __init__(
        self, include_background: bool = False, batch_dice: bool = False, smooth: float = 1e-5, reduction: Reduction = "mean"
    ) -> None:
        super().__init__(0.5, 0.5, include_background, batch_dice, smooth, reduction)


class TverskyLoss(_TverskyFamily):
    """Tversky loss ``1 - mean_k TP/(TP + alpha FP + beta FN)`` (Salehi et al. 2017; a=0.3, b=0.7)."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, include_background: bool = False, batch_dice: bool = False,
                 smooth: float = 1e-5, reduction: Reduction = "mean") -> None:
        super().__init__(alpha, beta, include_background, batch_dice, smooth, reduction)


class FocalTverskyLoss(_TverskyFamily):
    """Focal Tversky loss ``mean_k (1 - TI_k)^(1/gamma)`` (Abraham & Khan; gamma = 4/3)."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 4.0 / 3.0, include_background: bool = False,
                 batch_dice: bool = False, smooth: float = 1e-5, reduction: Reduction = "mean") -> None:
        super().__init__(alpha, beta, include_background, batch_dice, smooth, reduction, gamma)


class AsymmetricFBetaLoss(_TverskyFamily):
    """Asymmetric F-beta loss ``1 - mean_k (1+b^2)TP / ((1+b^2)TP + b^2 FN + FP)`` (Hashemi et al.; b = 1.5)."""

    def __init__(self, beta: float = 1.5, include_background: bool = False, batch_dice: bool = False, smooth: float = 1e-5,
                 reduction: Reduction = "mean") -> None:
        super().__init__(*_f_beta_weights(beta), include_background, batch_dice, smooth, reduction)
        self.beta_f = beta


def generalized_dice(t: Tensor, p: Tensor, smooth: float = 1e-6) -> Tensor:
    """Generalised Dice loss of (already masked) target ``t`` and prediction ``p``, (B, C, *).

    Weights ``w_k = 1/(sum T_k)^2`` over the whole batch; empty classes take the largest
    finite weight. All classes empty (everything masked): 0 (gradient 0). Sync-free: the
    all-empty case is selected on the device, not branched on.
    """
    axes = (0, *range(2, t.ndim))
    volume = t.sum(axes)
    present = volume > 0
    any_present = present.any()
    weights = torch.where(present, 1.0 / volume.clamp_min(1e-12).square(), torch.zeros_like(volume))
    weights = torch.where(present, weights, weights.max())
    weights = torch.where(any_present, weights, torch.ones_like(weights))  # keeps the unused branch finite
    numerator = (weights * (t * p).sum(axes)).sum()
    denominator = (weights * (t.square() + p.square()).sum(axes)).sum()
    value = 1.0 - 2.0 * numerator / (denominator + smooth * weights.max())
    return torch.where(any_present, value, (p * 0.0).sum())


def _generalized_dice_of_batch(batch: LossInput) -> Tensor:
    return generalized_dice(*batch.masked(batch.onehot, batch.probs))


class GeneralizedDiceLoss(SegmentationLoss):
    """Generalised Dice loss with batch-wise class weights (Sudre et al.; Marzola et al. eq. 1-2). Only ``reduction="mean"``."""

    pooled_over_batch = _GDL

    def compute(self, batch: LossInput) -> Tensor:
        return _generalized_dice_of_batch(batch)


soft_dice_loss = functional_form(SoftDiceLoss, "soft_dice_loss")
tversky_loss = functional_form(TverskyLoss, "tversky_loss")
focal_tversky_loss = functional_form(FocalTverskyLoss, "focal_tversky_loss")
asymmetric_f_beta_loss = functional_form(AsymmetricFBetaLoss, "asymmetric_f_beta_loss")
generalized_dice_loss = functional_form(GeneralizedDiceLoss, "generalized_dice_loss")

"""Torch losses for segmentation (no nnU-Net import here).

Every loss is a :class:`SegmentationLoss` module called as
``loss(logits, target, mask=None, rrw=None, signed_distance=None)`` (see
:mod:`.inputs` for shapes) and computed in float32, also under autocast.

Region-wise family (:mod:`.region_wise`): :class:`RegionWiseLoss` (RRW, class-emphasis
RRW, RW-Boundary, AC, Cao maps), :func:`region_wise_loss` (any map),
:class:`BoundaryLoss` (Kervadec), :class:`OneSidedHausdorffLoss` (Karimi).
Overlap (:mod:`.overlap`): :class:`SoftDiceLoss`, :class:`GeneralizedDiceLoss`,
:class:`TverskyLoss`, :class:`FocalTverskyLoss`, :class:`AsymmetricFBetaLoss`.
Distribution (:mod:`.cross_entropy`): :class:`CrossEntropyLoss`,
:class:`RRWWeightedCrossEntropyLoss`, :class:`FocalLoss`.
Temporal-loss terms (:mod:`.common_support`): :class:`CommonSupportDiceLoss`,
:class:`CommonSupportBoundaryLoss`, :func:`common_support_mask`.
Centroid (:mod:`.centroid`): :class:`CentroidDistanceLoss`.
Compounds (:mod:`.composite`): :class:`CompositeLoss` (weights fixed or from a schedule).
"""
from .base import SegmentationLoss
from .centroid import CentroidDistanceLoss
from .common_support import CommonSupportBoundaryLoss, CommonSupportDiceLoss, common_support_mask
from .composite import CompositeLoss
from .cross_entropy import CrossEntropyLoss, FocalLoss, RRWWeightedCrossEntropyLoss
from .inputs import LossInput, masked_mean
from .overlap import (
    AsymmetricFBetaLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    SoftDiceLoss,
    TverskyLoss,
    generalized_dice,
)
from .region_wise import BoundaryLoss, OneSidedHausdorffLoss, RegionWiseLoss, region_wise_loss, rrw_from_compact

__all__ = [
    "AsymmetricFBetaLoss",
    "BoundaryLoss",
    "CentroidDistanceLoss",
    "CommonSupportBoundaryLoss",
    "CommonSupportDiceLoss",
    "CompositeLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "LossInput",
    "OneSidedHausdorffLoss",
    "RRWWeightedCrossEntropyLoss",
    "RegionWiseLoss",
    "SegmentationLoss",
    "SoftDiceLoss",
    "TverskyLoss",
    "common_support_mask",
    "generalized_dice",
    "masked_mean",
    "region_wise_loss",
    "rrw_from_compact",
]

"""Torch losses for segmentation (no nnU-Net import here; ``docs/losses.md``).

Every loss is a :class:`SegmentationLoss` module called as ``loss(logits, target, mask=None)``
plus, only on the losses that read maps, keyword-only maps (``rrw=``, ``signed_distance=``;
see :mod:`.inputs` for shapes and :data:`nnunet_losses.maps.declared_kinds.DECLARED_MAP_KINDS` for
the kinds), computed in float32, also under autocast, without host synchronisation
(except the centroid loss). Each has a functional form with the same options
(``soft_dice_loss(logits, target, mask=None, *, ...)``, kornia style) and, where it is
defined, ``reduction="mean" | "sum" | "none"``.

Region-wise family (:mod:`.region_wise`): :class:`RegionWiseLoss` /
:func:`region_wise_map_loss` (RRW, class-emphasis RRW, RW-Boundary, AC, Cao maps),
:func:`region_wise_loss` (any full map), :class:`BoundaryLoss` (Kervadec),
:class:`OneSidedHausdorffLoss` (Karimi).
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
from .centroid import CentroidDistanceLoss, centroid_distance_loss
from .common_support import (
    CommonSupportBoundaryLoss,
    CommonSupportDiceLoss,
    common_support_boundary_loss,
    common_support_dice_loss,
    common_support_mask,
)
from .composite import CompositeLoss
from .cross_entropy import (
    CrossEntropyLoss,
    FocalLoss,
    RRWWeightedCrossEntropyLoss,
    cross_entropy_loss,
    focal_loss,
    rrw_weighted_cross_entropy_loss,
)
from .inputs import LossInput, Reduction, masked_mean
from .overlap import (
    AsymmetricFBetaLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    SoftDiceLoss,
    TverskyLoss,
    asymmetric_f_beta_loss,
    focal_tversky_loss,
    generalized_dice,
    generalized_dice_loss,
    soft_dice_loss,
    tversky_loss,
)
from .region_wise import (
    BoundaryLoss,
    OneSidedHausdorffLoss,
    RegionWiseLoss,
    boundary_loss,
    one_sided_hausdorff_loss,
    region_wise_loss,
    region_wise_map_loss,
    rrw_from_compact,
)

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
    "Reduction",
    "RegionWiseLoss",
    "SegmentationLoss",
    "SoftDiceLoss",
    "TverskyLoss",
    "asymmetric_f_beta_loss",
    "boundary_loss",
    "centroid_distance_loss",
    "common_support_boundary_loss",
    "common_support_dice_loss",
    "common_support_mask",
    "cross_entropy_loss",
    "focal_loss",
    "focal_tversky_loss",
    "generalized_dice",
    "generalized_dice_loss",
    "masked_mean",
    "one_sided_hausdorff_loss",
    "region_wise_loss",
    "region_wise_map_loss",
    "rrw_from_compact",
    "rrw_weighted_cross_entropy_loss",
    "soft_dice_loss",
    "tversky_loss",
]

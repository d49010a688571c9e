"""Region-wise loss and the losses it generalises (Valverde et al., "Region-wise loss for
biomedical image segmentation"; ``docs/losses.md#region-wise-loss``, maps in ``docs/maps.md``).

* RW loss (eq. 1): ``L_RW = mean_{b,k,i} z[b,k,i] * s[b,k,i]`` with ``s = softmax(x)`` and
  a map ``z`` computed from the ground truth only. The plain mean over ``B*C*N`` matches
  the reference implementation, so values are comparable. Gradient (eq. 2):
  ``dL/dx_k = s_k (z_k - sum_j z_j s_j) / (B C N)``.
* Kervadec's boundary loss (Kervadec et al., "Boundary loss for highly unbalanced
  segmentation"): ``L_B = mean(phi_G * s)`` over the selected classes, with ``phi_G`` the
  signed distance map. Over all classes it equals RW loss with the RW-Boundary map
  (Prop. 2). Negative at the optimum; combine it with a regional loss.
* Karimi & Salcudean's one-sided HD loss ("Reducing the Hausdorff distance in medical
  image segmentation with convolutional neural networks"): ``mean((s - g)^2 * D^alpha)``,
  ``D`` the unsigned distance to the class boundary, ``alpha = 2`` (Prop. 3: RW loss with
  squared softmax error).

``include_background=False`` drops class 0 from the mean (Kervadec's code scores the
foreground classes). ``reduction="none"``: each sample's share of the voxel mean
(its own mean when no voxel is masked; :func:`~.inputs.voxel_mean`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .base import SegmentationLoss, functional_form
from .inputs import LossInput, Reduction, at_least_float32, float32_math, voxel_mean

RWMapName = Literal["rrw", "class_emphasis_rrw", "rw_boundary", "ac", "cao"]

_MAPS_NEEDED: dict[str, tuple[str, ...]] = {
    "rrw": ("rrw",),
    "class_emphasis_rrw": ("rrw",),
    "rw_boundary": ("signed_distance",),
    "ac": (),
    "cao": (),
}


def region_wise_loss(logits: Tensor, rw_map: Tensor, mask: Tensor | None = None, *, reduction: Reduction = "mean") -> Tensor:
    """RW loss with any full map ``z`` of the logits' shape: ``mean_{b,k,i} z * softmax(x)``.

    With a mask ``(B, 1, *spatial)``, the mean runs over valid voxels only.
    """
    if rw_map.shape != logits.shape:
        raise ValueError(f"rw_map shape {tuple(rw_map.shape)} must equal logits shape {tuple(logits.shape)}")
    with float32_math(logits.device):
        logits = at_least_float32(logits)
        probs = torch.softmax(logits, dim=1)
        return voxel_mean(rw_map.to(logits.dtype) * probs, None if mask is None else mask.to(logits.dtype), reduction)


def rrw_from_compact(rrw: Tensor, onehot: Tensor) -> Tensor:
    """Full RRW map from its compact channel: ``z = v`` at the true class, 1 elsewhere."""
    return 1.0 + onehot * (rrw - 1.0)


def signed_distance_with_shift(signed_distance: Tensor, onehot: Tensor, kervadec_shift: bool) -> Tensor:
    """The RW-Boundary map, optionally with Kervadec's inner shift (+1 inside each class)."""
    return signed_distance + onehot if kervadec_shift else signed_distance


def _check_rw_options(map: str, class_weights: Sequence[float] | None) -> None:
    if map not in _MAPS_NEEDED:
        raise ValueError(f"unknown RW map {map!r}; valid maps: {sorted(_MAPS_NEEDED)}")
    if (map == "class_emphasis_rrw") != (class_weights is not None):
        raise ValueError("class_weights are required for, and only for, map='class_emphasis_rrw'")
    if class_weights is not None and not all(w > 0 for w in class_weights):
        raise ValueError(f"class_weights must be positive, got {list(class_weights)}")


def build_rw_map(batch: LossInput, map: RWMapName, class_weights: Tensor | None = None, kervadec_shift: bool = False) -> Tensor:
    """The RW map ``z`` (B, C, *spatial) named ``map`` for this batch."""
    g = batch.onehot
    if map == "ac":
        return 1.0 - g
    if map == "cao":
        return 1.0 - 2.0 * g
    if map == "rw_boundary":
        return signed_distance_with_shift(batch.require_map("signed_distance"), g, kervadec_shift)
    z = rrw_from_compact(batch.require_map("rrw"), g)
    if map == "class_emphasis_rrw":
        if len(class_weights) != batch.num_classes:
            raise ValueError(f"{len(class_weights)} class_weights for {batch.num_classes} classes")
        z = z * class_weights.to(z.device)[batch.labels].unsqueeze(1)
    return z


def region_wise_of_batch(
    batch: LossInput, map: RWMapName, class_weights: Tensor | None = None, kervadec_shift: bool = False, reduction: Reduction = "mean"
) -> Tensor:
    """``mean(z * s)`` with the map named ``map``."""
    return batch.voxel_mean(build_rw_map(batch, map, class_weights, kervadec_shift) * batch.probs, reduction)


def _classes(t: Tensor, include_background: bool) -> Tensor:
    return t if include_background else t[:, 1:]


def boundary_of_batch(batch: LossInput, include_background: bool = True, kervadec_shift: bool = False, reduction: Reduction = "mean") -> Tensor:
    """``mean(phi_G * s)`` over the selected classes."""
    phi = signed_distance_with_shift(batch.require_map("signed_distance"), batch.onehot, kervadec_shift)
    return batch.voxel_mean(_classes(phi * batch.probs, include_background), reduction)


def one_sided_hausdorff_of_batch(batch: LossInput, alpha: float = 2.0, include_background: bool = True, reduction: Reduction = "mean") -> Tensor:
    """``mean((s - g)^2 |phi_G|^alpha)`` over the selected classes."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    distance = batch.require_map("signed_distance").abs().pow(alpha)
    error = (batch.probs - batch.onehot).square()
    return batch.voxel_mean(_classes(error * distance, include_background), reduction)


class RegionWiseLoss(SegmentationLoss):
    """RW loss with a named map built from the given maps and the target.

    Maps: ``"rrw"`` (rectified RW, eq. 4; reads ``rrw``), ``"class_emphasis_rrw"`` (RRW
    with each voxel's vector scaled by ``class_weights[y_i]``, §3.3; reads ``rrw``),
    ``"rw_boundary"`` (eq. 3, Kervadec's signed distance, optionally with his inner
    shift; reads ``signed_distance``), ``"ac"`` (``1 - g``, Prop. 1) and ``"cao"``
    (``1 - 2g``, Prop. 4). ``loss(logits, target, mask=None, *, rrw=..., signed_distance=...)``
    takes exactly the map its ``map`` reads (:attr:`required_maps`).
    """

    def __init__(
        self,
        map: RWMapName = "rrw",
        class_weights: Sequence[float] | None = None,
        kervadec_shift: bool = False,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        _check_rw_options(map, class_weights)
        self.map = map
        self.kervadec_shift = kervadec_shift
        self.required_maps = _MAPS_NEEDED[map]
        self.register_buffer(
            "class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32), persistent=False
        )

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        mask: Tensor | None = None,
        *,
        rrw: Tensor | None = None,
        signed_distance: Tensor | None = None,
    ) -> Tensor:
        return self.call_with_maps(logits, target, mask, rrw=rrw, signed_distance=signed_distance)

    def compute(self, batch: LossInput) -> Tensor:
        return region_wise_of_batch(batch, self.map, self.class_weights, self.kervadec_shift, self.reduction)


class _ReadsSignedDistance(SegmentationLoss):
    """A loss that reads the ``signed_distance`` map, ``(B, C, *spatial)`` in mm."""

    required_maps = ("signed_distance",)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None, *, signed_distance: Tensor | None = None) -> Tensor:
        return self.call_with_maps(logits, target, mask, signed_distance=signed_distance)


class BoundaryLoss(_ReadsSignedDistance):
    """Kervadec's boundary (surface) loss ``L_B = mean(phi_G * s)`` (reads ``signed_distance``).

    ``include_background=True`` (default) uses all classes (then ``L_B`` equals RW loss with
    the RW-Boundary map); Kervadec's code uses the foreground classes
    (``include_background=False``). ``kervadec_shift`` as in :class:`RegionWiseLoss`.
    """

    def __init__(self, include_background: bool = True, kervadec_shift: bool = False, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.include_background = include_background
        self.kervadec_shift = kervadec_shift

    def compute(self, batch: LossInput) -> Tensor:
        return boundary_of_batch(batch, self.include_background, self.kervadec_shift, self.reduction)


class OneSidedHausdorffLoss(_ReadsSignedDistance):
    """Karimi & Salcudean's one-sided HD loss ``mean((s - g)^2 * D^alpha)`` (alpha = 2).

    ``D = |phi_G|`` is the unsigned distance (mm) to the boundary of each class
    (:func:`~nnunet_losses.maps.boundary_distance_map`), derived here from the
    ``signed_distance`` map. Absent classes have ``D = 0`` and contribute nothing.
    """

    def __init__(self, alpha: float = 2.0, include_background: bool = True, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.include_background = include_background

    def compute(self, batch: LossInput) -> Tensor:
        return one_sided_hausdorff_of_batch(batch, self.alpha, self.include_background, self.reduction)


region_wise_map_loss = functional_form(RegionWiseLoss, "region_wise_map_loss")
boundary_loss = functional_form(BoundaryLoss, "boundary_loss")
one_sided_hausdorff_loss = functional_form(OneSidedHausdorffLoss, "one_sided_hausdorff_loss")

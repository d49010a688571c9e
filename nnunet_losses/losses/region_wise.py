"""Region-wise loss and the losses it generalises (Valverde et al., RW paper; SPEC §1-2).

* RW loss (eq. 1): ``L_RW = mean_{b,k,i} z[b,k,i] * s[b,k,i]`` with ``s = softmax(x)`` and
  a map ``z`` computed from the ground truth only. The plain mean over ``B*C*N`` matches
  the reference implementation, so values are comparable. Gradient (eq. 2):
  ``dL/dx_k = s_k (z_k - sum_j z_j s_j) / (B C N)``.
* Kervadec's boundary loss: ``L_B = mean(phi_G * s)`` over the selected classes, with
  ``phi_G`` the signed distance map. Over all classes it equals RW loss with the
  RW-Boundary map (Prop. 2). Negative at the optimum; combine it with a regional loss.
* Karimi's one-sided HD loss: ``mean((s - g)^2 * D^alpha)``, ``D`` the unsigned distance
  to the class boundary, ``alpha = 2`` (Prop. 3: RW loss with squared softmax error).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .base import SegmentationLoss
from .inputs import LossInput, at_least_float32, float32_math, masked_mean

RWMapName = Literal["rrw", "class_emphasis_rrw", "rw_boundary", "ac", "cao"]

_MAPS_NEEDED: dict[str, tuple[str, ...]] = {
    "rrw": ("rrw",),
    "class_emphasis_rrw": ("rrw",),
    "rw_boundary": ("signed_distance",),
    "ac": (),
    "cao": (),
}


def region_wise_loss(logits: Tensor, rw_map: Tensor, mask: Tensor | None = None) -> Tensor:
    """RW loss with any map ``z`` of the logits' shape: ``mean_{b,k,i} z * softmax(x)``.

    With a mask ``(B, 1, *spatial)``, the mean runs over valid voxels only.
    """
    if rw_map.shape != logits.shape:
        raise ValueError(f"rw_map shape {tuple(rw_map.shape)} must equal logits shape {tuple(logits.shape)}")
    with float32_math(logits.device):
        logits = at_least_float32(logits)
        probs = torch.softmax(logits, dim=1)
        return masked_mean(rw_map.to(logits.dtype) * probs, None if mask is None else mask.to(logits.dtype))


def rrw_from_compact(rrw: Tensor, onehot: Tensor) -> Tensor:
    """Full RRW map from its compact channel: ``z = v`` at the true class, 1 elsewhere."""
    return 1.0 + onehot * (rrw - 1.0)


def signed_distance_with_shift(signed_distance: Tensor, onehot: Tensor, kervadec_shift: bool) -> Tensor:
    """The RW-Boundary map, optionally with Kervadec's inner shift (+1 inside each class)."""
    return signed_distance + onehot if kervadec_shift else signed_distance


class RegionWiseLoss(SegmentationLoss):
    """RW loss with a named map built from the stored maps and the target.

    Maps: ``"rrw"`` (rectified RW, eq. 4; needs ``rrw``), ``"class_emphasis_rrw"`` (RRW
    with each voxel's vector scaled by ``class_weights[y_i]``, §3.3; needs ``rrw``),
    ``"rw_boundary"`` (eq. 3, Kervadec's signed distance, optionally with his inner
    shift; needs ``signed_distance``), ``"ac"`` (``1 - g``, Prop. 1) and ``"cao"``
    (``1 - 2g``, Prop. 4).
    """

    def __init__(
        self,
        map: RWMapName = "rrw",
        class_weights: Sequence[float] | None = None,
        kervadec_shift: bool = False,
    ) -> None:
        super().__init__()
        if map not in _MAPS_NEEDED:
            raise ValueError(f"unknown RW map {map!r}; valid maps: {sorted(_MAPS_NEEDED)}")
        if (map == "class_emphasis_rrw") != (class_weights is not None):
            raise ValueError("class_weights are required for, and only for, map='class_emphasis_rrw'")
        if class_weights is not None and not all(w > 0 for w in class_weights):
            raise ValueError(f"class_weights must be positive, got {list(class_weights)}")
        self.map = map
        self.kervadec_shift = kervadec_shift
        self.required_maps = _MAPS_NEEDED[map]
        self.register_buffer(
            "class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32), persistent=False
        )

    def build_map(self, batch: LossInput) -> Tensor:
        """The RW map ``z`` (B, C, *spatial) for this batch."""
        g = batch.onehot
        if self.map == "ac":
            return 1.0 - g
        if self.map == "cao":
            return 1.0 - 2.0 * g
        if self.map == "rw_boundary":
            return signed_distance_with_shift(batch.require_map("signed_distance"), g, self.kervadec_shift)
        z = rrw_from_compact(batch.require_map("rrw"), g)
        if self.map == "class_emphasis_rrw":
            if len(self.class_weights) != batch.num_classes:
                raise ValueError(f"{len(self.class_weights)} class_weights for {batch.num_classes} classes")
            z = z * self.class_weights.to(z.device)[batch.labels].unsqueeze(1)
        return z

    def compute(self, batch: LossInput) -> Tensor:
        return batch.masked_mean(self.build_map(batch) * batch.probs)


def _select(t: Tensor, classes: Sequence[int] | None) -> Tensor:
    return t if classes is None else t[:, list(classes)]


class BoundaryLoss(SegmentationLoss):
    """Kervadec's boundary (surface) loss ``L_B = mean(phi_G * s)`` over ``classes``.

    ``classes=None`` uses all classes (then ``L_B`` equals RW loss with the RW-Boundary
    map); Kervadec's code uses the foreground classes (e.g. ``classes=[1]``). Needs the
    ``signed_distance`` map; ``kervadec_shift`` as in :class:`RegionWiseLoss`.
    """

    required_maps = ("signed_distance",)

    def __init__(self, classes: Sequence[int] | None = None, kervadec_shift: bool = False) -> None:
        super().__init__()
        self.classes = None if classes is None else list(classes)
        self.kervadec_shift = kervadec_shift

    def compute(self, batch: LossInput) -> Tensor:
        phi = signed_distance_with_shift(batch.require_map("signed_distance"), batch.onehot, self.kervadec_shift)
        return batch.masked_mean(_select(phi, self.classes) * _select(batch.probs, self.classes))


class OneSidedHausdorffLoss(SegmentationLoss):
    """Karimi & Salcudean's one-sided HD loss ``mean((s - g)^2 * D^alpha)`` (alpha = 2).

    ``D = |phi_G|`` is the unsigned distance (mm) to the boundary of each class
    (:func:`~nnunet_losses.maps.boundary_distance_map`), derived here from the
    ``signed_distance`` map. Absent classes have ``D = 0`` and contribute nothing.
    """

    required_maps = ("signed_distance",)

    def __init__(self, alpha: float = 2.0, classes: Sequence[int] | None = None) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.classes = None if classes is None else list(classes)

    def compute(self, batch: LossInput) -> Tensor:
        distance = batch.require_map("signed_distance").abs().pow(self.alpha)
        error = (batch.probs - batch.onehot).square()
        return batch.masked_mean(_select(error * distance, self.classes))

"""The loss object a trainer hands to nnU-Net: ``loss(output, target)`` as nnU-Net calls it.

nnU-Net's ``train_step`` and ``validation_step`` call ``self.loss(output, target)``,
with lists over deep-supervision scales when it is on. The maps cannot travel through
that call, so the trainer hands them over just before (:meth:`attach_maps`), and
:class:`NnUNetLoss` applies the package loss at every scale with nnU-Net's own
deep-supervision weights, the ignore-label mask, and the maps of that scale.

In the device mode the trainer makes those maps itself, right before handing them
over: :func:`device_maps` computes them from the final target of every scale, on the
device the target is on.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..losses import CompositeLoss
from ..maps.device import device_map_stack
from .map_layout import MapLayout


@torch.no_grad()
def device_maps(
    segmentations: Sequence[Tensor],
    layout: MapLayout,
    spacing: Sequence[float],
    ignore_label: int | None,
    scales: Sequence[Sequence[float]],
) -> list[Tensor]:
    """The stacked maps of ``layout`` (``(B, channels, *spatial)``) of each scale's target, on its device.

    ``segmentations[i]`` is nnU-Net's ``(B, 1, *spatial)`` target of scale ``scales[i]``.
    Each map is computed on the patch as it is (:func:`nnunet_losses.maps.device.device_map_stack`,
    equal to :func:`.map_layout.compute_map_stack` per sample): RRW normalised by the
    patch's per-class maximum, as the RW reference code does; signed distances in mm of
    the spacing ``spacing / scale`` (a target voxel of scale ``f`` spans ``1 / f`` patch
    voxels; the convention of every map mode, see :mod:`.transforms`).
    """
    if len(segmentations) != len(scales):
        raise RuntimeError(f"{len(segmentations)} target scales but {len(scales)} deep-supervision scales")
    stacks = []
    for segmentation, scale in zip(segmentations, scales):
        patch_spacing = torch.tensor([s / f for s, f in zip(spacing, scale)], dtype=torch.float64, device=segmentation.device)
        maps = device_map_stack(segmentation, layout.kinds, layout.num_classes, ignore_label, patch_spacing.expand(segmentation.shape[0], -1))
        stacks.append(torch.cat([maps[kind] for kind in layout.kinds], dim=1))
    return stacks


class NnUNetLoss(nn.Module):
    """Deep-supervised, ignore-label-aware wrapper of a :class:`CompositeLoss`.

    ``total = sum_s w_s * L(output_s, target_s, mask_s, maps_s)`` over scales ``s`` with
    ``w_s != 0`` (``w`` from nnU-Net's ``_build_loss``; a single scale without deep
    supervision). :attr:`last_values` holds each term's value combined the same way.
    """

    def __init__(
        self,
        loss: CompositeLoss,
        deep_supervision_weights: Sequence[float] | None,
        ignore_label: int | None,
        layout: MapLayout | None,
    ) -> None:
        super().__init__()
        self.loss = loss
        self.weights = tuple(deep_supervision_weights) if deep_supervision_weights is not None else (1.0,)
        self.ignore_label = ignore_label
        self.layout = layout
        self._maps: list[Tensor] | None = None
        self.last_values: dict[str, Tensor] = {}

    def attach_maps(self, maps: list[Tensor]) -> None:
        """Maps (one stacked tensor per scale) for the next call."""
        self._maps = maps

    def forward(self, output: Tensor | list[Tensor], target: Tensor | list[Tensor]) -> Tensor:
        outputs = output if isinstance(output, (list, tuple)) else [output]
        targets = target if isinstance(target, (list, tuple)) else [target]
        maps, self._maps = self._maps, None
        if self.layout is not None and maps is None:
            raise RuntimeError("the maps of this batch were not attached before the loss was called")
        total: Tensor | None = None
        values: dict[str, Tensor] = {}
        for scale, (weight, out, tgt) in enumerate(zip(self.weights, outputs, targets)):
            if weight == 0:
                continue
            mask = None if self.ignore_label is None else tgt != self.ignore_label
            scale_maps = {} if self.layout is None else self.layout.split(maps[scale].to(out.device, non_blocking=True))
            term = weight * self.loss(out, tgt, mask=mask, **scale_maps)
            total = term if total is None else total + term
            for name, value in self.loss.last_values.items():
                values[name] = values.get(name, 0.0) + weight * value
        self.last_values = values
        return total if total is not None else torch.zeros((), device=outputs[0].device)


@dataclass(frozen=True)
class SingleTermView:
    """What the trainer reads from a composite loss (``terms``, ``weights``) for a loss that is one term."""

    terms: dict[str, nn.Module]
    weights: dict[str, float]


class NnUNetOwnLoss(nn.Module):
    """nnU-Net's own loss object, called unchanged, logged as one term of weight 1.

    ``loss(output, target)`` returns exactly what ``native(output, target)`` returns (the
    object ``nnUNetTrainer._build_loss`` built: Dice + CE with nnU-Net's ``soft_dice_kwargs``,
    ignore label and deep-supervision wrapper, computed under nnU-Net's autocast as in
    ``nnUNetTrainer``); :attr:`last_values` holds that total under ``name`` and ``loss``
    reads like :class:`NnUNetLoss`'s composite, so the trainer's per-epoch logging, run
    record and divergence check treat it as a one-term loss.
    """

    def __init__(self, native: nn.Module, name: str) -> None:
        super().__init__()
        self.native = native
        self.loss = SingleTermView({name: native}, {name: 1.0})
        self.name = name
        self.last_values: dict[str, Tensor] = {}

    def forward(self, output: Tensor | list[Tensor], target: Tensor | list[Tensor]) -> Tensor:
        total = self.native(output, target)
        self.last_values = {self.name: total.detach()}
        return total

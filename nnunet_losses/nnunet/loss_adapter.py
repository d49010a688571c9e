"""The loss object a trainer hands to nnU-Net: ``loss(output, target)`` as nnU-Net calls it.

nnU-Net's ``train_step`` and ``validation_step`` call ``self.loss(output, target)``,
with lists over deep-supervision scales when it is on. The maps cannot travel through
that call, so the trainer hands them over just before (:meth:`attach_maps`), and
:class:`NnUNetLoss` applies the package loss at every scale with nnU-Net's own
deep-supervision weights, the ignore-label mask, and the maps of that scale.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..losses import CompositeLoss
from .map_layout import MapLayout


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

"""The loss object a trainer hands to nnU-Net: ``loss(output, target)`` as nnU-Net calls it.

nnU-Net's ``train_step`` and ``validation_step`` call ``self.loss(output, target)``,
with lists over deep-supervision scales when it is on. :class:`NnUNetLoss` applies the
package loss at every scale with nnU-Net's own deep-supervision weights, the
ignore-label mask, and the maps of that scale, which the trainer hands over for the
one step it runs (:meth:`NnUNetLoss.carrying`; how they get there: :mod:`.map_transport`).

:func:`build_package_loss` builds it from a trainer's terms and weights (fixed numbers or
a schedule) and, where nnU-Net compiles its own loss, compiles the terms as nnU-Net
compiles its Dice term (``loss.dc = torch.compile(loss.dc)`` in ``_build_loss``): each
term's computation is compiled, the weighting, the schedule and the logging around it
stay Python.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..losses import CompositeLoss, SegmentationLoss
from ..schedules import WeightSchedule
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
        schedule: WeightSchedule | None = None,
    ) -> None:
        super().__init__()
        self.loss = loss
        self.weights = tuple(deep_supervision_weights) if deep_supervision_weights is not None else (1.0,)
        self.ignore_label = ignore_label
        self.layout = layout
        self.schedule = schedule
        self._maps: list[Tensor] | None = None
        self.last_values: dict[str, Tensor] = {}

    @contextmanager
    def carrying(self, maps: list[Tensor] | None) -> Iterator[None]:
        """Within the block, calls use ``maps`` (one stacked tensor per scale); they are dropped when it ends."""
        self._maps = maps
        try:
            yield
        finally:
            self._maps = None

    def forward(self, output: Tensor | list[Tensor], target: Tensor | list[Tensor]) -> Tensor:
        outputs = output if isinstance(output, (list, tuple)) else [output]
        targets = target if isinstance(target, (list, tuple)) else [target]
        maps = self._maps
        if self.layout is not None and maps is None:
            raise RuntimeError("this loss needs maps: call it within NnUNetLoss.carrying(maps)")
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

    layout = None
    schedule = None

    def __init__(self, native: nn.Module, name: str) -> None:
        super().__init__()
        self.native = native
        self.loss = SingleTermView({name: native}, {name: 1.0})
        self.name = name
        self.last_values: dict[str, Tensor] = {}

    @contextmanager
    def carrying(self, maps: None) -> Iterator[None]:
        """nnU-Net's loss reads no maps."""
        yield

    def forward(self, output: Tensor | list[Tensor], target: Tensor | list[Tensor]) -> Tensor:
        total = self.native(output, target)
        self.last_values = {self.name: total.detach()}
        return total


def compile_terms(loss: CompositeLoss) -> None:
    """``torch.compile`` each term's computation in place (``fullgraph=False``, as nnU-Net compiles ``loss.dc``)."""
    for term in loss.terms.values():
        term.compute = torch.compile(term.compute)


def build_package_loss(
    terms: Mapping[str, SegmentationLoss],
    weights: WeightSchedule | Mapping[str, float],
    deep_supervision_weights: Sequence[float] | None,
    ignore_label: int | None,
    num_classes: int,
    compiled: bool,
) -> NnUNetLoss:
    """The loss nnU-Net calls: ``sum_j w_j L_j`` of ``terms`` at every deep-supervision scale.

    ``weights`` is fixed numbers or a :class:`~nnunet_losses.schedules.WeightSchedule`
    (kept as :attr:`NnUNetLoss.schedule`); the maps the terms need (their
    ``required_maps``) give :attr:`NnUNetLoss.layout` (``None`` when no term reads maps).
    """
    composite = CompositeLoss(dict(terms), weights)
    if compiled:
        compile_terms(composite)
    kinds = composite.required_maps
    layout = MapLayout(kinds, num_classes) if kinds else None
    schedule = weights if isinstance(weights, WeightSchedule) else None
    return NnUNetLoss(composite, deep_supervision_weights, ignore_label, layout, schedule)

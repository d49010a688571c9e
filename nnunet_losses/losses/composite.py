"""Weighted sums of loss terms, with weights from a fixed mapping or a schedule."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from torch import Tensor, nn

from .base import SegmentationLoss
from .inputs import LossInput


class WeightSource(Protocol):
    """Anything with a ``weights`` mapping, e.g. a :mod:`nnunet_losses.schedules` schedule."""

    @property
    def weights(self) -> Mapping[str, float]: ...


class CompositeLoss(SegmentationLoss):
    """``L = sum_j w_j L_j`` over named terms that share one prepared batch.

    ``weights`` is a mapping name -> weight or an object whose ``weights`` property gives
    it (read at every call, so a schedule can change it between epochs). Every term is
    computed at every call, also with weight 0, because adaptive schedules and the
    training log need all values; :attr:`last_values` holds them (detached).

    ``loss(logits, target, mask=None, **maps)`` takes the union of the maps its terms read
    (:attr:`required_maps`), validates and converts them once, and hands each term the
    prepared batch with only the maps that term reads (softmax and one-hot shared). The result has the shape of the terms' results (a scalar, or ``(B,)`` when
    every term has ``reduction="none"``).
    """

    def __init__(self, terms: Mapping[str, SegmentationLoss], weights: Mapping[str, float] | WeightSource) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a composite loss needs at least one term")
        self.terms = nn.ModuleDict(terms)
        self.weight_source = weights
        self.required_maps = tuple(dict.fromkeys(m for t in terms.values() for m in t.required_maps))
        self.last_values: dict[str, Tensor] = {}

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None, **maps: Tensor | None) -> Tensor:
        return self.call_with_maps(logits, target, mask, **maps)

    @property
    def weights(self) -> dict[str, float]:
        source = self.weight_source
        weights = dict(source if isinstance(source, Mapping) else source.weights)
        if set(weights) != set(self.terms):
            raise ValueError(f"weights are given for {sorted(weights)} but the terms are {sorted(self.terms)}")
        return weights

    def compute(self, batch: LossInput) -> Tensor:
        weights = self.weights
        values = {name: term.compute(batch.only_maps(term.required_maps)) for name, term in self.terms.items()}
        self.last_values = {name: value.detach() for name, value in values.items()}
        return torch.stack([weights[name] * value for name, value in values.items()]).sum(0)

"""Validated, float32 inputs shared by every loss of the package.

Every loss takes logits ``x`` of shape ``(B, C, *spatial)`` (C >= 2 classes, background
is class 0), an integer-valued target of shape ``(B, 1, *spatial)`` or ``(B, *spatial)``
(nnU-Net's layout), an optional voxel ``mask`` of the target's shape (1 or True = voxel
counts; nnU-Net's ignore label and padding) and, for map-based losses, the maps
``rrw`` ``(B, 1, *spatial)`` and/or ``signed_distance`` ``(B, C, *spatial)`` (see
:mod:`nnunet_losses.maps.kinds`).

:class:`LossInput` validates all of this once, casts to float32 (also under fp16
autocast) and caches the softmax and the one-hot target, so that several terms of a
compound loss share them.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

MAP_CHANNELS = {"rrw": "one", "signed_distance": "per_class"}


@contextmanager
def float32_math(device: torch.device) -> Iterator[None]:
    """Disable autocast so that the loss is computed in float32 even under AMP."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def at_least_float32(t: Tensor) -> Tensor:
    """Half-precision tensors as float32; float32 and float64 unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _as_channel_tensor(name: str, t: Tensor, batch: int, spatial: tuple[int, ...]) -> Tensor:
    """Bring a ``(B, *spatial)`` or ``(B, 1, *spatial)`` tensor to ``(B, 1, *spatial)``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) == (batch, *spatial):
        t = t.unsqueeze(1)
    if tuple(t.shape) != (batch, 1, *spatial):
        raise ValueError(f"{name} must have shape (B, 1, *spatial) = {(batch, 1, *spatial)} or (B, *spatial), got {tuple(t.shape)}")
    return t


@dataclass
class LossInput:
    """Logits, labels, mask and maps of one batch, validated and in float32 (or float64)."""

    logits: Tensor
    labels: Tensor
    mask: Tensor | None
    maps: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        logits: Tensor,
        target: Tensor,
        mask: Tensor | None = None,
        maps: Mapping[str, Tensor | None] | None = None,
    ) -> LossInput:
        """Validate and convert; raises ``ValueError``/``TypeError`` naming what is wrong.

        Target values must be integers in ``[0, C)`` wherever the mask is set; masked-out
        voxels may hold anything (e.g. nnU-Net's ignore label) and are treated as class 0
        with zero weight.
        """
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            raise TypeError("logits must be a floating-point torch.Tensor of shape (B, C, *spatial)")
        logits = at_least_float32(logits)
        if logits.ndim < 3:
            raise ValueError(f"logits must have shape (B, C, *spatial), got {tuple(logits.shape)}")
        batch, num_classes, *spatial = logits.shape
        if num_classes < 2:
            raise ValueError(f"logits need at least 2 channels (background counts as a class), got {num_classes}")
        spatial = tuple(spatial)
        target = _as_channel_tensor("target", target, batch, spatial)
        if target.is_floating_point() and not torch.equal(target, torch.round(target)):
            raise ValueError("target must hold integer class labels")
        labels = target[:, 0].long()
        valid_mask = None
        if mask is not None:
            valid_mask = _as_channel_tensor("mask", mask, batch, spatial).to(device=logits.device, dtype=logits.dtype)
            labels = torch.where(valid_mask[:, 0] > 0, labels, torch.zeros_like(labels))
        low, high = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"target labels must lie in [0, {num_classes}) (logits have {num_classes} channels), found [{low}, {high}]; "
                "pass mask= to exclude ignored voxels"
            )
        checked_maps = {}
        for name, value in (maps or {}).items():
            if value is None:
                continue
            if name not in MAP_CHANNELS:
                raise ValueError(f"unknown map {name!r}; known maps: {sorted(MAP_CHANNELS)}")
            channels = 1 if MAP_CHANNELS[name] == "one" else num_classes
            if not isinstance(value, Tensor) or tuple(value.shape) != (batch, channels, *spatial):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"map {name!r} must have shape {(batch, channels, *spatial)}, got {shape}")
            checked_maps[name] = value.to(device=logits.device, dtype=logits.dtype)
        return cls(logits, labels.to(logits.device), valid_mask, checked_maps)

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    @cached_property
    def probs(self) -> Tensor:
        """Softmax over the class axis."""
        return torch.softmax(self.logits, dim=1)

    @cached_property
    def log_probs(self) -> Tensor:
        """Log-softmax over the class axis (numerically stable)."""
        return torch.log_softmax(self.logits, dim=1)

    @cached_property
    def onehot(self) -> Tensor:
        """One-hot target ``g`` (B, C, *spatial) in the logits' dtype; masked-out voxels are class 0."""
        g = torch.zeros_like(self.logits)
        return g.scatter_(1, self.labels.unsqueeze(1), 1.0)

    def require_map(self, name: str) -> Tensor:
        """The named map, or a ``ValueError`` that says how to provide it."""
        if name not in self.maps:
            raise ValueError(
                f"this loss needs the {name!r} map: pass {name}=... (shape (B, "
                f"{'1' if MAP_CHANNELS[name] == 'one' else 'C'}, *spatial)); in nnU-Net, run setup_maps.py or use the trainer's on-the-fly mode"
            )
        return self.maps[name]

    def masked_mean(self, values: Tensor) -> Tensor:
        """:func:`masked_mean` with this batch's mask."""
        return masked_mean(values, self.mask)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` (B, K, *spatial) over batch, channels and valid voxels.

    ``sum(values * m) / (K * sum(m))`` with ``m`` of shape (B, 1, *spatial); equals the
    plain mean without a mask. An all-masked batch gives 0 (gradient 0), never NaN.
    """
    if mask is None:
        return values.mean()
    weighted = (values * mask).sum()
    count = mask.sum() * values.shape[1]
    return weighted / count.clamp_min(1.0)


def spatial_axes(t: Tensor) -> tuple[int, ...]:
    """The spatial axes of a ``(B, C, *spatial)`` tensor."""
    return tuple(range(2, t.ndim))

"""Validated, float32 inputs shared by every loss of the package, and the reductions.

Every loss takes logits ``x`` of shape ``(B, C, *spatial)`` (C >= 2 classes, background
is class 0), an integer-valued target of shape ``(B, 1, *spatial)`` or ``(B, *spatial)``
(nnU-Net's layout), an optional voxel ``mask`` of the target's shape (1 or True = voxel
counts; nnU-Net's ignore label and padding) and, only on the losses that read them, the
maps declared in :data:`nnunet_losses.maps.declared_kinds.DECLARED_MAP_KINDS` (``docs/maps.md``):

* ``rrw``: the compact one-channel map ``(B, 1, *spatial)``
  (:func:`nnunet_losses.maps.rrw_compact`, what ``setup_maps.py`` stores) or the full RRW
  map ``(B, C, *spatial)`` (:func:`nnunet_losses.maps.rrw_map`); a full map is reduced
  to the compact one by reading it at each voxel's true class;
* ``signed_distance``: ``(B, C, *spatial)``, mm (:func:`nnunet_losses.maps.signed_distance_map`).

:class:`LossInput` validates all of this once per call of a loss (once per call of a
:class:`~.composite.CompositeLoss` for all its terms, each of which then sees only the maps
it reads, :meth:`LossInput.only_maps`), casts to float32 (also under fp16 autocast) and
caches the softmax and the one-hot target, so that several terms share them. Maps are
validated and converted only by the losses that read them.

Where each check lives (none of them copies data to the host in steady state):

* types, ``ndim``, shapes, channel counts, dtypes: on every call, from tensor metadata
  (free: no device work, no synchronisation);
* target values (integer labels where the target is floating point; labels in ``[0, C)``
  wherever the mask is set): on the first eager call with a new input signature (shapes,
  dtypes, device, class count, mask or not) a host-side check raises a ``ValueError``
  naming the values found; on every later call, and inside ``torch.compile``, the same
  condition is a device-side assertion (``torch._assert_async``: no synchronisation on
  CUDA, where a failure surfaces as a device-side assert at the next synchronisation; on
  the CPU it raises ``RuntimeError`` with the same message at once);
* map values are not checked (they come from :mod:`nnunet_losses.maps`).

Reductions (``reduction=``, see ``docs/losses.md``): ``"mean"`` is the loss as its paper
defines it over the batch; ``"none"`` gives one value per sample, shape ``(B,)``, whose
mean is ``"mean"``; ``"sum"`` is the sum of those. Losses that pool statistics over the
batch (batch Dice, generalised Dice with batch weights) refuse ``"none"`` and ``"sum"``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ..maps.declared_kinds import DECLARED_MAP_KINDS

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")

# Input signatures whose target values were checked on the host once (see the module docstring).
_CHECKED_SIGNATURES: set[tuple] = set()

# True while torch.compile traces: torch.compiler.is_compiling from torch 2.3, torch._dynamo's before
_is_compiling = getattr(torch.compiler, "is_compiling", None) or (lambda: torch._dynamo.is_compiling())


@contextmanager
def float32_math(device: torch.device) -> Iterator[None]:
    """Disable autocast so that the loss is computed in float32 even under AMP."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def at_least_float32(t: Tensor) -> Tensor:
    """Half-precision tensors as float32; float32 and float64 unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def check_reduction(reduction: str, pooled_over_batch: str | None = None) -> Reduction:
    """``reduction`` if a loss defines it; ``pooled_over_batch`` says why a loss has no per-sample values."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if reduction != "mean" and pooled_over_batch is not None:
        raise ValueError(f"reduction={reduction!r} needs one value per sample, but {pooled_over_batch}; use reduction='mean'")
    return reduction  # type: ignore[return-value]


def reduce_samples(values: Tensor, reduction: Reduction) -> Tensor:
    """Per-sample values ``(B, ...)``: their mean (``"mean"``), per-sample means (``"none"``) or the sum of those."""
    check_reduction(reduction)
    if reduction == "mean":
        return values.mean()
    per_sample = values.flatten(1).mean(1)
    return per_sample if reduction == "none" else per_sample.sum()


def reduce_ratio(numerators: Tensor, denominator: Tensor, reduction: Reduction) -> Tensor:
    """A batch ratio ``sum_b n_b / d`` (``"mean"``) and its per-sample shares ``B n_b / d`` (``"none"``)."""
    check_reduction(reduction)
    if reduction == "mean":
        return numerators.sum() / denominator
    per_sample = numerators * (numerators.shape[0] / denominator)
    return per_sample if reduction == "none" else per_sample.sum()


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` (B, K, *spatial) over batch, channels and valid voxels.

    ``sum(values * m) / (K * sum(m))`` with ``m`` of shape (B, 1, *spatial); equals the
    plain mean without a mask. An all-masked batch gives 0 (gradient 0), never NaN.
    """
    if mask is None:
        return values.mean()
    return (values * mask).sum() / (mask.sum() * values.shape[1]).clamp_min(1.0)


def voxel_mean(values: Tensor, mask: Tensor | None, reduction: Reduction) -> Tensor:
    """:func:`masked_mean` (``"mean"``); ``"none"``: each sample's share ``B sum_b(values m) / (K sum(m))``.

    Without a mask a sample's share is its own voxel mean; with one, samples are weighted
    by their valid voxels as in the batch mean, so the shares average to ``"mean"``.
    """
    if reduction == "mean":
        return masked_mean(values, mask)
    if mask is None:
        return reduce_samples(values, reduction)
    sums = (values * mask).flatten(1).sum(1)
    return reduce_ratio(sums, (mask.sum() * values.shape[1]).clamp_min(1.0), reduction)


def _as_channel_tensor(name: str, t: Tensor, batch: int, spatial: tuple[int, ...]) -> Tensor:
    """Bring a ``(B, *spatial)`` or ``(B, 1, *spatial)`` tensor to ``(B, 1, *spatial)``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) == (batch, *spatial):
        t = t.unsqueeze(1)
    if tuple(t.shape) != (batch, 1, *spatial):
        raise ValueError(f"{name} must have shape (B, 1, *spatial) = {(batch, 1, *spatial)} or (B, *spatial), got {tuple(t.shape)}")
    return t


def _check_target_values(target: Tensor, labels: Tensor, num_classes: int, masked: bool) -> None:
    """Integer target values, labels in ``[0, C)``: on the host once per signature, then on the device."""
    range_message = (
        f"target labels must lie in [0, {num_classes}) (logits have {num_classes} channels) wherever the mask is set; "
        "pass mask= to exclude ignored voxels"
    )
    integer_message = "target must hold integer class labels"
    signature = (tuple(target.shape), target.dtype, target.device, num_classes, masked)
    if _is_compiling() or signature in _CHECKED_SIGNATURES:
        if target.is_floating_point():
            torch._assert_async((target == torch.round(target)).all(), integer_message)
        torch._assert_async(((labels >= 0) & (labels < num_classes)).all(), range_message)
        return
    if target.is_floating_point() and bool((target != torch.round(target)).any()):
        raise ValueError(integer_message)
    low, high = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{range_message}; found [{low}, {high}]")
    _CHECKED_SIGNATURES.add(signature)


def _checked_map(name: str, value: Tensor, batch: int, num_classes: int, spatial: tuple[int, ...]) -> Tensor:
    """A map of the declared shape; ``rrw`` may also be the full ``(B, C, *spatial)`` map."""
    spec = DECLARED_MAP_KINDS[name]
    expected = (batch, spec.num_channels(num_classes), *spatial)
    shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
    full_rrw = name == "rrw" and shape == (batch, num_classes, *spatial)
    if shape != expected and not full_rrw:
        fix = " (the compact map of maps.rrw_compact, or the full map of maps.rrw_map with C channels)" if name == "rrw" else ""
        raise ValueError(f"map {name!r} must have shape {spec.shape_text} = {expected}{fix}, got {shape}")
    return value


@dataclass
class LossInput:
    """Logits, labels, mask and maps of one batch, validated and in float32 (or float64)."""

    logits: Tensor
    labels: Tensor
    mask: Tensor | None
    maps: dict[str, Tensor] = field(default_factory=dict)
    # softmax, log-softmax and one-hot, computed on first use (a plain dict: functools.cached_property
    # takes a lock on Python 3.11, which torch.compile cannot trace)
    _derived: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def prepare(
        cls,
        logits: Tensor,
        target: Tensor,
        mask: Tensor | None = None,
        maps: Mapping[str, Tensor] | None = None,
    ) -> LossInput:
        """Validate and convert; raises ``ValueError``/``TypeError`` naming what is wrong.

        Target values must be integers in ``[0, C)`` wherever the mask is set; masked-out
        voxels may hold anything (e.g. nnU-Net's ignore label) and are treated as class 0
        with zero weight. ``maps`` are the maps a loss reads (names of
        :data:`~nnunet_losses.maps.declared_kinds.DECLARED_MAP_KINDS`).
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
        labels = target[:, 0].long()
        valid_mask = None
        if mask is not None:
            valid_mask = _as_channel_tensor("mask", mask, batch, spatial).to(device=logits.device, dtype=logits.dtype)
            labels = torch.where(valid_mask[:, 0] > 0, labels.to(logits.device), torch.zeros((), dtype=labels.dtype, device=logits.device))
        _check_target_values(target, labels, num_classes, mask is not None)
        labels = labels.to(logits.device)
        checked = {
            name: _checked_map(name, value, batch, num_classes, spatial).to(device=logits.device, dtype=logits.dtype)
            for name, value in (maps or {}).items()
        }
        if "rrw" in checked and checked["rrw"].shape[1] == num_classes:
            checked["rrw"] = checked["rrw"].gather(1, labels.unsqueeze(1))
        return cls(logits, labels, valid_mask, checked)

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    def _derive(self, name: str, make: Callable[[], Tensor]) -> Tensor:
        if name not in self._derived:
            self._derived[name] = make()
        return self._derived[name]

    @property
    def probs(self) -> Tensor:
        """Softmax over the class axis."""
        return self._derive("probs", lambda: torch.softmax(self.logits, dim=1))

    @property
    def log_probs(self) -> Tensor:
        """Log-softmax over the class axis (numerically stable)."""
        return self._derive("log_probs", lambda: torch.log_softmax(self.logits, dim=1))

    @property
    def onehot(self) -> Tensor:
        """One-hot target ``g`` (B, C, *spatial) in the logits' dtype; masked-out voxels are class 0."""
        return self._derive("onehot", lambda: torch.zeros_like(self.logits).scatter_(1, self.labels.unsqueeze(1), 1.0))

    def only_maps(self, names: tuple[str, ...]) -> LossInput:
        """This batch with only the named maps, sharing the softmax and one-hot computed so far and later."""
        view = LossInput(self.logits, self.labels, self.mask, {name: self.maps[name] for name in names if name in self.maps})
        view._derived = self._derived
        return view

    def masked(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Each tensor times the mask (unchanged without one)."""
        return tensors if self.mask is None else tuple(t * self.mask for t in tensors)

    def require_map(self, name: str) -> Tensor:
        """The named map, or a ``ValueError`` that says how to provide it."""
        if name not in self.maps:
            raise ValueError(missing_map_message(name))
        return self.maps[name]

    def voxel_mean(self, values: Tensor, reduction: Reduction = "mean") -> Tensor:
        """:func:`voxel_mean` with this batch's mask."""
        return voxel_mean(values, self.mask, reduction)


def missing_map_message(name: str) -> str:
    """How to provide a map a loss needs."""
    return (
        f"this loss needs the {name!r} map: pass {name}=... (shape {DECLARED_MAP_KINDS[name].shape_text}); "
        "in nnU-Net, run setup_maps.py or use the trainer's on-the-fly mode"
    )

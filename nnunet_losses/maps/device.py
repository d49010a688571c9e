"""The stored map kinds of a whole training batch, computed on the batch's device.

:func:`device_map_stack` gives, for nnU-Net's target of one deep-supervision scale, what
:func:`~nnunet_losses.nnunet.map_layout.compute_map_stack` gives for each sample with its
own spacing (same conventions: ``-1`` is background, the ignore label is an extra class
whose channels are dropped; a class absent from a sample, a class filling it, single
voxels: see :mod:`~nnunet_losses.maps.rw_maps`).

Two transforms (``transform=``; ``"auto"`` picks by device):

* CPU tensors: the ``edt`` package, one multi-label transform per sample, exactly what the
  precomputed and on-the-fly modes compute (:func:`~nnunet_losses.maps.kinds.compute_maps`
  with ``torch.get_num_threads()`` threads). Host code by nature; the fastest exact
  transform on a CPU.
* Any other device (or ``"fused"`` / ``"chunked"`` on a CPU): the PyTorch EDT
  (:func:`~nnunet_losses.maps.torch_edt.distance_to_feature`) of every (sample, class)
  channel of the batch at once. With ``o_k(i) = min_{j : y_j = k} ||i - j||`` the distance
  to class ``k`` (0 inside it, ``inf`` for a class absent from the sample):

  - own-class distance ``d(i) = min_{k != y_i} o_k(i)`` (the nearest voxel of another
    class is the nearest voxel of the closest other class; ``inf`` in a sample holding a
    single class);
  - ``rrw`` (1 channel): ``d(i) / -max_{j : y_j = y_i} d(j)``; -1 where a single class fills
    the sample;
  - ``signed_distance`` (C channels, mm): ``o_k(i)`` outside class ``k``, ``-d(i)`` inside
    it; 0 for an absent class and where a single class fills the sample.

  Absent classes and single-class samples are handled by masking, not by selecting the
  present (sample, class) pairs: the work has no data-dependent shape, so the path runs
  without a host synchronisation (the label-range and spacing checks are device-side
  assertions there) and compiles with ``torch.compile(..., fullgraph=True)``. The price is
  an EDT also for the classes a sample lacks; the output holds a channel per class anyway.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .kinds import MapKind, compute_maps, get_map_kind
from .torch_edt import MinPlus, check_spacing, distance_to_feature, require

Transform = Literal["auto", "edt", "fused", "chunked"]


def device_map_stack(
    segmentation: Tensor,
    kinds: Sequence[str],
    num_classes: int,
    ignore_label: int | None,
    spacing: Tensor,
    transform: Transform = "auto",
) -> dict[str, Tensor]:
    """Maps of each kind for a batch of nnU-Net segmentations, on their device.

    ``segmentation``: (B, 1, *spatial), 2D or 3D, float or integer labels (may hold ``-1``
    and ``ignore_label``); ``spacing``: (B, ndim) mm per sample and axis, on any device (a
    CPU tensor is checked on the host and copied with ``non_blocking=True``). Returns
    ``{kind: (B, channels, *spatial)}`` float32 on ``segmentation``'s device, equal to
    ``compute_map_stack`` of each sample with its spacing. ``transform``: ``"edt"`` (the ``edt`` package on the host), ``"fused"`` or
    ``"chunked"`` (the PyTorch EDT with that min-plus form), ``"auto"`` (``"edt"`` for CPU
    tensors, ``"fused"`` elsewhere).
    """
    map_kinds = [get_map_kind(kind) for kind in kinds]
    labels, classes = _labels_for_maps(segmentation, num_classes, ignore_label)
    check_spacing(spacing, labels.shape[0], labels.ndim - 1, rows_name="B")
    transform = _choose_transform(transform, labels.device)
    if transform == "edt":
        return _edt_map_stack(map_kinds, labels, classes, num_classes, spacing)
    distances = _distances(labels, classes, spacing.to(device=labels.device, dtype=torch.float32, non_blocking=True), transform)
    compute = {"rrw": _rrw, "signed_distance": _signed_distance}
    return {kind.name: compute[kind.name](distances, num_classes) for kind in map_kinds}


def _choose_transform(transform: Transform, device: torch.device) -> Transform:
    """``transform`` with ``"auto"`` resolved: ``"edt"`` on the CPU, ``"fused"`` elsewhere."""
    if transform not in ("auto", "edt", "fused", "chunked"):
        raise ValueError(f"transform must be 'auto', 'edt', 'fused' or 'chunked', got {transform!r}")
    if transform == "auto":
        return "edt" if device.type == "cpu" else "fused"
    return transform


def _edt_map_stack(map_kinds: list[MapKind], labels: Tensor, classes: int, num_classes: int, spacing: Tensor) -> dict[str, Tensor]:
    """``compute_maps`` (the ``edt`` package) of each sample on the host, stacked on the labels' device."""
    names = [kind.name for kind in map_kinds]
    host_labels = labels.to(torch.int16).cpu().numpy()
    threads = torch.get_num_threads()
    samples = [compute_maps(names, sample, classes, sample_spacing, threads=threads)
               for sample, sample_spacing in zip(host_labels, spacing.double().tolist())]
    return {kind.name: torch.from_numpy(np.stack([maps[kind.name][: kind.num_channels(num_classes)] for maps in samples])).to(labels.device)
            for kind in map_kinds}


class _Distances(NamedTuple):
    """The distances of a batch: the EDT of every (sample, class) channel and the own-class distance."""

    labels: Tensor  # (B, *spatial) int64, classes 0..classes-1
    one_hot: Tensor  # (B, classes, *spatial) bool: the voxels of each class
    kept: Tensor  # (B, classes) bool: the class is present in a sample holding several classes
    outer: Tensor  # (B, classes, *spatial) distance to each class, o_k; inf for an absent class
    inner: Tensor  # (B, *spatial) own-class distance d; inf in single-class samples


def _distances(labels: Tensor, classes: int, spacing: Tensor, min_plus: MinPlus) -> _Distances:
    """Per-class masks, their EDTs ``o_k`` and the own-class distance ``d = min_{k != y} o_k``, sync-free."""
    expand = (1,) * (labels.ndim - 1)
    one_hot = labels[:, None] == torch.arange(classes, device=labels.device).reshape((1, classes) + expand)
    present = one_hot.flatten(2).any(2)
    several = present.sum(1) > 1
    masks = one_hot.flatten(0, 1)
    outer = distance_to_feature(masks, spacing.repeat_interleave(classes, dim=0), min_plus).reshape(one_hot.shape)
    inner = outer.masked_fill(one_hot, float("inf")).amin(1)
    return _Distances(labels, one_hot, present & several[:, None], outer, inner)


def _labels_for_maps(segmentation: Tensor, num_classes: int, ignore_label: int | None) -> tuple[Tensor, int]:
    """(B, 1, *spatial) nnU-Net target -> ((B, *spatial) int64 labels, classes to compute with).

    As ``labels_for_maps``: negative values become background, ``ignore_label`` becomes
    class ``num_classes``. Raises ``ValueError`` for a bad shape or (checked by
    :func:`~nnunet_losses.maps.torch_edt.require`) a label out of range.
    """
    if segmentation.ndim not in (4, 5) or segmentation.shape[1] != 1 or 0 in segmentation.shape:
        raise ValueError(f"segmentation must be (B, 1, *spatial) with 2 or 3 non-empty spatial axes, got shape {tuple(segmentation.shape)}")
    labels = segmentation[:, 0].clamp(min=0).long()  # a new tensor: the caller's target is not modified
    classes = num_classes
    if ignore_label is not None:
        labels = torch.where(labels == ignore_label, num_classes, labels)
        classes += 1
    require(labels.max() < classes, f"a label >= {classes} found but num_classes={num_classes} and ignore_label={ignore_label}")
    return labels, classes


def _rrw(distances: _Distances, num_classes: int) -> Tensor:
    """RRW value at each voxel's own class, (B, 1, *spatial): ``-d(i) / max_{y_j = y_i} d(j)``."""
    labels, inner = distances.labels, distances.inner
    flat_labels = labels.flatten(1)
    largest = torch.zeros(distances.kept.shape, device=labels.device).scatter_reduce(1, flat_labels, inner.flatten(1), "amax")
    values = inner * (-1.0 / largest).gather(1, flat_labels).reshape(labels.shape)
    single = ~distances.kept.any(1).reshape((-1,) + (1,) * (labels.ndim - 1))
    return values.masked_fill_(single, -1.0)[:, None]


def _signed_distance(distances: _Distances, num_classes: int) -> Tensor:
    """Signed distance, (B, num_classes, *spatial): ``o_k`` outside class ``k``, ``-d`` inside, 0 if absent."""
    inside = distances.one_hot[:, :num_classes]
    values = torch.where(inside, -distances.inner[:, None], distances.outer[:, :num_classes])
    kept = distances.kept[:, :num_classes].reshape(inside.shape[:2] + (1,) * (inside.ndim - 2))
    return values.masked_fill_(~kept, 0.0)

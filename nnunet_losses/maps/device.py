"""The stored map kinds of a whole training batch, computed in PyTorch on the batch's device.

:func:`device_map_stack` gives, for nnU-Net's target of one deep-supervision scale, what
:func:`~nnunet_losses.nnunet.map_layout.compute_map_stack` gives for each sample with its
own spacing (same conventions: ``-1`` is background, the ignore label is an extra class
whose channels are dropped; a class absent from a sample, a class filling it, single
voxels: see :mod:`~nnunet_losses.maps.rw_maps`), without leaving the device.

Both kinds come from one exact EDT per (sample, present class) pair
(:func:`~nnunet_losses.maps.torch_edt.distance_to_feature`); absent classes, and samples
holding a single class (whose maps are constant), cost no EDT. With
``o_k(i) = min_{j : y_j = k} ||i - j||`` the distance to class ``k`` (0 inside it):

* own-class distance ``d(i) = min_{k != y_i} o_k(i)`` — the nearest voxel of another
  class is the nearest voxel of the closest other class;
* ``rrw`` (1 channel): ``d(i) / -max_{j : y_j = y_i} d(j)``; -1 where a single class fills
  the sample;
* ``signed_distance`` (C channels, mm): ``o_k(i)`` outside class ``k``, ``-d(i)`` inside it;
  0 for an absent class and where a single class fills the sample.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .kinds import get_map_kind
from .torch_edt import check_spacing, distance_to_feature


def device_map_stack(
    segmentation: Tensor,
    kinds: Sequence[str],
    num_classes: int,
    ignore_label: int | None,
    spacing: Tensor,
) -> dict[str, Tensor]:
    """Maps of each kind for a batch of nnU-Net segmentations, on their device.

    ``segmentation``: (B, 1, *spatial), 2D or 3D, float or integer labels (may hold ``-1``
    and ``ignore_label``); ``spacing``: (B, ndim) mm per sample and axis. Returns
    ``{kind: (B, channels, *spatial)}`` float32 on ``segmentation``'s device, equal to
    ``compute_map_stack`` of each sample with its spacing.
    """
    map_kinds = [get_map_kind(kind) for kind in kinds]
    labels, classes = _labels_for_maps(segmentation, num_classes, ignore_label)
    distances = _distances(labels, classes, _validate_spacing(spacing, labels))
    compute = {"rrw": _rrw, "signed_distance": _signed_distance}
    return {kind.name: compute[kind.name](distances, num_classes) for kind in map_kinds}


class _Distances(NamedTuple):
    """The distances of a batch, one EDT per (sample, present class) pair of a multi-class sample."""

    labels: Tensor  # (B, *spatial) int64, classes 0..classes-1
    classes: int  # number of classes including the ignore class
    several: Tensor  # (B,) bool: the sample holds more than one class
    sample: Tensor  # (N,) sample of each pair
    klass: Tensor  # (N,) class of each pair
    masks: Tensor  # (N, *spatial) bool: voxels of the pair's class
    outer: Tensor  # (N, *spatial) distance to the pair's class, o_k
    inner: Tensor  # (B, *spatial) own-class distance d; inf in single-class samples


def _distances(labels: Tensor, classes: int, spacing: Tensor) -> _Distances:
    """Per-class masks of the present classes, their EDTs ``o_k`` and the own-class distance ``d``."""
    expand = (1,) * (labels.ndim - 1)
    one_hot = labels[:, None] == torch.arange(classes, device=labels.device).reshape((1, classes) + expand)
    present = one_hot.flatten(2).any(2)
    several = present.sum(1) > 1
    sample, klass = (present & several[:, None]).nonzero().unbind(1)
    masks = one_hot[sample, klass]
    outer = distance_to_feature(masks, spacing[sample])
    inner = _own_class_distance(outer, masks, sample, klass, labels.shape)
    return _Distances(labels, classes, several, sample, klass, masks, outer, inner)


def _labels_for_maps(segmentation: Tensor, num_classes: int, ignore_label: int | None) -> tuple[Tensor, int]:
    """(B, 1, *spatial) nnU-Net target -> ((B, *spatial) int64 labels, classes to compute with).

    As ``labels_for_maps``: negative values become background, ``ignore_label`` becomes
    class ``num_classes``. Raises ``ValueError`` for a bad shape or a label out of range.
    """
    if segmentation.ndim not in (4, 5) or segmentation.shape[1] != 1 or 0 in segmentation.shape:
        raise ValueError(f"segmentation must be (B, 1, *spatial) with 2 or 3 non-empty spatial axes, got shape {tuple(segmentation.shape)}")
    labels = segmentation[:, 0].clamp(min=0).long()  # a new tensor: the caller's target is not modified
    classes = num_classes
    if ignore_label is not None:
        labels[labels == ignore_label] = num_classes
        classes += 1
    high = int(labels.max())
    if high >= classes:
        raise ValueError(f"label {high} found but num_classes={num_classes} and ignore_label={ignore_label}")
    return labels, classes


def _validate_spacing(spacing: Tensor, labels: Tensor) -> Tensor:
    """``spacing`` as float32 on the labels' device after checking it is (B, ndim), finite and positive."""
    check_spacing(spacing, labels.shape[0], labels.ndim - 1, rows_name="B")
    return spacing.to(device=labels.device, dtype=torch.float32)


def _own_class_distance(outer: Tensor, masks: Tensor, sample: Tensor, klass: Tensor, shape: torch.Size) -> Tensor:
    """``d(i) = min_{k != y_i} o_k(i)`` per sample, (B, *spatial); ``inf`` in single-class samples.

    One class at a time, so that each sample is indexed at most once per update.
    """
    inner = torch.full(shape, float("inf"), device=outer.device)
    others = outer.masked_fill(masks, float("inf"))
    for k in klass.unique().tolist():
        chosen = klass == k
        rows = sample[chosen]
        inner[rows] = torch.minimum(inner[rows], others[chosen])
    return inner


def _rrw(distances: _Distances, num_classes: int) -> Tensor:
    """RRW value at each voxel's own class, (B, 1, *spatial): ``-d(i) / max_{y_j = y_i} d(j)``."""
    labels, sample, masks, inner = distances.labels, distances.sample, distances.masks, distances.inner
    largest = inner[sample].masked_fill(~masks, 0.0).flatten(1).amax(1)
    scale = torch.zeros((labels.shape[0], distances.classes), device=labels.device)
    scale[sample, distances.klass] = -1.0 / largest
    values = inner * scale.gather(1, labels.flatten(1)).reshape(labels.shape)
    single = ~distances.several.reshape((-1,) + (1,) * (labels.ndim - 1))
    return values.masked_fill_(single, -1.0)[:, None]


def _signed_distance(distances: _Distances, num_classes: int) -> Tensor:
    """Signed distance, (B, num_classes, *spatial): ``o_k`` outside class ``k``, ``-d`` inside, 0 if absent."""
    labels = distances.labels
    out = torch.zeros((labels.shape[0], num_classes) + labels.shape[1:], device=labels.device)
    kept = distances.klass < num_classes
    sample, klass, masks = distances.sample[kept], distances.klass[kept], distances.masks[kept]
    out[sample, klass] = torch.where(masks, -distances.inner[sample], distances.outer[kept])
    return out

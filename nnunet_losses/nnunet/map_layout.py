"""The maps a trainer needs, stacked as channels, and how to compute them from nnU-Net labels.

Training carries all the maps of a trainer as one float tensor whose channels are the
map kinds in a fixed order (``rrw`` first, then ``signed_distance``): nnU-Net's
augmentation moves it as a regression target. :class:`MapLayout` knows which channels
belong to which kind and which are in mm (those must be rescaled when a patch is
zoomed).

nnU-Net's segmentations hold ``-1`` outside the crop (turned into background by its
training transforms) and may hold an ignore label. Maps are computed on exactly what
the loss will see: ``-1`` becomes background; ignored voxels form one extra class,
whose channels are dropped (the loss masks those voxels out; for the others, the
ignored region counts as "another class", so distances end at its border).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..maps import MAP_KINDS, get_map_kind, map_channels, own_distance_for
from ..maps.rw_maps import stack_channels

KIND_ORDER = tuple(MAP_KINDS)


@dataclass(frozen=True)
class MapLayout:
    """Channel layout of the stacked maps of one trainer."""

    kinds: tuple[str, ...]
    num_classes: int

    def __post_init__(self) -> None:
        for kind in self.kinds:
            get_map_kind(kind)
        object.__setattr__(self, "kinds", tuple(k for k in KIND_ORDER if k in self.kinds))

    def channels(self, kind: str) -> slice:
        start = 0
        for k in self.kinds:
            count = get_map_kind(k).num_channels(self.num_classes)
            if k == kind:
                return slice(start, start + count)
            start += count
        raise KeyError(kind)

    @property
    def num_channels(self) -> int:
        return sum(get_map_kind(k).num_channels(self.num_classes) for k in self.kinds)

    @property
    def mm_slices(self) -> list[slice]:
        """Channel ranges whose values are distances in mm (one per mm kind)."""
        return [self.channels(k) for k in self.kinds if get_map_kind(k).in_mm]

    def split(self, stacked):
        """``{kind: channels}`` of a stacked (B, channels, *spatial) tensor or array."""
        return {kind: stacked[:, self.channels(kind)] for kind in self.kinds}


def labels_for_maps(segmentation: np.ndarray, num_classes: int, ignore_label: int | None) -> tuple[np.ndarray, int]:
    """nnU-Net labels -> (labels for map computation, number of classes to compute with).

    ``-1`` (outside the crop) becomes background; the ignore label becomes class
    ``num_classes``, an extra class whose channels callers drop.
    """
    labels = np.where(segmentation < 0, 0, segmentation).astype(np.int16, copy=False)
    if ignore_label is None:
        return labels, num_classes
    labels = np.where(labels == ignore_label, num_classes, labels)
    return labels, num_classes + 1


def map_stack_channels(
    segmentation: np.ndarray,
    kinds: Sequence[str],
    num_classes: int,
    ignore_label: int | None,
    spacing: Sequence[float],
    per_slice: bool = False,
    threads: int = 1,
) -> dict[str, tuple[int, Iterator[np.ndarray]]]:
    """Per kind, its channel count and its channels for one nnU-Net segmentation, each computed when
    asked for (:func:`~nnunet_losses.maps.kinds.map_channels`): the labels of :func:`labels_for_maps`,
    one own-class distance shared by every kind, and the ignore label's channels never computed."""
    labels, classes = labels_for_maps(segmentation, num_classes, ignore_label)
    own = own_distance_for(labels, spacing, per_slice, threads)
    streams = {}
    for kind in kinds:
        count = get_map_kind(kind).num_channels(num_classes)
        streams[kind] = (count, map_channels(kind, labels, classes, spacing, per_slice, threads, own, channels=count))
    return streams


def compute_map_stack(
    segmentation: np.ndarray,
    kinds: Sequence[str],
    num_classes: int,
    ignore_label: int | None,
    spacing: Sequence[float],
    per_slice: bool = False,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Maps of each kind for one nnU-Net segmentation (spatial array, 2D or 3D): the channels of
    :func:`map_stack_channels`, stacked."""
    streams = map_stack_channels(segmentation, kinds, num_classes, ignore_label, spacing, per_slice, threads)
    return {kind: stack_channels(channels, count, segmentation.shape) for kind, (count, channels) in streams.items()}

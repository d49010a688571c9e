"""How to compute the map kinds that are stored or recomputed for training.

The kinds are declared once, in :mod:`.declared_kinds`; this module adds how each is computed
from a label array (numpy). Two stored kinds serve every map-based loss of the package:

* ``rrw`` — one channel, the RRW value at each voxel's own class
  (:func:`~nnunet_losses.maps.rw_maps.rrw_compact`). With the segmentation it gives
  the RRW map, the class-emphasis RRW map and the weights of RRW-weighted CE.
  Normalised, hence unchanged when a patch is scaled.
* ``signed_distance`` — one channel per class, Kervadec's signed distance in mm
  (:func:`~nnunet_losses.maps.rw_maps.signed_distance_map`). It gives the RW-Boundary
  map (with or without Kervadec's inner shift, which only needs the segmentation),
  the unsigned boundary distance of one-sided HD (``|phi|``) and the distance map of
  the common-support boundary loss. In mm, hence divided by the zoom factor when a
  patch is scaled.

AC and Cao maps depend on the segmentation alone and are never stored. Both stored
kinds start from the own-class distance (one multi-label EDT), which
:func:`compute_maps` computes once for all the kinds it is asked for.

Every map is computed channel by channel (:func:`map_channels`): ``setup_maps`` writes
each channel as it comes, so that a case's memory does not grow with its class count, and
:func:`compute_maps` stacks the same channels.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from dataclasses import asdict, dataclass

import numpy as np

from .declared_kinds import DECLARED_MAP_KINDS, DeclaredMapKind, get_declared_map_kind
from .distance import Spacing, own_class_distance, validate_labels, validate_spacing
from .rw_maps import rrw_compact, signed_distance_channels, stack_channels

ChannelFunction = Callable[[np.ndarray, int, Spacing, int, np.ndarray], Iterator[np.ndarray]]
"""(labels, num_classes, spacing, threads, own-class distance of the labels) -> the map's channels,
each a spatial float32 array, computed when asked for."""


@dataclass(frozen=True)
class MapKind(DeclaredMapKind):
    """A declared map kind (:data:`~.declared_kinds.DECLARED_MAP_KINDS`) with the function that computes its channels."""

    channel_function: ChannelFunction


_CHANNEL_FUNCTIONS: dict[str, ChannelFunction] = {
    "rrw": lambda labels, c, spacing, threads, own: iter(rrw_compact(labels, c, spacing, threads, own)),
    "signed_distance": lambda labels, c, spacing, threads, own: signed_distance_channels(labels, c, spacing, threads=threads, own_distance=own),
}

MAP_KINDS: dict[str, MapKind] = {
    name: MapKind(**asdict(spec), channel_function=_CHANNEL_FUNCTIONS[name]) for name, spec in DECLARED_MAP_KINDS.items()
}


def get_map_kind(name: str) -> MapKind:
    """Look a map kind up by name; a ``ValueError`` lists the valid names."""
    return MAP_KINDS[get_declared_map_kind(name).name]


def compute_map(
    kind: str,
    labels: np.ndarray,
    num_classes: int,
    spacing: Spacing | None = None,
    per_slice: bool = False,
    threads: int = 1,
) -> np.ndarray:
    """Compute one stored map kind for a 2D or 3D label array; returns ``(channels, *spatial)``.

    ``per_slice=True`` (3D labels only) computes the map on each slice along axis 0 with
    the in-plane spacing, as a 2D configuration sees the data; normalisations (RRW's
    per-class maximum) are then per slice. The default computes on the whole array.
    """
    return compute_maps([kind], labels, num_classes, spacing, per_slice, threads)[kind]


def compute_maps(
    kinds: Sequence[str],
    labels: np.ndarray,
    num_classes: int,
    spacing: Spacing | None = None,
    per_slice: bool = False,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Several stored map kinds of one label array (see :func:`compute_map`), sharing one
    own-class distance transform per array (per slice with ``per_slice``): the channels of
    :func:`map_channels`, stacked."""
    map_kinds = [get_map_kind(kind) for kind in kinds]
    labels = validate_labels(labels, num_classes)
    spacing = validate_spacing(spacing, labels.ndim)
    own = own_distance_for(labels, spacing, per_slice, threads)
    return {
        kind.name: stack_channels(map_channels(kind.name, labels, num_classes, spacing, per_slice, threads, own), kind.num_channels(num_classes), labels.shape)
        for kind in map_kinds
    }


def own_distance_for(labels: np.ndarray, spacing: Spacing | None = None, per_slice: bool = False, threads: int = 1) -> np.ndarray:
    """The own-class distance that the maps of :func:`map_channels` share: of the whole array, or of
    each slice along axis 0 with the in-plane spacing (``per_slice``, 3D labels only)."""
    labels = validate_labels(labels)
    spacing = validate_spacing(spacing, labels.ndim)
    if not per_slice:
        return own_class_distance(labels, spacing, threads)
    _require_3d(labels)
    out = np.empty(labels.shape, dtype=np.float32)
    for z, piece in enumerate(labels):
        out[z] = own_class_distance(piece, spacing[1:], threads)
    return out


def map_channels(
    kind: str,
    labels: np.ndarray,
    num_classes: int,
    spacing: Spacing | None = None,
    per_slice: bool = False,
    threads: int = 1,
    own_distance: np.ndarray | None = None,
    channels: int | None = None,
) -> Iterator[np.ndarray]:
    """The channels of :func:`compute_map`, one spatial float32 array at a time, each computed when asked for.

    ``own_distance``: :func:`own_distance_for` of the same labels, spacing and slicing, to share
    between kinds; ``channels``: only the first ``channels`` channels (default: all). Per
    slice, channel ``k`` is channel ``k`` of every slice's map, stacked along axis 0.
    """
    map_kind = get_map_kind(kind)
    labels = validate_labels(labels, num_classes)
    spacing = validate_spacing(spacing, labels.ndim)
    count = map_kind.num_channels(num_classes) if channels is None else channels
    if per_slice:
        _require_3d(labels)
    own = own_distance_for(labels, spacing, per_slice, threads) if own_distance is None else own_distance
    if own.shape != labels.shape:
        raise ValueError(f"own_distance has shape {own.shape} but the labels have shape {labels.shape}")
    if not per_slice:
        yield from islice(map_kind.channel_function(labels, num_classes, spacing, threads, own), count)
        return
    slices = [map_kind.channel_function(piece, num_classes, spacing[1:], threads, own[z]) for z, piece in enumerate(labels)]
    for _ in range(count):
        out = np.empty(labels.shape, dtype=np.float32)
        for z, channels_of_slice in enumerate(slices):
            out[z] = next(channels_of_slice)
        yield out


def _require_3d(labels: np.ndarray) -> None:
    if labels.ndim != 3:
        raise ValueError(f"per_slice maps need 3D labels, got shape {labels.shape}")

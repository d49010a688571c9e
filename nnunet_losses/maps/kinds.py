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
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .declared_kinds import DECLARED_MAP_KINDS, DeclaredMapKind, get_declared_map_kind
from .distance import Spacing, own_class_distance, validate_labels, validate_spacing
from .rw_maps import rrw_compact, signed_distance_map

MapFunction = Callable[[np.ndarray, int, Spacing, int, np.ndarray], np.ndarray]
"""(labels, num_classes, spacing, threads, own-class distance of the labels) -> map."""


@dataclass(frozen=True)
class MapKind(DeclaredMapKind):
    """A declared map kind (:data:`~.declared_kinds.DECLARED_MAP_KINDS`) with the function that computes it."""

    function: MapFunction


_FUNCTIONS: dict[str, MapFunction] = {
    "rrw": lambda labels, c, spacing, threads, own: rrw_compact(labels, c, spacing, threads, own),
    "signed_distance": lambda labels, c, spacing, threads, own: signed_distance_map(labels, c, spacing, threads=threads, own_distance=own),
}

MAP_KINDS: dict[str, MapKind] = {name: MapKind(**asdict(spec), function=_FUNCTIONS[name]) for name, spec in DECLARED_MAP_KINDS.items()}


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
    own-class distance transform per array (per slice with ``per_slice``)."""
    map_kinds = [get_map_kind(kind) for kind in kinds]
    labels = validate_labels(labels, num_classes)
    spacing = validate_spacing(spacing, labels.ndim)
    if not per_slice:
        return _maps_of_array(map_kinds, labels, num_classes, spacing, threads)
    if labels.ndim != 3:
        raise ValueError(f"per_slice maps need 3D labels, got shape {labels.shape}")
    slices = [_maps_of_array(map_kinds, s, num_classes, spacing[1:], threads) for s in labels]
    return {kind.name: np.stack([maps[kind.name] for maps in slices], axis=1) for kind in map_kinds}


def _maps_of_array(
    map_kinds: list[MapKind], labels: np.ndarray, num_classes: int, spacing: tuple[float, ...], threads: int
) -> dict[str, np.ndarray]:
    own = own_class_distance(labels, spacing, threads)
    return {kind.name: kind.function(labels, num_classes, spacing, threads, own) for kind in map_kinds}

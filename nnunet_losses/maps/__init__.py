"""RW and distance maps from integer label arrays (numpy; the ``edt`` package for the EDT).

Maps (``rw_maps``): :func:`rrw_map`, :func:`rrw_compact`, :func:`expand_rrw`,
:func:`class_emphasis_rrw_map`, :func:`signed_distance_map` (RW-Boundary / Kervadec),
:func:`boundary_distance_map` (one-sided HD), :func:`ac_map`, :func:`cao_map`,
:func:`one_hot`. Stored kinds (``kinds``): :data:`MAP_KINDS`, :func:`compute_map`,
:func:`compute_maps`, and their streaming form :func:`map_channels` (one channel at a time,
sharing :func:`own_distance_for`).
On a torch device, for a whole batch (``device``, ``torch_edt``): :func:`device_map_stack`,
:func:`distance_to_feature` (exact EDT of batched binary masks).
Checks (``rectification``): :func:`is_rectified`, :func:`rectification_violations`,
:func:`rw_gradient`, :func:`negative_component_counts`,
:func:`fraction_multiple_negative`, :func:`simplex_grid`,
:func:`simplex_fraction_multiple_negative`. SciPy references (``reference``, not
imported here): ``scipy_rrw_map``, ``scipy_signed_distance_map``.

Definitions and the conventions for absent classes, whole-array classes and single voxels:
``docs/maps.md``.
"""
from .device import device_map_stack
from .distance import distance_to_class, own_class_distance, validate_labels, validate_spacing
from .kinds import MAP_KINDS, MapKind, compute_map, compute_maps, get_map_kind, map_channels, own_distance_for
from .rectification import (
    fraction_multiple_negative,
    is_rectified,
    negative_component_counts,
    rectification_violations,
    rw_gradient,
    simplex_fraction_multiple_negative,
    simplex_grid,
)
from .rw_maps import (
    ac_map,
    boundary_distance_map,
    cao_map,
    class_emphasis_rrw_map,
    expand_rrw,
    one_hot,
    rrw_compact,
    rrw_map,
    signed_distance_map,
)
from .torch_edt import distance_to_feature

__all__ = [
    "MAP_KINDS",
    "MapKind",
    "ac_map",
    "boundary_distance_map",
    "cao_map",
    "class_emphasis_rrw_map",
    "compute_map",
    "compute_maps",
    "device_map_stack",
    "distance_to_class",
    "distance_to_feature",
    "expand_rrw",
    "fraction_multiple_negative",
    "get_map_kind",
    "map_channels",
    "is_rectified",
    "negative_component_counts",
    "one_hot",
    "own_class_distance",
    "own_distance_for",
    "rectification_violations",
    "rrw_compact",
    "rrw_map",
    "rw_gradient",
    "signed_distance_map",
    "simplex_fraction_multiple_negative",
    "simplex_grid",
    "validate_labels",
    "validate_spacing",
]

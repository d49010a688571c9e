"""The one declaration of the map kinds: name, channels and unit (imports nothing heavy).

Every part of the package that names a map kind reads it from :data:`DECLARED_MAP_KINDS`:
the losses (which keyword a loss takes and the shape it checks,
:mod:`nnunet_losses.losses.inputs`), the numpy maps (:mod:`.kinds`, which adds how each
kind is computed) and the device maps (:mod:`.device`). The kinds themselves are
described in ``docs/maps.md``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeclaredMapKind:
    """A map kind: its name, whether it has one channel per class, whether it is in mm."""

    name: str
    per_class_channels: bool
    in_mm: bool
    description: str

    def num_channels(self, num_classes: int) -> int:
        return num_classes if self.per_class_channels else 1

    @property
    def shape_text(self) -> str:
        """The shape a loss expects, e.g. ``(B, 1, *spatial)``."""
        return f"(B, {'C' if self.per_class_channels else '1'}, *spatial)"


DECLARED_MAP_KINDS: dict[str, DeclaredMapKind] = {
    spec.name: spec
    for spec in (
        DeclaredMapKind("rrw", per_class_channels=False, in_mm=False, description="rectified RW value at each voxel's own class (1 channel, normalised)"),
        DeclaredMapKind("signed_distance", per_class_channels=True, in_mm=True, description="Kervadec signed distance to each class boundary (C channels, mm)"),
    )
}


def get_declared_map_kind(name: str) -> DeclaredMapKind:
    """Look a map kind up by name; a ``ValueError`` lists the valid names."""
    try:
        return DECLARED_MAP_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown map kind {name!r}; valid kinds: {sorted(DECLARED_MAP_KINDS)}") from None

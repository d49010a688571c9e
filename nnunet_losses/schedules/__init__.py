"""Loss-weight schedules: pure objects giving the weights of named loss terms over training.

Every schedule follows the protocol of :class:`WeightSchedule` (``begin_epoch``,
``observe``, ``end_epoch``, ``weights``, ``state_dict``/``load_state_dict``) and is built by
name with :func:`build_schedule`:

* ``fixed`` -- :class:`Fixed`: ``L_R + alpha L_B``
* ``ramp`` -- :class:`LinearRamp`: ``L_R + a(x) L_B``, ``a`` rising to 1
* ``rebalance`` -- :class:`Rebalance`: ``(1 - a(x)) L_R + a(x) L_B``
* ``steal`` -- :class:`Steal`: ``a(x) L_R + b(x) L_B`` (Kervadec's code)
* ``equal`` -- :class:`Equal`: ``L_R + L_RW``
* ``gradual`` -- :class:`Gradual`: ``alpha(x) L_R + (1 - alpha(x)) L_RW``
* ``temporal`` -- :class:`TemporalWeighting`: a fixed share of the total per term and phase
* ``softadapt`` -- :class:`SoftAdapt`: softmax of the slopes of the epoch means
* ``cov`` -- :class:`CoVWeighting`: coefficient of variation of the loss ratios

Definitions, time scale and edge cases: ``docs/schedules.md``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .adaptive import CoVWeighting, SoftAdapt
from .base import UNITS, Unit, WeightSchedule
from .combination import TWO_TERM_NAMES, Equal, Fixed, Gradual, LinearRamp, Rebalance, Steal
from .temporal import TemporalWeighting

SCHEDULES: dict[str, type[WeightSchedule]] = {
    schedule.key: schedule
    for schedule in (
        Fixed,
        LinearRamp,
        Rebalance,
        Steal,
        Equal,
        Gradual,
        TemporalWeighting,
        SoftAdapt,
        CoVWeighting,
    )
}


def build_schedule(name: str, names: Sequence[str], num_epochs: int, **kwargs: Any) -> WeightSchedule:
    """Build the schedule called ``name`` (a key of :data:`SCHEDULES`) for the terms ``names``.

    ``kwargs`` are the schedule's own constructor arguments (``alpha``, ``beta``, ``unit``,
    ``reference_epochs``...). ``build_schedule(s.key, **s.config())`` rebuilds a schedule ``s``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULES)}")
    return SCHEDULES[name](names=names, num_epochs=num_epochs, **kwargs)


__all__ = [
    "SCHEDULES",
    "TWO_TERM_NAMES",
    "UNITS",
    "CoVWeighting",
    "Equal",
    "Fixed",
    "Gradual",
    "LinearRamp",
    "Rebalance",
    "SoftAdapt",
    "Steal",
    "TemporalWeighting",
    "Unit",
    "WeightSchedule",
    "build_schedule",
]

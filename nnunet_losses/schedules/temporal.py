"""Phase-wise weighting of the temporal loss (GDL, common-support Dice, boundary loss)."""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from .base import Unit, WeightSchedule, check_number

MIN_MEAN_LOSS = 1e-12
"""A term whose previous-epoch mean is not above this cannot be divided by (see below)."""
_SHARE_TOLERANCE = 1e-9


class TemporalWeighting(WeightSchedule):
    """Weights that give each term a fixed share of the total loss, phase by phase.

    Paper: Marzola et al., "Innovative temporal loss function for segmentation of fine
    structures in ultrasound images", §III.D (``docs/schedules.md#temporal-weighting``). The terms are, by default,
    ``("gdl", "cdl", "bl")``: generalised Dice, common-support Dice and common-support
    boundary loss. Phase ``p`` (0-based) holds for ``phase_starts[p-1] <= x <
    phase_starts[p]`` and prescribes relative importances ``P = importances[p]``
    (non-negative, summing to 1). Defaults, from the paper's 20-epoch training
    (``reference_epochs = 20``): phase 1 for ``x < 5`` (the paper's epochs 1-5) with
    ``P = (1, 0, 0)``; phase 2 for ``5 <= x < 10`` with ``(0.25, 0.75, 0)``; phase 3 for
    ``x >= 10`` with ``(0.1, 0.2, 0.7)``. Epoch mode uses the paper's epochs (0-based:
    phase 2 from epoch 5, phase 3 from epoch 10); fraction mode scales the boundaries to
    the budget (1000 epochs: phase 2 from epoch 250, phase 3 from epoch 500).

    In phase 1 the weights are the importances themselves. From phase 2 on, at each
    epoch start::

        Tot = sum_k w_k_prev * |L_k|,     w_j = P_j * Tot / |L_j|

    with ``L_j`` the mean of term j over the latest completed epoch and ``w_prev`` the
    weights in force during the previous epoch, so that ``w_j |L_j| / sum_k w_k |L_k| = P_j``
    on those means and the total keeps its magnitude ``Tot``. (The paper's pseudocode
    multiplies by ``L_j`` where it must divide; its text states the intent followed here.)
    Shares are taken on magnitudes because the boundary term is negative near its
    optimum (Kervadec's signed distance): dividing by a negative mean would flip the
    sign of its weight and make training maximise it. For non-negative terms this is
    exactly the paper's rule.

    Edge cases: a term with ``P_j = 0`` gets weight 0. If ``|L_j|`` or ``Tot`` is not a
    finite number above ``MIN_MEAN_LOSS`` (a vanished term, an overflow), term j keeps
    its previous weight, or ``P_j`` if that was 0 -- its share then differs from ``P_j``.
    Before any epoch has been completed, the weights are the phase's importances.
    """

    key = "temporal"
    default_reference_epochs = 20
    history_length = 1

    def __init__(
        self,
        names: Sequence[str] = ("gdl", "cdl", "bl"),
        phase_starts: Sequence[float] = (5, 10),
        importances: Sequence[Sequence[float]] = ((1, 0, 0), (0.25, 0.75, 0), (0.1, 0.2, 0.7)),
        *,
        num_epochs: int,
        unit: Unit = "epoch",
        reference_epochs: int | None = None,
    ) -> None:
        super().__init__(names, num_epochs, unit=unit, reference_epochs=reference_epochs)
        starts = tuple(check_number("phase_starts entry", start) for start in phase_starts)
        if any(later <= earlier for earlier, later in zip((0.0,) + starts, starts)):
            raise ValueError(f"phase_starts must be positive and strictly increasing, got {phase_starts!r}")
        if len(importances) != len(starts) + 1:
            raise ValueError(
                f"importances needs one row per phase ({len(starts) + 1} for "
                f"{len(starts)} phase starts), got {len(importances)}"
            )
        self.phase_starts = starts
        self.importances = tuple(self._checked_shares(row) for row in importances)

    def _checked_shares(self, row: Sequence[float]) -> tuple[float, ...]:
        if len(row) != len(self.names):
            raise ValueError(f"importance row {row!r} must have one entry per name {self.names!r}")
        shares = tuple(check_number("importance", share, minimum=0.0) for share in row)
        if abs(sum(shares) - 1.0) > _SHARE_TOLERANCE:
            raise ValueError(f"importance row {row!r} must sum to 1")
        return shares

    def _params(self) -> dict[str, Any]:
        return {
            "phase_starts": list(self.phase_starts),
            "importances": [list(row) for row in self.importances],
        }

    def phase(self, epoch: int) -> int:
        """The 0-based phase index of the 0-based ``epoch``."""
        return bisect_right(self.phase_starts, self.schedule_time(epoch))

    def _weights_at(self, epoch: int) -> list[float]:
        phase = self.phase(epoch)
        shares = self.importances[phase]
        if phase == 0 or not self._history:
            return list(shares)
        means = self._history[-1]
        previous = self._weights if self._weights is not None else list(self.importances[0])
        magnitudes = [abs(mean) for mean in means]
        total = sum(weight * magnitude for weight, magnitude in zip(previous, magnitudes))
        return [
            _share_weight(share, magnitude, total, weight)
            for share, magnitude, weight in zip(shares, magnitudes, previous)
        ]


def _usable(value: float) -> bool:
    return math.isfinite(value) and value > MIN_MEAN_LOSS


def _share_weight(share: float, magnitude: float, total: float, previous: float) -> float:
    if share == 0.0:
        return 0.0
    if _usable(magnitude) and _usable(total):
        return share * total / magnitude
    return previous if previous > 0.0 else share

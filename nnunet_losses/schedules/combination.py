"""Two-term schedules: a regional loss L_R combined with a map loss (L_B or L_RW).

The names are ``(regional, map)``, default ``("regional", "map")``: the regional term
(Dice or cross-entropy) first, the map term (Kervadec boundary loss L_B, or the
region-wise loss L_RW) second. ``x`` is the schedule time of
:class:`~nnunet_losses.schedules.base.WeightSchedule`: ``x = epoch`` (0-based) in
``"epoch"`` mode, ``x = epoch * reference_epochs / num_epochs`` in ``"fraction"`` mode.
The papers' per-epoch constants reach their end state around epoch 100, so
``reference_epochs`` defaults to 100: in fraction mode a ramp with step 0.01 ends at 99 %
of the training whatever its length.
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from .base import Unit, WeightSchedule, check_number

if TYPE_CHECKING:  # only annotations use them (Python 3.10 has neither in typing)
    from typing_extensions import Required, Unpack

TWO_TERM_NAMES: tuple[str, str] = ("regional", "map")


class ScheduleTiming(TypedDict, total=False):
    """The keyword arguments every two-term schedule takes after its own numbers (see :class:`_TwoTermSchedule`)."""

    names: Sequence[str]
    num_epochs: Required[int]
    unit: Unit
    reference_epochs: int | None


class _TwoTermSchedule(WeightSchedule):
    """A closed-form rule ``x -> (weight of L_R, weight of L_B)``; no statistics.

    Every subclass takes its own numbers, then the keywords of :class:`ScheduleTiming`:
    ``names`` (default ``("regional", "map")``), ``num_epochs`` (required), ``unit``
    (``"epoch"`` or ``"fraction"``, default ``"epoch"``) and ``reference_epochs``
    (default 100), as :class:`~nnunet_losses.schedules.base.WeightSchedule`.
    """

    num_terms = 2
    default_reference_epochs = 100

    def __init__(
        self,
        *,
        names: Sequence[str] = TWO_TERM_NAMES,
        num_epochs: int,
        unit: Unit = "epoch",
        reference_epochs: int | None = None,
    ) -> None:
        super().__init__(names, num_epochs, unit=unit, reference_epochs=reference_epochs)

    def _weights_at(self, epoch: int) -> list[float]:
        return list(self._pair(self.schedule_time(epoch)))

    @abstractmethod
    def _pair(self, x: float) -> tuple[float, float]:
        """The weights of (L_R, L_B) at schedule time ``x``."""


class Fixed(_TwoTermSchedule):
    """Linear combination ``L = L_R + alpha * L_B`` with a constant ``alpha >= 0``.

    Paper: Odonnat & Pham, "Boundary loss for breast ultrasound segmentation" ("linear
    combination"; its table uses alpha = 1; ``docs/schedules.md``). Weights ``(1, alpha)`` at every epoch, so ``unit`` and
    ``reference_epochs`` have no effect.
    """

    key = "fixed"

    def __init__(self, alpha: float, **timing: Unpack[ScheduleTiming]) -> None:
        super().__init__(**timing)
        self.alpha = check_number("alpha", alpha, minimum=0.0)

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def _pair(self, x: float) -> tuple[float, float]:
        return 1.0, self.alpha


class _RampSchedule(_TwoTermSchedule):
    """Shared ramp ``a(x) = min(start + step * x, 1)`` of :class:`LinearRamp` and :class:`Rebalance`."""

    def __init__(self, start: float = 0.01, step: float = 0.01, **timing: Unpack[ScheduleTiming]) -> None:
        super().__init__(**timing)
        self.start = check_number("start", start, minimum=0.0)
        self.step = check_number("step", step, minimum=0.0)

    def _params(self) -> dict[str, Any]:
        return {"start": self.start, "step": self.step}

    def _ramp(self, x: float) -> float:
        return min(self.start + self.step * x, 1.0)


class LinearRamp(_RampSchedule):
    """Linear scheduling ``L = L_R + a(x) * L_B`` with ``a(x) = min(start + step * x, 1)``.

    Paper: Odonnat & Pham, "Boundary loss for breast ultrasound segmentation" ("linear
    scheduling", alpha rising linearly from 0 to 1). Defaults ``start = step = 0.01``: ``a = 0.01`` at epoch 0, ``a = 1`` from
    ``x = 99`` on. Epoch mode: ``a`` reaches 1 at epoch 99 whatever the budget (never, if
    the budget is shorter). Fraction mode (reference 100): ``a`` reaches 1 at 99 % of
    the training. A start above 1 gives ``a = 1`` throughout.
    """

    key = "ramp"

    def _pair(self, x: float) -> tuple[float, float]:
        return 1.0, self._ramp(x)


class Rebalance(_RampSchedule):
    """Rebalance ``L = (1 - a(x)) * L_R + a(x) * L_B`` with ``a(x) = min(start + step * x, 1)``.

    Papers: Odonnat & Pham, "Boundary loss for breast ultrasound segmentation" ("rebalance")
    and Kervadec et al., "Boundary loss for highly unbalanced segmentation" (start 0.01,
    +0.01 per epoch). Weights ``(0.99, 0.01)`` at epoch 0 and
    ``(0, 1)`` -- the map term alone -- from ``x = 99`` on. Units as in :class:`LinearRamp`.
    """

    key = "rebalance"

    def _pair(self, x: float) -> tuple[float, float]:
        alpha = self._ramp(x)
        return 1.0 - alpha, alpha


class Steal(_TwoTermSchedule):
    """Kervadec's code: ``L = a(x) * L_R + b(x) * L_B`` where the map term "steals" weight.

    ``a(x) = max(start_regional - step * x, floor)`` and ``b(x) = start_map + step * x``
    with no cap (the reference code subtracts and adds ``step`` at each epoch end). Defaults
    ``(1.0, 0.01, 0.01, 0.1)``: ``(1, 0.01)`` at epoch 0, ``(0.1, 0.96)`` at epoch 95 and
    ``b`` keeps growing (``b = 1.01`` at ``x = 100``). Epoch mode follows the code
    literally; fraction mode (reference 100) reaches the floor at 90 % of the training and
    ends with ``b`` near 1.01. ``floor`` must not exceed ``start_regional``.
    """

    key = "steal"

    def __init__(
        self,
        start_regional: float = 1.0,
        start_map: float = 0.01,
        step: float = 0.01,
        floor: float = 0.1,
        **timing: Unpack[ScheduleTiming],
    ) -> None:
        super().__init__(**timing)
        self.start_regional = check_number("start_regional", start_regional, minimum=0.0)
        self.start_map = check_number("start_map", start_map, minimum=0.0)
        self.step = check_number("step", step, minimum=0.0)
        self.floor = check_number("floor", floor, minimum=0.0)
        if self.floor > self.start_regional:
            raise ValueError(f"floor ({floor!r}) must not exceed start_regional ({start_regional!r})")

    def _params(self) -> dict[str, Any]:
        return {
            "start_regional": self.start_regional,
            "start_map": self.start_map,
            "step": self.step,
            "floor": self.floor,
        }

    def _pair(self, x: float) -> tuple[float, float]:
        return max(self.start_regional - self.step * x, self.floor), self.start_map + self.step * x


class Equal(_TwoTermSchedule):
    """Equal contribution ``L = L_R + L_RW``: weights ``(1, 1)`` at every epoch.

    Paper: Valverde et al., "Region-wise loss for biomedical image segmentation", §4.4
    ("equal contribution", after Karimi's HD loss).
    ``unit`` and ``reference_epochs`` have no effect.
    """

    key = "equal"

    def _pair(self, x: float) -> tuple[float, float]:
        return 1.0, 1.0


class Gradual(_TwoTermSchedule):
    """Gradual contribution ``L = alpha * L_R + (1 - alpha) * L_RW``.

    ``alpha(x) = max((100 - x) / 100, 0.01)``. Paper: Valverde et al., "Region-wise loss
    for biomedical image segmentation", §4.4, and its reference code (after Kervadec et al.). ``alpha`` is 1 at epoch 0, 0.5 at ``x = 50``
    and stays at 0.01 from ``x = 99`` on. Epoch mode is the paper's rule; fraction mode
    (reference 100) reaches the floor at 99 % of the training.
    """

    key = "gradual"
    _HORIZON = 100.0
    _FLOOR = 0.01

    def _pair(self, x: float) -> tuple[float, float]:
        alpha = max((self._HORIZON - x) / self._HORIZON, self._FLOOR)
        return alpha, 1.0 - alpha

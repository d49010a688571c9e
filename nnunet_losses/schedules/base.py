"""The interface shared by all loss-weight schedules: time scale, statistics and state."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any, ClassVar, Literal

Unit = Literal["epoch", "fraction"]
UNITS: tuple[str, ...] = ("epoch", "fraction")


def check_number(name: str, value: Any, minimum: float | None = None) -> float:
    """Return ``value`` as a float; raise ValueError unless it is finite and >= ``minimum``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return number


def check_count(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an int; raise ValueError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_names(names: Sequence[str], expected: int | None) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError(f"names must be a sequence of term names, not the string {names!r}")
    names = tuple(names)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"names must be non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"names must be unique, got {names!r}")
    if expected is not None and len(names) != expected:
        raise ValueError(f"this schedule weights {expected} terms, got {len(names)} names {names!r}")
    return names


def check_floats(name: str, values: Sequence[Any], length: int) -> list[float]:
    """Return state entry ``values`` as floats; raise ValueError unless it holds ``length`` of them."""
    if len(values) != length:
        raise ValueError(f"state entry {name!r} must hold {length} numbers, got {values!r}")
    return [float(value) for value in values]


class WeightSchedule(ABC):
    """Weights of named loss terms as a function of training time.

    The total loss is ``sum_j weights[name_j] * L_j``. ``names`` fixes the terms and their
    order (each subclass documents the order it expects); ``num_epochs`` is the training
    budget.

    **Time scale.** Epochs are 0-based, like nnU-Net's ``current_epoch``. A schedule's rules
    are written in *schedule epochs* ``x``:

    * ``unit="epoch"``: ``x = epoch`` -- the papers' literal per-epoch rules, so the
      schedule's course depends on the epoch budget;
    * ``unit="fraction"``: ``x = epoch * reference_epochs / num_epochs`` -- the schedule is
      stretched over the whole training, whatever the budget (``reference_epochs`` is the
      budget the rule was written for; each schedule sets its default).

    Schedules that adapt to the observed losses count completed epochs or iterations
    instead of ``x``; they still accept ``unit`` and ``reference_epochs`` so that every
    schedule is built the same way.

    **Protocol**, as driven by the training loop: ``begin_epoch(epoch)`` at each epoch
    start (the weights for the epoch are set here); ``observe(values)`` after each
    training iteration with the detached value of *every* named term, including terms of
    weight 0; ``end_epoch()`` when the epoch's iterations are done (the means of the
    epoch's observations become a completed epoch; an epoch without observations leaves
    the statistics unchanged). Epochs past the budget continue the rule. Before the first
    ``begin_epoch`` the weights are those of epoch 0.

    **State.** ``state_dict()`` is plain JSON-serialisable Python (lists in ``names``
    order); it records the schedule's key and configuration, and ``load_state_dict``
    refuses a state saved by a different schedule or configuration. A schedule restored
    from a state gives exactly the weights the uninterrupted schedule would have given.
    """

    key: ClassVar[str]
    """The schedule's name in :func:`nnunet_losses.schedules.build_schedule`."""
    default_reference_epochs: ClassVar[int] = 100
    num_terms: ClassVar[int | None] = None
    """Exact number of names the schedule weights; ``None``: any number >= 1."""
    history_length: ClassVar[int] = 0
    """How many completed epochs' mean term values the schedule keeps (0: none)."""

    def __init__(
        self,
        names: Sequence[str],
        num_epochs: int,
        *,
        unit: Unit = "epoch",
        reference_epochs: int | None = None,
    ) -> None:
        self.names = _check_names(names, self.num_terms)
        self.num_epochs = check_count("num_epochs", num_epochs, 1)
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        self.unit: Unit = unit
        if reference_epochs is None:
            reference_epochs = self.default_reference_epochs
        self.reference_epochs = check_count("reference_epochs", reference_epochs, 1)
        self._weights: list[float] | None = None
        self._sums = [0.0] * len(self.names)
        self._count = 0
        self._history: list[list[float]] = []

    # ----------------------------------------------------------------- rule
    @abstractmethod
    def _weights_at(self, epoch: int) -> list[float]:
        """The weights (in ``names`` order) for ``epoch``, from the statistics so far."""

    def _params(self) -> dict[str, Any]:
        """The subclass's own constructor arguments, as plain JSON-serialisable data."""
        return {}

    def _values_must_be_nonnegative(self) -> bool:
        return False

    def _observe(self, values: list[float]) -> None:
        """Per-iteration hook for schedules that adapt within an epoch."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`_extra_state` saved."""

    # ------------------------------------------------------------ interface
    def schedule_time(self, epoch: int) -> float:
        """Schedule epochs ``x`` of the 0-based ``epoch`` (see the class docstring)."""
        if self.unit == "epoch":
            return float(epoch)
        return epoch * self.reference_epochs / self.num_epochs

    @property
    def weights(self) -> dict[str, float]:
        """The current weight of each term."""
        current = self._weights if self._weights is not None else self._weights_at(0)
        return dict(zip(self.names, current))

    def begin_epoch(self, epoch: int) -> None:
        """Set the weights for the 0-based ``epoch``."""
        self._weights = self._weights_at(check_count("epoch", epoch, 0))

    def observe(self, values: Mapping[str, float]) -> None:
        """Record one training iteration's value of every named term."""
        current = self._checked_values(values)
        if self.history_length:
            self._sums = [total + value for total, value in zip(self._sums, current)]
            self._count += 1
        self._observe(current)

    def end_epoch(self) -> None:
        """Close the epoch: its mean term values become the latest completed epoch."""
        if self._count:
            means = [total / self._count for total in self._sums]
            self._history = (self._history + [means])[-self.history_length :]
            self._sums = [0.0] * len(self.names)
            self._count = 0

    def config(self) -> dict[str, Any]:
        """The constructor arguments: ``build_schedule(self.key, **self.config())`` rebuilds it."""
        return {
            "names": list(self.names),
            "num_epochs": self.num_epochs,
            "unit": self.unit,
            "reference_epochs": self.reference_epochs,
            **self._params(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state (see the class docstring)."""
        return {
            "schedule": self.key,
            "config": self.config(),
            "weights": None if self._weights is None else list(self._weights),
            "epoch_sums": list(self._sums),
            "epoch_count": self._count,
            "history": [list(means) for means in self._history],
            **self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` of an identically built schedule.

        Only the budget ``num_epochs`` may differ: continuing a training with a longer
        budget keeps the statistics and applies the rule under the new budget.
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("schedule") != self.key:
            raise ValueError(f"state is for schedule {state.get('schedule')!r}, not {self.key!r}")
        saved = dict(state.get("config") or {})
        if {**saved, "num_epochs": self.num_epochs} != self.config():
            raise ValueError(
                f"state was saved by a schedule built with {saved!r}; "
                f"this one is built with {self.config()!r}"
            )
        count = len(self.names)
        try:
            weights = state["weights"]
            self._weights = None if weights is None else check_floats("weights", weights, count)
            self._sums = check_floats("epoch_sums", state["epoch_sums"], count)
            self._count = check_count("epoch_count", state["epoch_count"], 0)
            self._history = [check_floats("history", means, count) for means in state["history"]]
            self._load_extra_state(state)
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed {self.key!r} schedule state: {error!r}") from error

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={value!r}" for name, value in self.config().items())
        return f"{type(self).__name__}({arguments})"

    # -------------------------------------------------------------- helpers
    def _checked_values(self, values: Mapping[str, float]) -> list[float]:
        if not isinstance(values, Mapping):
            raise ValueError(f"observe() expects a mapping name -> value, got {type(values).__name__}")
        missing = [name for name in self.names if name not in values]
        unexpected = [name for name in values if name not in self.names]
        if missing or unexpected:
            raise ValueError(
                f"observe() expects a value for each of {list(self.names)}; "
                f"missing {missing}, unexpected {unexpected}"
            )
        minimum = 0.0 if self._values_must_be_nonnegative() else None
        return [check_number(f"observed value of {name!r}", values[name], minimum) for name in self.names]

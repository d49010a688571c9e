"""Tests of nnunet_losses.schedules: hand-computed weights, adaptivity, resume, validation."""
from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from nnunet_losses.schedules import (
    SCHEDULES,
    CoVWeighting,
    Equal,
    Fixed,
    Gradual,
    LinearRamp,
    Rebalance,
    SoftAdapt,
    Steal,
    TemporalWeighting,
    WeightSchedule,
    build_schedule,
)


def weights_at(schedule: WeightSchedule, epoch: int) -> list[float]:
    schedule.begin_epoch(epoch)
    return list(schedule.weights.values())


def run_epoch(schedule: WeightSchedule, epoch: int, rows: list[tuple[float, ...]]) -> None:
    schedule.begin_epoch(epoch)
    for row in rows:
        schedule.observe(dict(zip(schedule.names, row)))
    schedule.end_epoch()


# --------------------------------------------------------------- two-term schedules
@pytest.mark.parametrize(
    ("schedule", "epoch", "expected"),
    [
        (Fixed(0.5, num_epochs=300), 0, (1.0, 0.5)),
        (Fixed(0.5, num_epochs=300), 250, (1.0, 0.5)),
        (LinearRamp(num_epochs=300), 0, (1.0, 0.01)),
        (LinearRamp(num_epochs=300), 49, (1.0, 0.5)),
        (LinearRamp(num_epochs=300), 99, (1.0, 1.0)),
        (LinearRamp(num_epochs=300), 200, (1.0, 1.0)),
        (LinearRamp(0.0, 0.1, num_epochs=300), 5, (1.0, 0.5)),
        (Rebalance(num_epochs=300), 0, (0.99, 0.01)),
        (Rebalance(num_epochs=300), 49, (0.5, 0.5)),
        (Rebalance(num_epochs=300), 120, (0.0, 1.0)),
        (Steal(num_epochs=300), 0, (1.0, 0.01)),
        (Steal(num_epochs=300), 50, (0.5, 0.51)),
        (Steal(num_epochs=300), 95, (0.1, 0.96)),
        (Steal(num_epochs=300), 250, (0.1, 2.51)),
        (Steal(0.5, 0.1, 0.02, 0.2, num_epochs=300), 10, (0.3, 0.3)),
        (Steal(0.5, 0.1, 0.02, 0.2, num_epochs=300), 20, (0.2, 0.5)),
        (Equal(num_epochs=300), 0, (1.0, 1.0)),
        (Equal(num_epochs=300), 299, (1.0, 1.0)),
        (Gradual(num_epochs=300), 0, (1.0, 0.0)),
        (Gradual(num_epochs=300), 50, (0.5, 0.5)),
        (Gradual(num_epochs=300), 99, (0.01, 0.99)),
        (Gradual(num_epochs=300), 150, (0.01, 0.99)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, WeightSchedule) else repr(value),
)
def test_two_term_weights_epoch_unit(schedule: WeightSchedule, epoch: int, expected: tuple[float, float]) -> None:
    assert weights_at(schedule, epoch) == pytest.approx(expected, abs=1e-12)


def test_fraction_unit_maps_epochs_onto_the_reference_budget() -> None:
    schedule = Gradual(num_epochs=50, unit="fraction")
    assert schedule.schedule_time(25) == 50.0
    assert schedule.schedule_time(0) == 0.0
    assert Gradual(num_epochs=50).schedule_time(25) == 25.0
    assert Gradual(num_epochs=50, unit="fraction", reference_epochs=10).schedule_time(25) == 5.0


@pytest.mark.parametrize(
    ("schedule", "epoch", "expected"),
    [
        (Gradual(num_epochs=50, unit="fraction"), 25, (0.5, 0.5)),
        (Gradual(num_epochs=50, unit="fraction"), 49, (0.02, 0.98)),
        (Gradual(num_epochs=40, unit="fraction"), 20, (0.5, 0.5)),  # the CPU convergence protocol's 40 epochs
        (Gradual(num_epochs=40, unit="fraction"), 39, (0.025, 0.975)),
        (Rebalance(num_epochs=50, unit="fraction"), 0, (0.99, 0.01)),
        (Rebalance(num_epochs=50, unit="fraction"), 25, (0.49, 0.51)),
        (Rebalance(num_epochs=1000, unit="fraction"), 990, (0.0, 1.0)),
        (LinearRamp(num_epochs=1000, unit="fraction"), 490, (1.0, 0.5)),
        (Steal(num_epochs=200, unit="fraction"), 190, (0.1, 0.96)),
        (Steal(num_epochs=200, unit="fraction"), 100, (0.5, 0.51)),
        (Fixed(2.0, num_epochs=7, unit="fraction"), 6, (1.0, 2.0)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, WeightSchedule) else repr(value),
)
def test_two_term_weights_fraction_unit(schedule: WeightSchedule, epoch: int, expected: tuple[float, float]) -> None:
    assert weights_at(schedule, epoch) == pytest.approx(expected, abs=1e-12)


def test_weights_before_the_first_epoch_are_those_of_epoch_zero() -> None:
    assert Rebalance(num_epochs=10).weights == pytest.approx({"regional": 0.99, "map": 0.01})
    assert Steal(names=("ce", "boundary"), num_epochs=10).weights == pytest.approx({"ce": 1.0, "boundary": 0.01})


# ------------------------------------------------------------------------ temporal
def test_temporal_phase_boundaries_epoch_unit() -> None:
    schedule = TemporalWeighting(num_epochs=20)
    assert [schedule.phase(epoch) for epoch in (0, 4, 5, 9, 10, 19)] == [0, 0, 1, 1, 2, 2]
    seen = {}
    for epoch in range(12):
        schedule.begin_epoch(epoch)
        seen[epoch] = list(schedule.weights.values())
        schedule.observe({"gdl": 1.0, "cdl": 1.0, "bl": 1.0})
        schedule.end_epoch()
    # with all term means equal to 1 the weights are the importances of the phase
    assert seen[4] == pytest.approx([1.0, 0.0, 0.0])
    assert seen[5] == pytest.approx([0.25, 0.75, 0.0])
    assert seen[9] == pytest.approx([0.25, 0.75, 0.0])
    assert seen[10] == pytest.approx([0.1, 0.2, 0.7])


def test_temporal_phase_boundaries_fraction_unit() -> None:
    schedule = TemporalWeighting(num_epochs=1000, unit="fraction")
    assert [schedule.phase(epoch) for epoch in (0, 249, 250, 499, 500, 999)] == [0, 0, 1, 1, 2, 2]
    run_epoch(schedule, 249, [(1.0, 1.0, 1.0)])
    assert list(schedule.weights.values()) == [1.0, 0.0, 0.0]
    assert weights_at(schedule, 250) == pytest.approx([0.25, 0.75, 0.0])
    schedule.observe({"gdl": 1.0, "cdl": 1.0, "bl": 1.0})
    schedule.end_epoch()
    assert weights_at(schedule, 499) == pytest.approx([0.25, 0.75, 0.0])
    assert weights_at(schedule, 500) == pytest.approx([0.1, 0.2, 0.7])


def test_temporal_reweighting_hand_computed() -> None:
    schedule = TemporalWeighting(num_epochs=20)
    run_epoch(schedule, 4, [(0.6, 0.3, 1.5), (1.0, 0.5, 2.5)])  # means (0.8, 0.4, 2.0)
    # Tot = 1 * 0.8; w = (0.25 * 0.8 / 0.8, 0.75 * 0.8 / 0.4, 0)
    assert weights_at(schedule, 5) == pytest.approx([0.25, 1.5, 0.0])
    schedule.observe({"gdl": 0.5, "cdl": 0.2, "bl": 2.0})
    schedule.end_epoch()
    # Tot = 0.25 * 0.5 + 1.5 * 0.2 = 0.425; w = (0.1 Tot / 0.5, 0.2 Tot / 0.2, 0.7 Tot / 2.0)
    assert weights_at(schedule, 10) == pytest.approx([0.085, 0.425, 0.14875])


def test_temporal_each_term_gets_its_share_of_the_previous_epoch_total() -> None:
    rng = np.random.default_rng(0)
    schedule = TemporalWeighting(num_epochs=16)
    for epoch in range(16):
        previous = np.array(list(schedule.weights.values()))
        schedule.begin_epoch(epoch)
        weights = np.array(list(schedule.weights.values()))
        if epoch >= 5:
            means = np.array(schedule.state_dict()["history"][-1])
            shares = np.array(schedule.importances[schedule.phase(epoch)])
            contributions = weights * means
            np.testing.assert_allclose(contributions / contributions.sum(), shares, atol=1e-12)
            # the weighted total keeps the magnitude of the previous epoch's total
            assert contributions.sum() == pytest.approx(float(previous @ means), rel=1e-12)
        rows = rng.uniform(0.05, 3.0, size=(4, 3))
        for row in rows:
            schedule.observe(dict(zip(schedule.names, row)))
        schedule.end_epoch()


def test_temporal_without_completed_epoch_uses_the_importances() -> None:
    assert weights_at(TemporalWeighting(num_epochs=20), 7) == [0.25, 0.75, 0.0]
    assert weights_at(TemporalWeighting(num_epochs=20), 12) == [0.1, 0.2, 0.7]


def test_temporal_guard_on_vanishing_or_negative_terms() -> None:
    schedule = TemporalWeighting(num_epochs=20)
    run_epoch(schedule, 9, [(0.5, 0.25, -1.0)])
    # shares are taken on magnitudes: Tot = 0.25 * 0.5 + 0.75 * 0.25 + 0 * |-1| = 0.3125
    assert weights_at(schedule, 10) == pytest.approx([0.0625, 0.25, 0.21875])
    schedule.observe({"gdl": 0.5, "cdl": 0.0, "bl": 0.1})
    schedule.end_epoch()
    # cdl's mean is 0: it keeps 0.25; Tot = 0.0625 * 0.5 + 0.21875 * 0.1 = 0.053125
    assert weights_at(schedule, 11) == pytest.approx([0.010625, 0.25, 0.371875])
    schedule.observe({"gdl": 0.5, "cdl": 0.3, "bl": -1.0})
    schedule.end_epoch()
    # a negative boundary mean keeps a positive weight with its share of the magnitude
    weights = weights_at(schedule, 12)
    assert all(w > 0 for w in weights)
    contributions = [w * abs(m) for w, m in zip(weights, (0.5, 0.3, -1.0))]
    assert [c / sum(contributions) for c in contributions] == pytest.approx([0.1, 0.2, 0.7])
    assert sum(contributions) == pytest.approx(0.010625 * 0.5 + 0.25 * 0.3 + 0.371875 * 1.0)


# ------------------------------------------------------------------------- softadapt
def test_softadapt_equal_weights_until_two_epochs_complete() -> None:
    schedule = SoftAdapt(("a", "b"), beta=1.0, num_epochs=10)
    assert weights_at(schedule, 0) == [1.0, 1.0]
    schedule.observe({"a": 1.0, "b": 5.0})
    schedule.end_epoch()
    assert weights_at(schedule, 1) == [1.0, 1.0]
    schedule.end_epoch()  # an epoch without observations does not count
    assert weights_at(schedule, 2) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("options", "second_epoch", "expected"),
    [
        # slopes (-0.5, 0.5); softmax(-0.5, 0.5) * 2
        ({"beta": 1.0}, [(0.5, 2.5)], (0.5378828427399903, 1.46211715726001)),
        # slopes (-0.5, 1.5) / 2 = (-0.25, 0.75); softmax(2 * (-0.25, 0.75)) * 2
        ({"beta": 2.0, "normalized": True}, [(0.2, 3.0), (0.8, 4.0)], (0.23840584404423515, 1.7615941559557649)),
        # slopes (-0.5, 0.5); (0.5 e^-0.5, 2.5 e^0.5) normalised * 2
        ({"beta": 1.0, "loss_weighted": True}, [(0.5, 2.5)], (0.13706695360921117, 1.8629330463907887)),
    ],
)
def test_softadapt_matches_hand_computed_softmax(
    options: dict, second_epoch: list[tuple[float, float]], expected: tuple[float, float]
) -> None:
    schedule = SoftAdapt(("a", "b"), num_epochs=10, **options)
    run_epoch(schedule, 0, [(0.8, 1.5), (1.2, 2.5)])  # means (1.0, 2.0)
    run_epoch(schedule, 1, second_epoch)
    assert weights_at(schedule, 2) == pytest.approx(expected, rel=1e-12)


def test_softadapt_uses_the_two_latest_epochs_and_is_numerically_stable() -> None:
    schedule = SoftAdapt(("a", "b", "c"), beta=1000.0, num_epochs=10)
    run_epoch(schedule, 0, [(5.0, 5.0, 5.0)])
    run_epoch(schedule, 1, [(1.0, 1.0, 1.0)])
    run_epoch(schedule, 2, [(2.0, 0.0, 0.0)])  # slopes (1, -1, -1): exp(1000) would overflow
    weights = weights_at(schedule, 3)
    assert weights == pytest.approx([3.0, 0.0, 0.0])
    assert sum(weights) == pytest.approx(3.0)


def test_softadapt_normalized_with_flat_losses_gives_equal_weights() -> None:
    schedule = SoftAdapt(("a", "b"), beta=5.0, normalized=True, num_epochs=10)
    run_epoch(schedule, 0, [(1.0, 3.0)])
    run_epoch(schedule, 1, [(1.0, 3.0)])
    assert weights_at(schedule, 2) == [1.0, 1.0]


# ------------------------------------------------------------------------------- cov
def _ema(values: np.ndarray, decay: float | None) -> np.ndarray:
    """Running means of the rows of ``values``: plain, or exponential after the first row."""
    if decay is None:
        return np.cumsum(values, axis=0) / np.arange(1, len(values) + 1)[:, None]
    count = len(values)
    coefficients = np.zeros((count, count))
    for t in range(count):
        coefficients[t, 0] = decay**t
        coefficients[t, 1 : t + 1] = (1 - decay) * decay ** (t - np.arange(1, t + 1))
    return coefficients @ values


def cov_reference(values: np.ndarray, decay: float | None) -> np.ndarray:
    """The CoV weights after each iteration, recomputed from the whole prefix."""
    count, terms = values.shape
    loss_means = _ema(values, decay)
    ratios = np.vstack([np.ones(terms), values[1:] / loss_means[:-1]])
    ratio_means = _ema(ratios, decay)
    result = []
    for t in range(1, count + 1):
        if decay is None:
            variance = ratios[:t].var(axis=0)
        else:
            deviations = ratios[1:t] - ratio_means[: t - 1]
            variance = decay * (deviations**2).sum(axis=0) / t
        variation = np.sqrt(variance) / ratio_means[t - 1]
        total = variation.sum()
        result.append(np.ones(terms) if total == 0 else terms * variation / total)
    return np.array(result)


@pytest.mark.parametrize("decay", [None, 0.9])
def test_cov_matches_direct_recomputation(decay: float | None) -> None:
    rng = np.random.default_rng(1)
    steps = np.arange(12)[:, None]
    values = np.array([2.0, 0.5, 1.0]) * np.exp(-np.array([0.3, 0.05, 0.1]) * steps)
    values = values * rng.uniform(0.8, 1.2, size=values.shape)
    schedule = CoVWeighting(("dice", "ce", "focal"), decay=decay, num_epochs=3)
    expected = cov_reference(values, decay)
    for t, row in enumerate(values):
        schedule.observe(dict(zip(schedule.names, row)))
        np.testing.assert_allclose(list(schedule.weights.values()), expected[t], rtol=1e-10)
    assert not np.allclose(expected[-1], 1.0)


def test_cov_equal_weights_until_two_iterations_and_for_constant_terms() -> None:
    schedule = CoVWeighting(("a", "b"), num_epochs=3)
    assert schedule.weights == {"a": 1.0, "b": 1.0}
    schedule.observe({"a": 1.0, "b": 3.0})
    assert schedule.weights == {"a": 1.0, "b": 1.0}
    schedule.observe({"a": 1.0, "b": 3.0})
    assert schedule.weights == {"a": 1.0, "b": 1.0}
    schedule.observe({"a": 2.0, "b": 3.0})
    assert schedule.weights["a"] == pytest.approx(2.0) and schedule.weights["b"] == 0.0
    schedule.begin_epoch(1)  # epochs do not reset or change the weights
    assert schedule.weights["a"] == pytest.approx(2.0)


def test_cov_term_with_zero_running_mean_counts_as_unchanged() -> None:
    schedule = CoVWeighting(("a", "b"), num_epochs=3)
    for a, b in [(0.0, 1.0), (0.0, 2.0), (1.0, 1.0)]:
        schedule.observe({"a": a, "b": b})
    weights = list(schedule.weights.values())
    assert all(np.isfinite(weights))
    # a's ratios are (1, 1, 1): no variation; b's are (1, 2, 2/3)
    assert weights == pytest.approx([0.0, 2.0])


# ---------------------------------------------------------------------------- resume
FACTORIES: dict[str, Callable[[], WeightSchedule]] = {
    "fixed": lambda: Fixed(0.3, num_epochs=12),
    "ramp": lambda: LinearRamp(num_epochs=12, unit="fraction"),
    "rebalance": lambda: Rebalance(0.1, 0.05, num_epochs=12),
    "steal": lambda: Steal(num_epochs=12, unit="fraction"),
    "equal": lambda: Equal(num_epochs=12),
    "gradual": lambda: Gradual(num_epochs=12, unit="fraction"),
    "temporal": lambda: TemporalWeighting(num_epochs=12, unit="fraction"),
    "softadapt": lambda: SoftAdapt(("a", "b", "c"), beta=2.0, num_epochs=12),
    "softadapt-variants": lambda: SoftAdapt(
        ("a", "b", "c"), beta=2.0, normalized=True, loss_weighted=True, num_epochs=12
    ),
    "cov": lambda: CoVWeighting(("a", "b", "c"), num_epochs=12),
    "cov-decay": lambda: CoVWeighting(("a", "b", "c"), decay=0.8, num_epochs=12),
}
EPOCHS, ITERATIONS = 12, 4


def _trace(schedule: WeightSchedule, values: np.ndarray, epochs: range) -> list[dict[str, float]]:
    """Weights after each begin_epoch and each observe over ``epochs``."""
    trace = []
    for epoch in epochs:
        schedule.begin_epoch(epoch)
        trace.append(schedule.weights)
        for row in values[epoch]:
            schedule.observe(dict(zip(schedule.names, row.tolist())))
            trace.append(schedule.weights)
        schedule.end_epoch()
    return trace


@pytest.mark.parametrize("key", FACTORIES)
def test_resume_from_state_is_exact(key: str) -> None:
    rng = np.random.default_rng(2)
    terms = len(FACTORIES[key]().names)
    trend = np.exp(-rng.uniform(0.0, 0.3, size=terms) * np.arange(EPOCHS)[:, None])
    values = trend[:, None, :] * rng.uniform(0.5, 1.5, size=(EPOCHS, ITERATIONS, terms))
    reference = _trace(FACTORIES[key](), values, range(EPOCHS))
    if key not in ("fixed", "equal"):
        assert len({tuple(weights.values()) for weights in reference}) > 2
    for stop in range(1, EPOCHS):
        interrupted = FACTORIES[key]()
        _trace(interrupted, values, range(stop))
        saved = json.loads(json.dumps(interrupted.state_dict(), allow_nan=False))
        resumed = FACTORIES[key]()
        resumed.load_state_dict(saved)
        assert resumed.weights == interrupted.weights
        assert _trace(resumed, values, range(stop, EPOCHS)) == reference[stop * (ITERATIONS + 1) :]


def test_state_is_plain_json_and_rebuilds_the_schedule() -> None:
    schedule = build_schedule("temporal", ("g", "c", "b"), 40, unit="fraction", phase_starts=(4, 8))
    run_epoch(schedule, 0, [(1.0, 2.0, 3.0)])
    state = schedule.state_dict()
    assert json.loads(json.dumps(state, allow_nan=False)) == state
    rebuilt = build_schedule(state["schedule"], **state["config"])
    assert type(rebuilt) is TemporalWeighting and rebuilt.config() == schedule.config()
    rebuilt.load_state_dict(state)
    assert rebuilt.state_dict() == state


def test_load_state_dict_refuses_other_schedules_and_configurations() -> None:
    state = Rebalance(num_epochs=100).state_dict()
    with pytest.raises(ValueError, match="schedule 'rebalance', not 'ramp'"):
        LinearRamp(num_epochs=100).load_state_dict(state)
    with pytest.raises(ValueError, match="built with"):
        Rebalance(step=0.02, num_epochs=100).load_state_dict(state)
    with pytest.raises(ValueError, match="built with"):
        Rebalance(num_epochs=100, unit="fraction").load_state_dict(state)
    broken = dict(state)
    del broken["history"]
    with pytest.raises(ValueError, match="malformed"):
        Rebalance(num_epochs=100).load_state_dict(broken)
    with pytest.raises(ValueError, match="must hold 2 numbers"):
        Rebalance(num_epochs=100).load_state_dict({**state, "weights": [1.0]})


def test_load_state_dict_accepts_a_longer_budget() -> None:
    """Continuing a training with more epochs keeps the statistics under the new budget."""
    short = SoftAdapt(("a", "b"), num_epochs=2)
    for epoch, values in enumerate([(1.0, 2.0), (0.5, 2.5)]):
        short.begin_epoch(epoch)
        short.observe({"a": values[0], "b": values[1]})
        short.end_epoch()
    longer = SoftAdapt(("a", "b"), num_epochs=10)
    longer.load_state_dict(short.state_dict())
    longer.begin_epoch(2)
    short.begin_epoch(2)
    assert longer.weights == short.weights != {"a": 1.0, "b": 1.0}


# ------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Fixed(1.0, num_epochs=10, unit="epochs"), "unit must be one of"),
        (lambda: Fixed(1.0, num_epochs=0), "num_epochs must be an integer >= 1"),
        (lambda: Fixed(1.0, num_epochs=10.0), "num_epochs must be an integer >= 1"),
        (lambda: Fixed(1.0, num_epochs=10, reference_epochs=0), "reference_epochs"),
        (lambda: Fixed(float("nan"), num_epochs=10), "alpha must be finite"),
        (lambda: Fixed(-1.0, num_epochs=10), "alpha must be >= 0"),
        (lambda: Gradual(names=("a", "b", "c"), num_epochs=10), "weights 2 terms, got 3 names"),
        (lambda: Equal(names="ab", num_epochs=10), "not the string"),
        (lambda: Equal(names=("a", "a"), num_epochs=10), "unique"),
        (lambda: Equal(names=("a", ""), num_epochs=10), "non-empty strings"),
        (lambda: Steal(floor=2.0, num_epochs=10), "floor"),
        (lambda: LinearRamp(step=-0.01, num_epochs=10), "step must be >= 0"),
        (lambda: TemporalWeighting(("g", "c"), num_epochs=10), "one entry per name"),
        (lambda: TemporalWeighting(phase_starts=(10, 5), num_epochs=10), "strictly increasing"),
        (lambda: TemporalWeighting(phase_starts=(0, 5), num_epochs=10), "strictly increasing"),
        (lambda: TemporalWeighting(phase_starts=(5,), num_epochs=10), "one row per phase"),
        (
            lambda: TemporalWeighting(importances=((1, 0, 0), (0.5, 0.6, 0), (0.1, 0.2, 0.7)), num_epochs=10),
            "must sum to 1",
        ),
        (lambda: SoftAdapt(("a", "b"), beta=float("inf"), num_epochs=10), "beta must be finite"),
        (lambda: SoftAdapt(("a", "b"), normalized=1, num_epochs=10), "normalized must be True or False"),
        (lambda: CoVWeighting(("a", "b"), decay=1.0, num_epochs=10), r"decay must be None or in \(0, 1\)"),
        (lambda: CoVWeighting((), num_epochs=10), "non-empty strings"),
        (lambda: build_schedule("linear", ("a", "b"), 10), "valid names: fixed, ramp, rebalance, steal"),
    ],
)
def test_invalid_arguments_raise_clear_errors(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("schedule", "values", "match"),
    [
        (Equal(num_epochs=10), {"regional": 1.0}, r"missing \['map'\]"),
        (Equal(num_epochs=10), {"regional": 1.0, "map": 1.0, "extra": 0.0}, r"unexpected \['extra'\]"),
        (Equal(num_epochs=10), {"regional": float("nan"), "map": 1.0}, "'regional' must be finite"),
        (SoftAdapt(("a", "b"), num_epochs=10), {"a": float("inf"), "b": 1.0}, "'a' must be finite"),
        (SoftAdapt(("a", "b"), loss_weighted=True, num_epochs=10), {"a": -0.5, "b": 1.0}, "'a' must be >= 0"),
        (CoVWeighting(("a", "b"), num_epochs=10), {"a": 1.0, "b": -0.5}, "'b' must be >= 0"),
        (TemporalWeighting(num_epochs=10), [1.0, 2.0, 3.0], "expects a mapping"),
    ],
)
def test_observe_validates_values(schedule: WeightSchedule, values: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        schedule.observe(values)  # type: ignore[arg-type]


def test_negative_terms_are_accepted_where_the_rule_allows_them() -> None:
    schedule = SoftAdapt(("a", "b"), num_epochs=10)
    schedule.observe({"a": -0.5, "b": 1.0})  # a boundary loss is negative near its optimum
    Rebalance(num_epochs=10).observe({"regional": 0.3, "map": -2.0})


@pytest.mark.parametrize("epoch", [-1, 1.5, True])
def test_begin_epoch_validates_the_epoch(epoch: object) -> None:
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        Gradual(num_epochs=10).begin_epoch(epoch)  # type: ignore[arg-type]


def test_build_schedule_covers_every_name() -> None:
    assert list(SCHEDULES) == [
        "fixed", "ramp", "rebalance", "steal", "equal", "gradual", "temporal", "softadapt", "cov"
    ]
    two = ("ce", "boundary")
    assert isinstance(build_schedule("fixed", two, 10, alpha=0.5), Fixed)
    assert build_schedule("steal", two, 10, step=0.02).step == 0.02
    assert build_schedule("cov", ("a", "b", "c"), 10, decay=0.5).decay == 0.5
    schedule = build_schedule("gradual", two, 10, unit="fraction")
    assert schedule.names == two and schedule.reference_epochs == 100
    assert build_schedule("temporal", ("g", "c", "b"), 10).reference_epochs == 20

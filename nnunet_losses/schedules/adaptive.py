"""Adaptive weighting of a multi-term loss: SoftAdapt and coefficient-of-variation weighting.

Both are discussed in Hun, "Loss function analysis and optimization for spinal
segmentation in Magnetic Resonance Imaging" (``docs/schedules.md#adaptive-weighting``).
Their weights are normalised to sum to the number of terms, not to 1: equal weighting
then equals the plain sum of the terms, so a loss built with these schedules has the
magnitude nnU-Net's learning rate was tuned for.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Unit, WeightSchedule, check_count, check_floats, check_number


def _scaled_to_count(values: list[float]) -> list[float]:
    """``values`` scaled to sum to their count; equal weights when they sum to 0."""
    total = sum(values)
    if total <= 0.0:
        return [1.0] * len(values)
    return [len(values) * value / total for value in values]


class SoftAdapt(WeightSchedule):
    """SoftAdapt (Heydari, Thompson & Mehmood 2019), on epoch means.

    At the start of an epoch with at least two completed epochs, with ``L_j(e-1)`` and
    ``L_j(e-2)`` the means of term j over the two latest completed epochs::

        s_j = L_j(e-1) - L_j(e-2)                              (slope)
        s_j <- s_j / sum_k |s_k|                               (normalized=True)
        alpha_j = exp(beta s_j - m) / sum_k exp(beta s_k - m)  m = max_k beta s_k
        alpha_j ∝ L_j(e-1) exp(beta s_j)                       (loss_weighted=True)

    and the weights are ``n * alpha_j`` for ``n`` terms (see the module docstring). With
    ``beta > 0`` the term that decreases least (or increases) gets the largest weight.
    Edge cases: before two epochs are complete, equal weights 1; all slopes 0 in the
    normalized variant: the slopes stay 0 (equal weights); the loss-weighted variant needs
    non-negative terms (``observe`` raises ValueError otherwise) and gives equal weights
    when all latest means are 0. The rule counts completed epochs, so ``unit`` and
    ``reference_epochs`` have no effect; an epoch without observations is not counted.
    """

    key = "softadapt"
    history_length = 2

    def __init__(
        self,
        names: Sequence[str],
        beta: float = 0.1,
        normalized: bool = False,
        loss_weighted: bool = False,
        *,
        num_epochs: int,
        unit: Unit = "epoch",
        reference_epochs: int | None = None,
    ) -> None:
        super().__init__(names, num_epochs, unit=unit, reference_epochs=reference_epochs)
        self.beta = check_number("beta", beta)
        for flag, value in (("normalized", normalized), ("loss_weighted", loss_weighted)):
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be True or False, got {value!r}")
        self.normalized = normalized
        self.loss_weighted = loss_weighted

    def _params(self) -> dict[str, Any]:
        return {"beta": self.beta, "normalized": self.normalized, "loss_weighted": self.loss_weighted}

    def _values_must_be_nonnegative(self) -> bool:
        return self.loss_weighted

    def _weights_at(self, epoch: int) -> list[float]:
        if len(self._history) < 2:
            return [1.0] * len(self.names)
        older, latest = self._history
        slopes = [new - old for old, new in zip(older, latest)]
        if self.normalized:
            scale = sum(abs(slope) for slope in slopes)
            slopes = [slope / scale if scale > 0.0 else 0.0 for slope in slopes]
        exponents = [self.beta * slope for slope in slopes]
        top = max(exponents)
        alphas = [math.exp(exponent - top) for exponent in exponents]
        if self.loss_weighted:
            alphas = [mean * alpha for mean, alpha in zip(latest, alphas)]
        return _scaled_to_count(alphas)


class CoVWeighting(WeightSchedule):
    """Coefficient-of-variation weighting (Groenendijk, Karaoglu, Gevers & Mensink 2020).

    Per observed iteration ``t = 1, 2, ...`` with term values ``L_j(t)``:

    * loss ratio ``l_j(t) = L_j(t) / mu_j(t-1)``, with ``mu_j`` the running mean of ``L_j``
      (``l_j(1) = 1``: the first value is its own reference, as in the authors' code);
    * running mean ``m_j`` and standard deviation ``sigma_j`` of ``l_j`` (Welford);
    * ``c_j = sigma_j / m_j`` and weights ``n * c_j / sum_k c_k`` for ``n`` terms (see the
      module docstring).

    The weights are updated after each ``observe()``, so the weights used in iteration t
    come from iterations before t; they persist across epochs (``begin_epoch`` and
    ``end_epoch`` do not change them). ``decay`` (in (0, 1)) selects the paper's "mean
    decay": after the first iteration the means ``mu`` and ``m`` are exponential moving
    averages ``m <- decay * m + (1 - decay) * x``; as in the authors' code, only the means
    decay -- the variance is the average over all iterations of Welford's increment
    ``(x - m_old)(x - m_new)`` about the moving mean. ``decay=None`` gives plain running
    means. The standard deviation is the population one (the normalisation of the c_j
    makes the choice immaterial) and, unlike the authors' code, no epsilon is added.

    Edge cases: equal weights 1 until two iterations were observed (after one, every
    ``sigma_j`` is 0) and whenever all ``c_j`` are 0 (e.g. constant terms). Terms must be
    non-negative (``observe`` raises ValueError otherwise); a term whose running mean is 0
    (all its values so far 0) has no ratio and counts as unchanged, ``l_j = 1``. The rule
    counts iterations, so ``unit`` and ``reference_epochs`` have no effect.
    """

    key = "cov"

    def __init__(
        self,
        names: Sequence[str],
        decay: float | None = None,
        *,
        num_epochs: int,
        unit: Unit = "epoch",
        reference_epochs: int | None = None,
    ) -> None:
        super().__init__(names, num_epochs, unit=unit, reference_epochs=reference_epochs)
        if decay is not None and not 0.0 < check_number("decay", decay) < 1.0:
            raise ValueError(f"decay must be None or in (0, 1), got {decay!r}")
        self.decay = None if decay is None else float(decay)
        count = len(self.names)
        self._iterations = 0
        self._loss_mean = [0.0] * count
        self._ratio_mean = [0.0] * count
        self._ratio_m2 = [0.0] * count

    def _params(self) -> dict[str, Any]:
        return {"decay": self.decay}

    def _values_must_be_nonnegative(self) -> bool:
        return True

    def _observe(self, values: list[float]) -> None:
        self._iterations += 1
        first = self._iterations == 1
        step = 1.0 / self._iterations if self.decay is None or first else 1.0 - self.decay
        for j, value in enumerate(values):
            previous_mean = self._loss_mean[j]
            ratio = 1.0 if first or previous_mean <= 0.0 else value / previous_mean
            delta = ratio - self._ratio_mean[j]
            self._ratio_mean[j] += step * delta
            self._ratio_m2[j] += delta * (ratio - self._ratio_mean[j])
            self._loss_mean[j] = previous_mean + step * (value - previous_mean)
        self._weights = self._variation_weights()

    def _weights_at(self, epoch: int) -> list[float]:
        return self._variation_weights()

    def _variation_weights(self) -> list[float]:
        variations = [
            math.sqrt(max(m2, 0.0) / self._iterations) / mean if mean > 0.0 else 0.0
            for m2, mean in zip(self._ratio_m2, self._ratio_mean)
        ]
        return _scaled_to_count(variations)

    def _extra_state(self) -> dict[str, Any]:
        return {
            "iterations": self._iterations,
            "loss_mean": list(self._loss_mean),
            "ratio_mean": list(self._ratio_mean),
            "ratio_m2": list(self._ratio_m2),
        }

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        count = len(self.names)
        self._iterations = check_count("iterations", state["iterations"], 0)
        self._loss_mean = check_floats("loss_mean", state["loss_mean"], count)
        self._ratio_mean = check_floats("ratio_mean", state["ratio_mean"], count)
        self._ratio_m2 = check_floats("ratio_m2", state["ratio_m2"], count)

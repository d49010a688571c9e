"""How many runs of each trainer converged, judged against a control trainer of the same study.

A convergence CDF (region-wise loss paper Fig. 5, Fig. 6c) is read as "which fraction of
the models reached the plateau". The plateau is what a loss known to work reaches under
the same data, plans and budget: the **control** (e.g. nnU-Net's own Dice + CE,
``nnUNetTrainerDiceCE*``). With ``m`` the median final Dice of the control's counted runs
and ``t`` the tolerance (default 0.05), a run **converged** when its Dice is ``>= m - t``
(a run above the control's median counts as converged too). Per trainer, over its
counted runs (done, and diverged at Dice 0):

* ``converged = k / n`` with its exact (Clopper-Pearson) 95 % binomial interval,
  ``[B(0.025; k, n - k + 1), B(0.975; k + 1, n - k)]`` with ``B`` the beta quantile;
* the median, the quartiles and the range of the Dice;
* the number of diverged runs (already counted at Dice 0).

See ``docs/studies.md#convergence-study``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class ConvergenceRow:
    """One trainer's line of the convergence summary (see the module docstring)."""

    trainer: str
    n: int
    diverged: int
    converged: int
    converged_fraction: float
    ci_low: float
    ci_high: float
    median: float
    q25: float
    q75: float
    minimum: float
    maximum: float


def convergence_threshold(control_dice: Sequence[float], tolerance: float = DEFAULT_TOLERANCE) -> float:
    """``median(control) - tolerance``; ``ValueError`` without a counted control run."""
    if len(control_dice) == 0:
        raise ValueError("the control trainer has no counted run yet: no convergence threshold")
    return float(np.median(np.asarray(control_dice, dtype=float))) - tolerance


def convergence_rows(
    dice_by_trainer: Mapping[str, Sequence[float]], diverged_by_trainer: Mapping[str, int], threshold: float
) -> list[ConvergenceRow]:
    """One :class:`ConvergenceRow` per trainer with at least one counted run, in the given order."""
    rows = []
    for trainer, values in dice_by_trainer.items():
        dice = np.asarray(values, dtype=float)
        if dice.size == 0:
            continue
        k = int(np.count_nonzero(dice >= threshold))
        interval = binomtest(k, dice.size).proportion_ci(confidence_level=0.95, method="exact")
        q25, median, q75 = np.quantile(dice, [0.25, 0.5, 0.75])
        rows.append(
            ConvergenceRow(
                trainer, int(dice.size), int(diverged_by_trainer.get(trainer, 0)), k, k / dice.size,
                float(interval.low), float(interval.high), float(median), float(q25), float(q75), float(dice.min()), float(dice.max()),
            )
        )  # fmt: skip
    return rows


def convergence_csv_rows(rows: Sequence[ConvergenceRow]) -> list[dict]:
    return [asdict(row) for row in rows]


def convergence_markdown(rows: Sequence[ConvergenceRow], control: str, threshold: float, tolerance: float) -> str:
    """The summary as a markdown table, with a sentence stating the convergence rule."""
    lines = [
        f"A run converged when its final mean foreground Dice is >= {threshold:.3f}: the median of the control "
        f"{control} minus {tolerance:g}. 95 % interval: exact (Clopper-Pearson) binomial. Diverged runs are counted at Dice 0.",
        "",
        "| trainer | runs | diverged | converged | 95 % interval | median Dice | quartiles | range |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.trainer}{' (control)' if row.trainer == control else ''} | {row.n} | {row.diverged} | "
            f"{row.converged}/{row.n} = {row.converged_fraction:.2f} | {row.ci_low:.2f}-{row.ci_high:.2f} | {row.median:.3f} | "
            f"{row.q25:.3f}-{row.q75:.3f} | {row.minimum:.3f}-{row.maximum:.3f} |"
        )
    return "\n".join(lines) + "\n"

"""Study figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state).

* :func:`plot_cdf` — the convergence plot of the region-wise loss paper (Fig. 5 and
  Fig. 6c): per trainer, the empirical CDF ``F(x) = (1/M) sum_m 1[Dice_m <= x]`` of the
  final mean foreground Dice of its ``M`` counted runs (done, and diverged at Dice 0), as a
  step curve on [0, 1]; optionally in side-by-side panels, one per group of trainers
  (Fig. 6c: one panel per map, the control in each).
* :func:`plot_budget` — a budget test: per trainer, the converged fraction against the
  training iterations with its exact binomial interval (:mod:`.budget`).
* :func:`plot_boxes` — one box per trainer of a per-case metric.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..metrics import empirical_cdf
from .convergence import ConvergenceRow


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def cdf_legend_label(trainer: str, values: Sequence[float], diverged: int, failed: int) -> str:
    """``<trainer> (n=<counted runs>, median <Dice>, <k> diverged, <j> failed)``; zero counts and, without runs, the median are left out."""
    notes = [f"{count} {what}" for count, what in ((diverged, "diverged"), (failed, "failed")) if count]
    median = [f"median {np.median(np.asarray(values, dtype=float)):.3f}"] if len(values) else []
    return f"{trainer} ({', '.join([f'n={len(values)}', *median, *notes])})"


def _trainer_colours(trainers: Sequence[str]) -> dict[str, tuple]:
    """One colour per trainer, in order: tab20's 10 dark shades first, then its 10 light ones (cycling after 20)."""
    palette = matplotlib.colormaps["tab20"]
    shades = [palette(i) for i in range(0, 20, 2)] + [palette(i) for i in range(1, 20, 2)]
    return {trainer: shades[i % len(shades)] for i, trainer in enumerate(trainers)}


def _draw_cdf(
    ax: Axes,
    dice_by_trainer: Mapping[str, Sequence[float]],
    diverged_by_trainer: Mapping[str, int],
    failed_by_trainer: Mapping[str, int],
    colours: Mapping[str, tuple],
    threshold: tuple[float, str] | None,
) -> None:
    """One step curve per trainer on ``ax`` (a legend entry only, without counted runs), the threshold line, axes and legend."""
    for trainer, values in dice_by_trainer.items():
        label = cdf_legend_label(trainer, values, diverged_by_trainer.get(trainer, 0), failed_by_trainer.get(trainer, 0))
        if len(values) == 0:
            ax.plot([], [], color=colours[trainer], label=label)
            continue
        x, f = empirical_cdf(np.asarray(values, dtype=float))
        xs = np.concatenate([[-0.02], x, [1.02]])
        fs = np.concatenate([[0.0], f, [1.0]])
        ax.step(xs, fs, where="post", linewidth=2, color=colours[trainer], label=label)
    if threshold is not None:
        ax.axvline(threshold[0], color="0.4", linestyle="--", linewidth=1, label=threshold[1])
    ax.set_xlim(-0.02, 1.02)  # a little room, so that curves at Dice 0 or 1 stay visible
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("final mean foreground Dice (nnU-Net validation)")
    ax.set_ylabel("F(x) = fraction of runs with Dice <= x")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=1, frameon=False)  # below: never over a curve


def _left_out_note(failed_by_trainer: Mapping[str, int], unfinished: int) -> str:
    left_out = [f"{count} {what}" for count, what in ((sum(failed_by_trainer.values()), "failed"), (unfinished, "unfinished")) if count]
    return f"\nnot shown: {' and '.join(left_out)} run(s)" if left_out else ""


def cdf_figure(
    dice_by_trainer: Mapping[str, Sequence[float]],
    diverged_by_trainer: Mapping[str, int],
    failed_by_trainer: Mapping[str, int],
    title: str,
    unfinished: int = 0,
    threshold: tuple[float, str] | None = None,
    panels: Mapping[str, Sequence[str]] | None = None,
) -> Figure:
    """The CDF of every trainer; the legend gives n, the median, diverged and failed runs per trainer.

    ``dice_by_trainer`` holds every counted run, diverged ones included (at Dice 0), so
    ``n`` and the median include them, e.g. ``nnUNetTrainerRRW (n=20, median 0.912, 2
    diverged)``. Failed and unfinished runs are not in the curves: the legend gives the
    failed count per trainer, the title both totals. Trainers without a counted run
    appear in the legend only. ``threshold``: ``(Dice, label)`` drawn as a dashed vertical line
    (the convergence threshold of :mod:`.convergence`).

    Without ``panels``, one axes with every trainer. With ``panels`` (title -> trainers, in
    order), one axes per panel side by side, the layout of the RW paper's Fig. 6c (one panel
    per map); a trainer in several panels (the control) keeps its colour in all of them.
    """
    groups = {title: list(dice_by_trainer)} if panels is None else panels
    colours = _trainer_colours(list(dict.fromkeys(trainer for trainers in groups.values() for trainer in trainers)))
    figure = _figure(7 if panels is None else 6.5 * len(groups), 5 + 0.25 * max(len(trainers) for trainers in groups.values()))
    for index, (name, trainers) in enumerate(groups.items()):
        ax = figure.add_subplot(1, len(groups), index + 1)
        _draw_cdf(ax, {trainer: dice_by_trainer[trainer] for trainer in trainers}, diverged_by_trainer, failed_by_trainer, colours, threshold)
        ax.set_title(name + (_left_out_note(failed_by_trainer, unfinished) if panels is None else ""), fontsize=10)
    if panels is not None:
        figure.suptitle(title + _left_out_note(failed_by_trainer, unfinished), fontsize=10)
    return figure


def plot_cdf(
    dice_by_trainer: Mapping[str, Sequence[float]],
    diverged_by_trainer: Mapping[str, int],
    failed_by_trainer: Mapping[str, int],
    stem: Path,
    title: str,
    unfinished: int = 0,
    threshold: tuple[float, str] | None = None,
    panels: Mapping[str, Sequence[str]] | None = None,
) -> list[Path]:
    """:func:`cdf_figure` written to ``<stem>.png`` and ``<stem>.pdf``."""
    return _save(cdf_figure(dice_by_trainer, diverged_by_trainer, failed_by_trainer, title, unfinished, threshold, panels), stem)


def _save(figure: Figure, stem: Path) -> list[Path]:
    """``figure`` laid out and written to ``<stem>.png`` and ``<stem>.pdf``."""
    figure.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        figure.savefig(path, dpi=120)
    return paths


def plot_budget(budgets: Sequence[int], rows_by_trainer: Mapping[str, Sequence[ConvergenceRow]], stem: Path, title: str) -> list[Path]:
    """Converged fraction ``k / n`` against training iterations, one line per trainer, its Clopper-Pearson interval as error bars.

    ``rows_by_trainer[trainer][i]`` is the trainer's convergence row at ``budgets[i]``.
    Trainers are shifted a little sideways at each budget, so that equal fractions stay
    apart; the legend gives each trainer's counts, budget by budget.
    """
    colours = _trainer_colours(list(rows_by_trainer))
    figure = _figure(7, 4.8 + 0.25 * len(rows_by_trainer))
    ax = figure.add_subplot(1, 1, 1)
    x_budgets = np.asarray(budgets, dtype=float)
    spread = 0.015 * (x_budgets.max() - x_budgets.min() or x_budgets.max())
    for index, (trainer, rows) in enumerate(rows_by_trainer.items()):
        x = x_budgets + (index - (len(rows_by_trainer) - 1) / 2) * spread
        y = np.array([row.converged_fraction for row in rows])
        errors = np.array([[row.converged_fraction - row.ci_low for row in rows], [row.ci_high - row.converged_fraction for row in rows]])
        counts = ", ".join(f"{row.converged}/{row.n}" for row in rows)
        ax.errorbar(x, y, yerr=errors, marker="o", capsize=4, linewidth=2, color=colours[trainer], label=f"{trainer} (converged {counts})")
    ax.set_xticks(x_budgets, [str(budget) for budget in budgets])
    ax.set_xlabel("training iterations (epochs x iterations per epoch)")
    ax.set_ylabel("converged fraction, 95 % Clopper-Pearson interval")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
    return _save(figure, stem)


def plot_boxes(values_by_trainer: Mapping[str, Sequence[float]], ylabel: str, path: Path, title: str = "") -> Path:
    """One box per trainer over its finite values (NaN left out; n under each box)."""
    figure = _figure(max(4.0, 1.6 * len(values_by_trainer) + 1), 4.5)
    ax = figure.add_subplot()
    data = [np.asarray(values, dtype=float) for values in values_by_trainer.values()]
    data = [values[np.isfinite(values)] for values in data]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(data) + 1), [f"{trainer}\n(n={len(values)})" for trainer, values in zip(values_by_trainer, data)], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path

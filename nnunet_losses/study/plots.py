"""Study figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state).

* :func:`plot_cdf` — the convergence plot of the region-wise loss paper (Fig. 5 and
  Fig. 6c): per trainer, the empirical CDF ``F(x) = (1/M) sum_m 1[Dice_m <= x]`` of the
  final mean foreground Dice of its ``M`` successful runs, as a step curve on [0, 1].
* :func:`plot_boxes` — one box per trainer of a per-case metric.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..metrics import empirical_cdf


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def plot_cdf(
    dice_by_trainer: Mapping[str, Sequence[float]],
    failed_by_trainer: Mapping[str, int],
    stem: Path,
    title: str,
    unfinished: int = 0,
) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; the legend gives n, the median and failures per trainer.

    Trainers without a successful run appear in the legend only; the title says how
    many runs failed and how many are unfinished (both are left out of the curves).
    """
    figure = _figure(7, 5 + 0.25 * len(dice_by_trainer))
    ax = figure.add_subplot()
    for trainer, values in dice_by_trainer.items():
        failed = failed_by_trainer.get(trainer, 0)
        suffix = f", {failed} failed" if failed else ""
        if len(values) == 0:
            ax.plot([], [], label=f"{trainer} (n=0{suffix})")
            continue
        x, f = empirical_cdf(np.asarray(values, dtype=float))
        xs = np.concatenate([[-0.02], x, [1.02]])
        fs = np.concatenate([[0.0], f, [1.0]])
        ax.step(xs, fs, where="post", linewidth=2, label=f"{trainer} (n={len(values)}, median {np.median(values):.3f}{suffix})")
    left_out = [f"{count} {what}" for count, what in ((sum(failed_by_trainer.values()), "failed"), (unfinished, "unfinished")) if count]
    ax.set_title(title + (f"\nnot shown: {' and '.join(left_out)} run(s)" if left_out else ""), fontsize=10)
    ax.set_xlim(-0.02, 1.02)  # a little room, so that curves at Dice 0 or 1 stay visible
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("final mean foreground Dice (nnU-Net validation)")
    ax.set_ylabel("F(x) = fraction of runs with Dice <= x")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=1, frameon=False)  # below: never over a curve
    figure.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        figure.savefig(path, dpi=120)
    return paths


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

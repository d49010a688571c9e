"""``loss_terms.png``: the loss terms and their weights per epoch, beside nnU-Net's progress.png.

The picture is sized and styled as nnU-Net's ``progress.png``
(``nnunetv2.training.logging.nnunet_logger.LocalLogger.plot_progress_png``): seaborn's
style at font scale 2.5, 30 x 18 inches per panel, thick lines, each panel's legend
above its top left corner. One panel per quantity: the training mean of every loss
term, then every term's weight. The style is applied only while this picture is drawn,
so it looks the same whether or not nnU-Net has changed the global style before.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import matplotlib
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANEL_SIZE = (30.0, 18.0)  # inches per panel, as nnU-Net's progress.png (30 x 54 for its three panels)
FONT_SCALE = 2.5  # nnU-Net's sns.set(font_scale=2.5)
LINE_WIDTH = 4
DPI = 100  # matplotlib's default, which progress.png uses


def _panel(ax, entries: Sequence[Mapping[str, float]], ylabel: str) -> None:
    """One line per name of the last epoch's entry; epochs without the name are gaps."""
    epochs = range(len(entries))
    names = list(entries[-1])
    for name in names:
        ax.plot(epochs, [entry.get(name, float("nan")) for entry in entries], label=name, linewidth=LINE_WIDTH)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=len(names), frameon=False)


def loss_terms_figure(logging: Mapping) -> Figure | None:
    """The figure of :func:`plot_loss_terms`, laid out; ``None`` before the first epoch has ended."""
    terms = [entry for entry in logging.get("loss_terms", []) if entry]
    weights = [entry for entry in logging.get("loss_weights", []) if entry]
    if not terms:
        return None
    panels = [(terms, "loss term (train mean)")] + ([(weights, "weight")] if weights else [])
    with _style():
        figure = Figure(figsize=(PANEL_SIZE[0], PANEL_SIZE[1] * len(panels)), dpi=DPI)
        FigureCanvasAgg(figure)
        axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
        for ax, (entries, ylabel) in zip(axes, panels):
            _panel(ax, entries, ylabel)
        figure.tight_layout()
    return figure


def plot_loss_terms(logging: Mapping, path: Path) -> None:
    """Write ``path``: a panel of each term's training mean and a panel of each term's weight, per epoch.

    ``logging`` is nnU-Net's ``my_fantastic_logging`` with this package's ``loss_terms``
    and ``loss_weights`` lists (one dict per epoch). Nothing is written before the first
    epoch has ended.
    """
    figure = loss_terms_figure(logging)
    if figure is not None:
        with _style():
            figure.savefig(path, dpi=DPI)


def _style() -> AbstractContextManager:
    """nnU-Net's look for progress.png: seaborn's darkgrid style and notebook context at font scale 2.5."""
    return matplotlib.rc_context({**sns.axes_style("darkgrid"), **sns.plotting_context("notebook", font_scale=FONT_SCALE)})

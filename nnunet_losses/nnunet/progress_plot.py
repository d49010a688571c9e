"""``loss_terms.png``: the loss terms and their weights per epoch, beside nnU-Net's progress.png."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_terms(logging: dict, path: Path) -> None:
    """Two panels: each term's training mean and each term's weight, per epoch."""
    terms = [entry for entry in logging.get("loss_terms", []) if entry]
    weights = [entry for entry in logging.get("loss_weights", []) if entry]
    if not terms:
        return
    epochs = range(len(terms))
    figure, (ax_terms, ax_weights) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for name in terms[-1]:
        ax_terms.plot(epochs, [entry.get(name, float("nan")) for entry in terms], label=name)
    for name in weights[-1] if weights else []:
        ax_weights.plot(range(len(weights)), [entry.get(name, float("nan")) for entry in weights], label=name)
    ax_terms.set_ylabel("loss term (train mean)")
    ax_weights.set_ylabel("weight")
    ax_weights.set_xlabel("epoch")
    for ax in (ax_terms, ax_weights):
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)

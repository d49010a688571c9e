"""The README's pictures: the map kinds, the weight schedules and the gradient-sign analysis.

    python studies/figures/make_figures.py     # writes maps.png, schedules.png, simplex.png here
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnunet_losses.maps import (  # noqa: E402
    ac_map,
    boundary_distance_map,
    cao_map,
    class_emphasis_rrw_map,
    rrw_map,
    signed_distance_map,
    simplex_grid,
)
from nnunet_losses.schedules import Equal, Fixed, Gradual, LinearRamp, Rebalance, Steal, TemporalWeighting  # noqa: E402
from nnunet_losses.synthetic import cardiac_case  # noqa: E402

HERE = Path(__file__).resolve().parent
LV = 3


def maps_figure() -> Path:
    image, labels, spacing = cardiac_case(seed=3, shape=(10, 128, 128))
    labels2d, image2d, spacing2d = labels[2].astype(np.int64), image[2], spacing[1:]
    panels = [
        ("image and labels", None),
        ("RRW (eq. 4), channel LV", rrw_map(labels2d, 4, spacing2d)[LV]),
        ("RW-Boundary = Kervadec (eq. 3), LV, mm", signed_distance_map(labels2d, 4, spacing2d)[LV]),
        ("one-sided HD distance D, LV, mm", boundary_distance_map(labels2d, 4, spacing2d)[LV]),
        ("AC: 1 - g, LV", ac_map(labels2d, 4)[LV]),
        ("Cao: 1 - 2g, LV", cao_map(labels2d, 4)[LV]),
        ("class-emphasis RRW (w_LV = 3), LV", class_emphasis_rrw_map(labels2d, 4, [1, 1, 1, 3], spacing2d)[LV]),
        ("RRW, background channel", rrw_map(labels2d, 4, spacing2d)[0]),
    ]
    figure, axes = plt.subplots(2, 4, figsize=(16, 8.2))
    for ax, (title, values) in zip(axes.ravel(), panels):
        if values is None:
            ax.imshow(image2d, cmap="gray")
            ax.imshow(np.ma.masked_equal(labels2d, 0), cmap="viridis", alpha=0.45, vmin=0, vmax=3)
        else:
            limit = np.abs(values).max()
            shown = ax.imshow(values, cmap="coolwarm", vmin=-limit, vmax=limit)
            figure.colorbar(shown, ax=ax, fraction=0.046)
            ax.contour(labels2d == LV, levels=[0.5], colors="k", linewidths=0.6)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    figure.suptitle("Map kinds on a synthetic short-axis slice (black line: LV boundary; red > 0 > blue)")
    figure.tight_layout()
    path = HERE / "maps.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def weights_over(schedule, epochs: int) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {name: [] for name in schedule.names}
    for epoch in range(epochs):
        schedule.begin_epoch(epoch)
        for name, weight in schedule.weights.items():
            series[name].append(weight)
    return series


def schedules_figure() -> Path:
    epochs = 300
    names = ("regional", "boundary")
    schedules = [
        ("fixed (alpha = 0.1)", Fixed(0.1, names=names, num_epochs=epochs)),
        ("linear ramp", LinearRamp(names=names, num_epochs=epochs)),
        ("rebalance (Kervadec)", Rebalance(names=names, num_epochs=epochs)),
        ("steal (Kervadec's code)", Steal(names=names, num_epochs=epochs)),
        ("equal (RW paper)", Equal(names=names, num_epochs=epochs)),
        ("gradual (RW paper)", Gradual(names=names, num_epochs=epochs)),
    ]
    figure, axes = plt.subplots(2, 4, figsize=(17, 7.2))
    for ax, (title, schedule) in zip(axes.ravel(), schedules):
        for name, values in weights_over(schedule, epochs).items():
            ax.plot(values, label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch (unit='epoch', 300-epoch training)")
        ax.legend()
        ax.grid(alpha=0.3)
    temporal = TemporalWeighting(num_epochs=1000, unit="fraction")
    shares = np.array([temporal.importances[temporal.phase(e)] for e in range(1000)])
    for ax in axes.ravel()[6:]:
        ax.axis("off")
    ax = axes.ravel()[6]
    ax.axis("on")
    ax.stackplot(range(1000), shares.T, labels=temporal.names)
    ax.set_title("temporal loss: target shares P (unit='fraction')")
    ax.set_xlabel("epoch of a 1000-epoch nnU-Net training")
    ax.legend(loc="upper right")
    figure.tight_layout()
    path = HERE / "schedules.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def simplex_figure() -> Path:
    """Paper Fig. 2: for one voxel of class 3, the number of negative gradient components over the simplex."""
    points = simplex_grid(3, 120)
    vectors = {
        "RW-Boundary (z = [4.0, 1.5, -2.0] mm)": np.array([4.0, 1.5, -2.0]),
        "RRW (z = [1, 1, -0.5])": np.array([1.0, 1.0, -0.5]),
    }
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    xy = points @ corners
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, (title, z) in zip(axes, vectors.items()):
        gradient = points * (z[None] - points @ z[:, None])
        negatives = np.sum(gradient < -1e-12, axis=1)
        shown = ax.scatter(xy[:, 0], xy[:, 1], c=negatives, s=4, cmap="RdYlGn_r", vmin=1, vmax=2)
        ax.set_title(f"{title}\n{np.mean(negatives > 1):.0%} of the simplex pushes 2 classes up")
        for corner, name in zip(corners, ("s1", "s2", "s3 (true class)")):
            ax.annotate(name, corner, ha="center", va="top" if corner[1] == 0 else "bottom")
        ax.set_aspect("equal")
        ax.axis("off")
    figure.colorbar(shown, ax=axes, label="negative gradient components", ticks=[1, 2])
    path = HERE / "simplex.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


if __name__ == "__main__":
    for written in (maps_figure(), schedules_figure(), simplex_figure()):
        print(written)

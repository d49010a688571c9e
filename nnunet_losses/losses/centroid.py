"""Centroid-based distance loss (Wong et al., "A centroid-based distance loss ..."; ``docs/losses.md``).

For each sample and each selected foreground class: threshold the softmax at 0.5,
take the maximum projections of target and prediction along two axes (coronal and
sagittal in the paper), find the connected components of each projection and their
centroids (``Gamma`` in the target, ``Phi`` in the prediction), then

    d_p = mean_{gamma in Gamma_p} min_{phi in Phi_p} |gamma - phi|        (p = c, s)
    L_d = d_c + d_s
    L_N = max(1, |N_Gamma_c - N_Phi_c| + |N_Gamma_s - N_Phi_s|)
    L_c = L_Dice * L_d * L_N

``L_d`` and ``L_N`` carry no gradient; they scale the soft Dice loss of the class. The
loss is the mean of ``L_c`` over samples and classes. Distances are in voxels unless a
``spacing`` (of the projected axes, mm) is given, as in the paper.

Cases the paper leaves undefined, chosen so the loss keeps a learning signal:

* a projection whose target has components but prediction none (a missed structure),
  or whose prediction has components but target none (pure false positives): ``d_p``
  is the projection's diagonal, the largest distance it can hold, so Dice is scaled up;
* neither has components: ``d_p = 0``;
* ``L_d`` below ``distance_floor`` (default 1 voxel), e.g. perfectly placed centroids:
  ``L_d`` is raised to the floor, so the loss falls back to (a multiple of) Dice rather
  than vanishing while the overlap is still imperfect.

2D inputs have no projection: the image itself is the single view (``L_d = d``).

**Host synchronisation.** Connected components and their centroids are defined on the
thresholded prediction and are computed on the CPU (numpy, ``cc3d``): every call copies
the thresholded prediction and the target to the host. This is the one loss of the
package that synchronises by definition; it is exempt from the sync-free and
``torch.compile(fullgraph=True)`` guarantees of the others.

``reduction="none"``: per-sample means of ``L_c`` over the scored classes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..metrics.centroid import centroid_distance, component_centroids
from .base import SegmentationLoss, functional_form
from .inputs import LossInput, Reduction, reduce_samples


def projection_distance(target: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, int]:
    """``(d, |N_Gamma - N_Phi|)`` for one binary view, with the undefined cases above."""
    gamma = component_centroids(target, spacing=spacing)
    phi = component_centroids(prediction, spacing=spacing)
    count_difference = abs(len(gamma) - len(phi))
    if len(gamma) == 0 and len(phi) == 0:
        return 0.0, 0
    if len(gamma) == 0 or len(phi) == 0:
        extent = np.asarray(target.shape, dtype=float) * (1.0 if spacing is None else np.asarray(spacing, dtype=float))
        return float(np.linalg.norm(extent)), count_difference
    return float(centroid_distance(gamma, phi)), count_difference


class CentroidDistanceLoss(SegmentationLoss):
    """``L_c = L_Dice * L_d * L_N`` per sample and foreground class.

    ``projection_axes``: the two spatial axes projected away (3D inputs);
    ``include_background``: also score class 0 (default: the foreground classes);
    ``spacing``: mm per voxel of the full spatial grid (default: voxel units);
    ``smooth``: soft-Dice smoothing.
    """

    def __init__(
        self,
        projection_axes: tuple[int, int] = (0, 1),
        include_background: bool = False,
        spacing: Sequence[float] | None = None,
        distance_floor: float = 1.0,
        smooth: float = 1e-5,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        if len(projection_axes) != 2 or projection_axes[0] == projection_axes[1]:
            raise ValueError(f"projection_axes must be two different spatial axes, got {projection_axes}")
        if distance_floor <= 0:
            raise ValueError(f"distance_floor must be positive, got {distance_floor}")
        self.projection_axes = tuple(projection_axes)
        self.include_background = include_background
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.distance_floor = distance_floor
        self.smooth = smooth

    def _views(self, volume: np.ndarray) -> list[tuple[np.ndarray, Sequence[float] | None]]:
        """The binary views of one volume with their spacing: two projections in 3D, itself in 2D."""
        if volume.ndim == 2:
            return [(volume, self.spacing)]
        if volume.ndim != 3:
            raise ValueError(f"centroid loss needs 2D or 3D spatial inputs, got {volume.ndim}D")
        views = []
        for axis in self.projection_axes:
            kept = None if self.spacing is None else [s for i, s in enumerate(self.spacing) if i != axis]
            views.append((volume.any(axis=axis), kept))
        return views

    def scale_factors(self, target: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
        """``(L_d, L_N)`` for one binary target and prediction (floored ``L_d``)."""
        total_distance, total_count = 0.0, 0
        for (t_view, spacing), (p_view, _) in zip(self._views(target), self._views(prediction)):
            d, n = projection_distance(t_view, p_view, spacing)
            total_distance += d
            total_count += n
        return max(total_distance, self.distance_floor), float(max(1, total_count))

    def compute(self, batch: LossInput) -> Tensor:
        first = 0 if self.include_background else 1
        s, g = batch.masked(batch.probs, batch.onehot)
        axes = tuple(range(2, s.ndim))
        tp = (s * g).sum(axes)
        dice_loss = 1.0 - (2.0 * tp + self.smooth) / (s.sum(axes) + g.sum(axes) + self.smooth)
        predicted = (s.detach() > 0.5).cpu().numpy()  # host copy: components are computed with numpy
        target = (g > 0.5).cpu().numpy()
        factors = torch.ones_like(dice_loss)
        for b in range(s.shape[0]):
            for k in range(first, batch.num_classes):
                distance, count = self.scale_factors(target[b, k], predicted[b, k])
                factors[b, k] = distance * count
        return reduce_samples(dice_loss[:, first:] * factors[:, first:], self.reduction)


centroid_distance_loss = functional_form(CentroidDistanceLoss, "centroid_distance_loss")

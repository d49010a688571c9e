"""Region-wise (RW) maps from a label array (Valverde et al., "Region-wise loss for
biomedical image segmentation", Pattern Recognition 2023; ``docs/maps.md``).

A RW map ``z`` has one channel per class (background is class 0 and counts as a
class) and the spatial shape of the labels. The RW loss is ``mean(z * softmax(x))``.
Every function returns float32 arrays of shape ``(C, *spatial)``, except
:func:`rrw_compact`, which returns the single channel that, with the labels,
determines the whole RRW map.

Distances are Euclidean between voxel centres, in mm with the given spacing (see
:mod:`nnunet_losses.maps.distance`).

Defined edge cases (the papers leave them open):

* **absent class** ``k``: RRW channel ``k`` is 1 everywhere (outside the class);
  signed-distance channel ``k`` is 0 (Kervadec's ``one_hot2dist`` leaves it blank).
* **class filling the whole array**: it has no boundary inside the array. Its RRW
  value is -1 everywhere (uniform importance; the map stays rectified), its signed
  distance channel is 0 (no boundary to align; Kervadec's code gives undefined
  values there).
* **single voxel** of a class: its inner distance is the smallest spacing to a
  neighbour, so its RRW value is -1.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .distance import Spacing, distance_to_class, own_class_distance, validate_labels, validate_spacing


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot encoding ``g[k, i] = 1[y_i = k]`` as float32, shape ``(C, *spatial)``."""
    labels = validate_labels(labels, num_classes)
    return (np.arange(num_classes).reshape((-1,) + (1,) * labels.ndim) == labels[None]).astype(np.float32)


def rrw_compact(
    labels: np.ndarray,
    num_classes: int,
    spacing: Spacing | None = None,
    threads: int = 1,
    own_distance: np.ndarray | None = None,
) -> np.ndarray:
    """RRW value of every voxel at its own class, shape ``(1, *spatial)`` (eq. 4).

    ``v(i) = -d(i, c) / max_{j in Y_c} d(j, c)`` with ``c = y_i`` and ``d`` the inner EDT of
    class ``c`` (mm). Values lie in ``[-1, 0)``. The full map is ``z[c] = v`` at the true
    class and ``z[k] = 1`` elsewhere (:func:`expand_rrw`), so this channel and the labels
    are all that needs storing. ``own_distance``: :func:`own_class_distance` of the same
    labels and spacing when the caller already has it (it is not modified).
    """
    labels = validate_labels(labels, num_classes)
    spacing = validate_spacing(spacing, labels.ndim)
    if labels.min() == labels.max():  # a single class fills the array: no boundary anywhere
        return np.full((1,) + labels.shape, -1.0, dtype=np.float32)
    distance = _own_distance(labels, spacing, threads, own_distance)
    scale = np.zeros(num_classes, dtype=np.float32)
    for c in range(num_classes):
        largest = np.max(distance, where=labels == c, initial=0.0)
        if largest > 0:  # class present (every voxel of a present class is >= 1 spacing from another class)
            scale[c] = -1.0 / largest
    return (distance * scale[labels])[None]


def _own_distance(labels: np.ndarray, spacing: tuple[float, ...], threads: int, given: np.ndarray | None) -> np.ndarray:
    """``given`` after a shape check, else :func:`own_class_distance` of ``labels``."""
    if given is None:
        return own_class_distance(labels, spacing, threads)
    if given.shape != labels.shape:
        raise ValueError(f"own_distance has shape {given.shape} but the labels have shape {labels.shape}")
    return given


def expand_rrw(compact: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Full RRW map from :func:`rrw_compact`: ``z[k] = v`` where ``y = k``, else 1."""
    labels = validate_labels(labels, num_classes)
    values = np.asarray(compact, dtype=np.float32).reshape(labels.shape)
    z = np.ones((num_classes,) + labels.shape, dtype=np.float32)
    for k in range(num_classes):
        np.copyto(z[k], values, where=labels == k)
    return z


def rrw_map(labels: np.ndarray, num_classes: int, spacing: Spacing | None = None, threads: int = 1) -> np.ndarray:
    """Rectified RW map (eq. 4): ``-d(i,k)/max_{j in Y_k} d(j,k)`` inside class ``k``, 1 outside."""
    return expand_rrw(rrw_compact(labels, num_classes, spacing, threads), labels, num_classes)


def class_emphasis_rrw_map(
    labels: np.ndarray,
    num_classes: int,
    class_weights: Sequence[float],
    spacing: Spacing | None = None,
    threads: int = 1,
) -> np.ndarray:
    """RRW map whose whole per-voxel vector is multiplied by the weight of the voxel's class (§3.3).

    ``z'[k, i] = w[y_i] * z[k, i]``. Scaling the whole vector of a voxel keeps it
    rectified (its off-class entries stay equal and above the true-class entry) while
    scaling that voxel's loss and gradient; per-channel weights would break
    rectification. Weights must be positive.
    """
    weights = np.asarray(class_weights, dtype=np.float32)
    if weights.shape != (num_classes,) or not np.all(weights > 0):
        raise ValueError(f"class_weights must be {num_classes} positive numbers, got {class_weights}")
    labels = validate_labels(labels, num_classes)
    return rrw_map(labels, num_classes, spacing, threads) * weights[labels][None]


def signed_distance_map(
    labels: np.ndarray,
    num_classes: int,
    spacing: Spacing | None = None,
    kervadec_shift: bool = False,
    threads: int = 1,
    own_distance: np.ndarray | None = None,
) -> np.ndarray:
    """RW-Boundary map (eq. 3), i.e. Kervadec's signed distance ``phi_G`` (mm).

    ``z[k, i] = +dist(i, Y_k)`` for ``i`` outside class ``k`` and ``-d(i, k)`` (inner EDT)
    inside it. RW loss with this map equals Kervadec's boundary loss.

    ``kervadec_shift=True`` reproduces boundary-loss's ``one_hot2dist`` exactly: the
    inside becomes ``-(d(i, k) - 1)``, so with unit spacing the inner edge is 0. As in that
    code, 1 is subtracted whatever the spacing. Default: unshifted (the RW paper's eq. 3).
    ``own_distance``: as in :func:`rrw_compact`.
    """
    labels = validate_labels(labels, num_classes)
    return stack_channels(signed_distance_channels(labels, num_classes, spacing, kervadec_shift, threads, own_distance), num_classes, labels.shape)


def stack_channels(channels: Iterable[np.ndarray], count: int, shape: tuple[int, ...]) -> np.ndarray:
    """``count`` spatial channels of ``shape`` written one by one into one ``(count, *shape)`` float32 array (no list of them)."""
    out = np.empty((count,) + tuple(shape), dtype=np.float32)
    for k, channel in enumerate(channels):
        out[k] = channel
    return out


def signed_distance_channels(
    labels: np.ndarray,
    num_classes: int,
    spacing: Spacing | None = None,
    kervadec_shift: bool = False,
    threads: int = 1,
    own_distance: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """The channels of :func:`signed_distance_map`, one spatial float32 array per class ``k = 0 .. C-1``,
    each computed only when asked for (memory: one channel and the shared own-class distance,
    whatever the class count)."""
    labels = validate_labels(labels, num_classes)
    spacing = validate_spacing(spacing, labels.ndim)
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    if np.count_nonzero(counts) == 1:  # one class fills the array: no boundary anywhere
        for _ in range(num_classes):
            yield np.zeros(labels.shape, dtype=np.float32)
        return
    inner = _own_distance(labels, spacing, threads, own_distance)
    shift = np.float32(1.0 if kervadec_shift else 0.0)
    for k in range(num_classes):
        if counts[k] == 0:
            yield np.zeros(labels.shape, dtype=np.float32)
            continue
        channel = distance_to_class(labels, k, spacing, threads)
        np.subtract(shift, inner, out=channel, where=labels == k)
        yield channel


def boundary_distance_map(labels: np.ndarray, num_classes: int, spacing: Spacing | None = None, threads: int = 1) -> np.ndarray:
    """Unsigned distance ``D[k, i]`` (mm) from voxel ``i`` to the boundary of class ``k``.

    ``D = |phi_G|`` (eq. 3 without the sign): inner EDT inside the class, distance to
    the class outside it. This is the map of Karimi's one-sided HD loss (Prop. 3).
    Absent or whole-array classes have ``D = 0``: no boundary, no HD term.
    """
    return np.abs(signed_distance_map(labels, num_classes, spacing, threads=threads))


def ac_map(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Active-contour map (Prop. 1): ``z = 1 - g`` (0 inside each class, 1 outside)."""
    return 1.0 - one_hot(labels, num_classes)


def cao_map(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Cao et al.'s non-distance map (Prop. 4): ``-1`` inside each class, ``+1`` outside."""
    return 1.0 - 2.0 * one_hot(labels, num_classes)

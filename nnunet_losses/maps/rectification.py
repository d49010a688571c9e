"""The rectification principle of RW maps and the gradient-sign analysis (RW paper §3.3-3.4).

The RW loss gradient with respect to the logits of one voxel is (eq. 2)

    dL/dx_k = s_k * (z_k - sum_j z_j s_j).

A map is *rectified* at a voxel of true class ``c`` when all off-class entries
``z_k, k != c`` are equal and larger than ``z_c``. Then, at every point of the open
probability simplex, the gradient has exactly one negative component (the true
class): ``s_c (z_c - a)(1 - s_c) < 0`` and ``s_k (a - z_c) s_c > 0``. Unrectified maps,
such as RW-Boundary with more than two classes, can have two or more negative
components, i.e. push several probabilities up at once (paper Fig. 2-3).

These functions let a user check a home-made map (``docs/maps.md#rectification``). Arrays are numpy with the class
axis first: maps ``(C, *spatial)``, probabilities ``(C, *spatial)``.
"""
from __future__ import annotations

import numpy as np


def _check_map(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim < 2:
        raise ValueError(f"map must have shape (C, *spatial), got {z.shape}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= z.shape[0]:
        raise ValueError(f"labels must be integers in [0, {z.shape[0]}) for a map with {z.shape[0]} channels")
    if z.shape[1:] != labels.shape:
        raise ValueError(f"map spatial shape {z.shape[1:]} differs from labels shape {labels.shape}")
    return z, labels


def rectification_violations(z: np.ndarray, labels: np.ndarray, atol: float = 1e-6) -> np.ndarray:
    """Boolean array (spatial shape): True where the map is *not* rectified.

    A voxel of true class ``c`` violates the principle when its off-class entries are
    not all equal (within ``atol``) or are not larger than ``z_c`` (by more than ``atol``).
    """
    z, labels = _check_map(z, labels)
    true_value = np.take_along_axis(z, labels[None].astype(np.intp), axis=0)[0]
    off_class = np.where(np.arange(z.shape[0]).reshape((-1,) + (1,) * labels.ndim) == labels[None], np.nan, z)
    off_max = np.nanmax(off_class, axis=0)
    off_min = np.nanmin(off_class, axis=0)
    return (off_max - off_min > atol) | (off_min <= true_value + atol)


def is_rectified(z: np.ndarray, labels: np.ndarray, atol: float = 1e-6) -> bool:
    """True when every voxel's map vector satisfies the rectification principle."""
    return not rectification_violations(z, labels, atol).any()


def rw_gradient(z: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Analytic RW gradient w.r.t. the logits (eq. 2), per voxel: ``s * (z - sum_j z_j s_j)``.

    This is the gradient of ``sum_k z_k s_k``; the loss's mean over ``B*C*N`` scales it.
    """
    z = np.asarray(z, dtype=np.float64)
    s = np.asarray(probabilities, dtype=np.float64)
    if z.shape != s.shape:
        raise ValueError(f"map shape {z.shape} differs from probabilities shape {s.shape}")
    return s * (z - np.sum(z * s, axis=0, keepdims=True))


def negative_component_counts(z: np.ndarray, probabilities: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Number of negative gradient components per voxel (paper Fig. 3); spatial shape."""
    return np.sum(rw_gradient(z, probabilities) < -tol, axis=0)


def fraction_multiple_negative(z: np.ndarray, probabilities: np.ndarray) -> float:
    """Fraction of voxels whose RW gradient has more than one negative component."""
    return float(np.mean(negative_component_counts(z, probabilities) > 1))


def simplex_grid(num_classes: int, steps: int) -> np.ndarray:
    """All points of the *open* probability simplex with coordinates in ``{1..steps-1}/steps``.

    Shape ``(P, C)``; every coordinate is strictly positive and rows sum to 1.
    """
    if num_classes < 2 or steps < num_classes:
        raise ValueError(f"need num_classes >= 2 and steps >= num_classes, got {num_classes}, {steps}")
    grids = np.meshgrid(*[np.arange(1, steps)] * (num_classes - 1), indexing="ij")
    head = np.stack([g.ravel() for g in grids], axis=1)
    last = steps - head.sum(axis=1)
    points = np.concatenate([head, last[:, None]], axis=1)
    return points[last >= 1] / steps


def simplex_fraction_multiple_negative(z_vectors: np.ndarray, steps: int = 60) -> np.ndarray:
    """For each map vector (rows of ``(M, C)``), the fraction of simplex points where the
    RW gradient has more than one negative component (paper Fig. 2).

    0 for every rectified vector; RW-Boundary vectors with more than two classes
    typically give a positive fraction.
    """
    z_vectors = np.atleast_2d(np.asarray(z_vectors, dtype=np.float64))
    points = simplex_grid(z_vectors.shape[1], steps)  # (P, C)
    fractions = np.empty(len(z_vectors))
    for m, z in enumerate(z_vectors):
        gradient = points * (z[None] - points @ z[:, None])
        fractions[m] = np.mean(np.sum(gradient < -1e-12, axis=1) > 1)
    return fractions

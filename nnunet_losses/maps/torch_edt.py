"""Exact Euclidean distance transform of batches of binary masks, in PyTorch (CPU or CUDA).

``distance_to_feature(feature, spacing)`` returns, for every voxel ``i`` of mask ``m``,

    D[m, i] = min_{j : feature[m, j]} || (i - j) * spacing[m] ||

(Euclidean, between voxel centres, in mm), the convention of SciPy's
``distance_transform_edt(~feature, sampling=spacing)``: 0 on feature voxels. A mask
without any feature voxel has ``D = inf`` everywhere. Each mask has its own spacing,
because every augmented patch of a batch has its own zoom.

**Algorithm.** The squared distance is separable (Saito & Toriwaki; Felzenszwalb &
Huttenlocher): with ``f_0 = 0`` on feature voxels and ``inf`` elsewhere,

    f_a(x) = min_y  f_{a-1}(x with x_a := y) + (s_a (x_a - y))^2          (one axis a at a time)

and ``D = sqrt(f_ndim)``. The first pass is the 1D distance to the nearest feature voxel
of each line, found with two cumulative sweeps (the index of the last feature voxel at or
before ``x``: a running maximum; the first at or after it: a running minimum from the
other end); it runs along the longest axis. Each following axis is a min-plus product of
every line ``f`` (length ``n``) with the fixed matrix ``W[x, y] = (s (x - y))^2``:
``f'[x] = min_y f[y] + W[x, y]``, evaluated for a chunk of lines at a time as one
``(lines, n, n)`` tensor, so memory stays below ``chunk_elements`` floats whatever the
batch. Work is ``O(n)`` per voxel and axis with no data-dependent control flow: a
handful of large, regular kernels, which is what a GPU wants.

Measured alternatives for the passes after the first (time of one pass, float32, on 2
CPU cores shared with a running training, so times of one method vary 2-4x between runs;
48 masks of 256 x 256 and 8 masks of 128^3 are the per-class masks of nnU-Net's default
2d and 3d_fullres batches):

* min-plus, chunked (kept). 48 x 256^2: 1.9 s; 2 x 128^3: 0.9-2.4 s; 8 x 128^3: 50 s in the
  most loaded run. Extra memory: the chunk (:data:`CHUNK_ELEMENTS`) and one copy of the batch.
* shifted minima ``f'[x] = min(f[x], min_k f[x -+ k] + (s k)^2)``, ``k = 1..n-1``, each step
  over the whole batch (extra memory: one copy of the batch): the same ``O(n)`` work per
  voxel in ``2 n`` full-batch passes, bound by memory traffic. 48 x 256^2: 5.7-7.6 s;
  2 x 128^3: 7.6-8.1 s (8 x 128^3: 12.6 s). Slower in every side-by-side run.
* lower envelope of parabolas (Felzenszwalb & Huttenlocher), vectorised over lines:
  ``O(1)`` per voxel but a Python loop over the ``n`` positions with a data-dependent
  number of stack pops (one host synchronisation each) and scattered indexing.
  48 x 256^2: 22-105 s depending on the mask density; launch-bound on a GPU. Not kept.

On CPU the ``edt`` package (:mod:`~nnunet_losses.maps.distance`) remains much faster; this
module is for tensors already on a GPU, where the min-plus pass is a few large
memory-bound kernels (the ``(lines, n, n)`` temporary of a chunk is written once and
reduced once).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}
"""Largest temporary of the min-plus pass, in elements, per device type: 4 MiB of float32 on
CPU (faster there than 1 MiB, 16 MiB or 64 MiB in the runs above), 256 MiB on a GPU (few
launches; 2 x 256 MiB of memory traffic per chunk)."""


def check_spacing(spacing: Tensor, rows: int, ndim: int, rows_name: str = "N") -> None:
    """Raise ``ValueError`` unless ``spacing`` is ``(rows, ndim)``, finite and positive (``rows_name`` names
    the first axis in the message: ``N`` masks, ``B`` samples)."""
    if tuple(spacing.shape) != (rows, ndim):
        raise ValueError(f"spacing must have shape ({rows_name}, ndim) = {(rows, ndim)}, got {tuple(spacing.shape)}")
    if not bool(torch.isfinite(spacing).all()) or not bool((spacing > 0).all()):
        raise ValueError(f"spacing must be positive and finite, got {spacing.tolist()}")


def validate_feature_spacing(feature: Tensor, spacing: Tensor) -> None:
    """Raise ``ValueError`` unless ``feature`` is (N, *spatial) with 2 or 3 non-empty spatial
    axes and ``spacing`` is (N, ndim), finite and positive (N may be 0)."""
    if feature.ndim not in (3, 4) or 0 in feature.shape[1:]:
        raise ValueError(f"feature must be (N, *spatial) with 2 or 3 non-empty spatial axes, got shape {tuple(feature.shape)}")
    check_spacing(spacing, feature.shape[0], feature.ndim - 1)


def distance_to_feature(feature: Tensor, spacing: Tensor, chunk_elements: int | None = None) -> Tensor:
    """Euclidean distance (mm) from every voxel to the nearest ``True`` voxel of its mask.

    ``feature``: bool (N, *spatial), 2D or 3D masks; ``spacing``: (N, ndim) mm per mask and
    axis. Returns float32 (N, *spatial) on ``feature``'s device; 0 on feature voxels,
    ``inf`` everywhere in a mask without feature voxels. ``chunk_elements``: size of the
    min-plus temporary (default :data:`CHUNK_ELEMENTS` of the device type).
    """
    validate_feature_spacing(feature, spacing)
    if chunk_elements is None:
        chunk_elements = CHUNK_ELEMENTS.get(feature.device.type, CHUNK_ELEMENTS["cuda"])
    spacing = spacing.to(device=feature.device, dtype=torch.float32)
    spatial = list(range(1, feature.ndim))
    first = max(spatial, key=lambda axis: feature.shape[axis])
    squared = _first_pass(feature.bool(), first, spacing[:, first - 1])
    for axis in spatial:
        if axis != first:
            squared = _min_plus_pass(squared, axis, spacing[:, axis - 1], chunk_elements)
    return squared.sqrt_()


def _per_mask(values: Tensor, ndim: int) -> Tensor:
    """(N,) -> (N, 1, ..., 1), broadcasting against (N, *spatial)."""
    return values.reshape((-1,) + (1,) * ndim)


def _first_pass(feature: Tensor, axis: int, spacing: Tensor) -> Tensor:
    """Squared 1D distance to the nearest feature voxel along ``axis``: ``(s min(x - p, q - x))^2``,
    ``p``/``q`` the last/first feature index at or before/after ``x`` (``inf`` when none)."""
    n = feature.shape[axis]
    shape = [1] * feature.ndim
    shape[axis] = n
    index = torch.arange(n, device=feature.device, dtype=torch.float32).reshape(shape)
    inf = torch.tensor(float("inf"), device=feature.device)
    previous = torch.where(feature, index, -inf).cummax(axis).values
    following = torch.where(feature, index, inf).flip(axis).cummin(axis).values.flip(axis)
    steps = torch.minimum(index - previous, following - index)
    return (steps * _per_mask(spacing, feature.ndim - 1)).square_()


def _min_plus_pass(squared: Tensor, axis: int, spacing: Tensor, chunk_elements: int) -> Tensor:
    """``f'[x] = min_y f[y] + (s (x - y))^2`` along ``axis`` for every line, in chunks of lines."""
    n = squared.shape[axis]
    lines = squared.movedim(axis, -1)
    moved_shape = lines.shape
    lines = lines.reshape(-1, n)
    per_mask = math.prod(squared.shape[1:]) // n
    offsets = torch.arange(n, device=squared.device, dtype=torch.float32)
    offsets_squared = (offsets[:, None] - offsets[None, :]).square_()
    line_spacing = spacing.square().repeat_interleave(per_mask)
    result = torch.empty_like(lines)
    chunk = max(1, chunk_elements // (n * n))
    for start in range(0, lines.shape[0], chunk):
        stop = start + chunk
        candidates = torch.addcmul(lines[start:stop, None, :], line_spacing[start:stop, None, None], offsets_squared)
        torch.amin(candidates, dim=-1, out=result[start:stop])
    return result.reshape(moved_shape).movedim(-1, axis)

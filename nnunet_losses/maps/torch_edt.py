"""Exact Euclidean distance transform of batches of binary masks, in PyTorch (CPU or CUDA).

``distance_to_feature(feature, spacing)`` returns, for every voxel ``i`` of mask ``m``,

    D[m, i] = min_{j : feature[m, j]} || (i - j) * spacing[m] ||

(Euclidean, between voxel centres, in mm), the convention of SciPy's
``distance_transform_edt(~feature, sampling=spacing)``: 0 on feature voxels. A mask
without any feature voxel has ``D = inf`` everywhere. Each mask has its own spacing,
because every augmented patch of a batch has its own zoom.

**Algorithm.** The squared distance is separable (Saito & Toriwaki, "New algorithms for
Euclidean distance transformation of an n-dimensional digitized picture", Pattern
Recognition 1994; Felzenszwalb & Huttenlocher, "Distance transforms of sampled
functions", Theory of Computing 2012): with ``f_0 = 0`` on feature voxels and ``inf``
elsewhere,

    f_a(x) = min_y  f_{a-1}(x with x_a := y) + (s_a (x_a - y))^2          (one axis a at a time)

and ``D = sqrt(f_ndim)``. The first pass is the 1D distance to the nearest feature voxel
of each line, found with two cumulative sweeps (the index of the last feature voxel at or
before ``x``: a running maximum; the first at or after it: a running minimum from the
other end); it runs along the longest axis. Each following axis is a min-plus product of
every line ``f`` (length ``n``) with the fixed matrix ``W[x, y] = (s (x - y))^2``:
``f'[x] = min_y f[y] + W[x, y]``. No step has data-dependent control flow or a host
synchronisation: a handful of large, regular kernels, which is what a GPU wants.

**Two forms of the min-plus pass** (``min_plus=``), equal to the last bit in the tests:

* ``"fused"`` (default): the min-plus as one reduction compiled by ``torch.compile``
  (``dynamic=True``: one kernel for every line length and batch size; Triton on CUDA,
  C++ on a CPU). ``W`` is computed from the loop indices inside the kernel, so the pass
  reads every line once and writes every result once; the ``n`` values of a line are
  re-read from cache. Memory traffic per voxel, mask and pass is a constant (the line
  copy for the axis, the kernel's read and write: 16 bytes of float32), whatever ``n``;
  extra memory is one copy of the batch. The first call of a new process compiles it
  (seconds; inductor's cache keeps it between runs).
* ``"chunked"``: the same arithmetic in eager PyTorch, evaluated for a chunk of lines at a
  time as one ``(lines, n, n)`` tensor (at most ``chunk_elements`` floats), written once
  and reduced once: ``8 n`` bytes of traffic per voxel, mask and pass (about 2 GB per
  axis for one 128^3 mask). For PyTorch builds where ``torch.compile`` cannot run.

**Cost.** On a 2-core CPU (``python benchmarks/device_maps.py``: the maps of nnU-Net's
default 2d batch, 12 x 256^2, and 3d_fullres batch, 2 x 128^3, at every deep-supervision
scale, a loaded machine) the fused form takes 0.23x / 0.26x the chunked form's time, at a
peak memory of the same order (dominated by the batch's per-class tensors; on a CPU the
chunk is 4 MiB); the ``edt`` package
(:mod:`~nnunet_losses.maps.distance`) is faster still, about 17x / 10x the fused form, and
is what :func:`~nnunet_losses.maps.device.device_map_stack` uses for CPU tensors.
Expected on an H200 (4.8 TB/s HBM, about 60 TFLOP/s float32) from the bytes
moved: about 100 bytes per voxel and mask for the first pass (the sweeps, their index
outputs, two flips), 16 per further pass, 8 for the square root, so about 140 bytes for
a 3D mask, against ``140 + 16 n`` bytes with the chunked form (2.2 KB at ``n = 128``):
for the 8 masks of a 2 x 128^3 batch at its 5 scales (19 M voxel-masks) about 2.7 GB,
0.6 ms, fused, against 42 GB, 9 ms, chunked; the fused kernel's ``2 n`` flops per voxel
and pass (10 GFLOP there) add about 0.2 ms. ``benchmarks/gpu_check.py`` measures it.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

MinPlus = Literal["fused", "chunked"]

CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}
"""Largest temporary of the chunked min-plus pass, in elements, per device type: 4 MiB of
float32 on a CPU (faster there than 1, 16 or 64 MiB), 256 MiB on a GPU (few launches)."""


def require(condition: Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless the bool tensor ``condition`` holds, without a host synchronisation.

    On CPU data outside ``torch.compile`` the check is a host check (free, a ``ValueError``);
    on a GPU, or while compiling, it is a device-side assertion (``torch._assert_async``:
    no synchronisation and no graph break; a ``RuntimeError`` raised when the stream
    reaches it).
    """
    if condition.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(condition):
            raise ValueError(message)
    else:
        torch._assert_async(condition, message)


def check_spacing(spacing: Tensor, rows: int, ndim: int, rows_name: str = "N") -> None:
    """Raise ``ValueError`` unless ``spacing`` is ``(rows, ndim)``, finite and positive (``rows_name`` names
    the first axis in the message: ``N`` masks, ``B`` samples). The values are checked by :func:`require`."""
    if tuple(spacing.shape) != (rows, ndim):
        raise ValueError(f"spacing must have shape ({rows_name}, ndim) = {(rows, ndim)}, got {tuple(spacing.shape)}")
    require((torch.isfinite(spacing) & (spacing > 0)).all(), "spacing must be positive and finite")


def validate_feature_spacing(feature: Tensor, spacing: Tensor) -> None:
    """Raise ``ValueError`` unless ``feature`` is (N, *spatial) with 2 or 3 non-empty spatial
    axes and ``spacing`` is (N, ndim), finite and positive (N may be 0)."""
    if feature.ndim not in (3, 4) or 0 in feature.shape[1:]:
        raise ValueError(f"feature must be (N, *spatial) with 2 or 3 non-empty spatial axes, got shape {tuple(feature.shape)}")
    check_spacing(spacing, feature.shape[0], feature.ndim - 1)


def distance_to_feature(feature: Tensor, spacing: Tensor, min_plus: MinPlus = "fused", chunk_elements: int | None = None) -> Tensor:
    """Euclidean distance (mm) from every voxel to the nearest ``True`` voxel of its mask.

    ``feature``: bool (N, *spatial), 2D or 3D masks; ``spacing``: (N, ndim) mm per mask and
    axis. Returns float32 (N, *spatial) on ``feature``'s device; 0 on feature voxels,
    ``inf`` everywhere in a mask without feature voxels. ``min_plus``: ``"fused"``
    (compiled, default) or ``"chunked"`` (eager, its temporary at most ``chunk_elements``
    floats, default :data:`CHUNK_ELEMENTS` of the device type).
    """
    validate_feature_spacing(feature, spacing)
    if min_plus not in ("fused", "chunked"):
        raise ValueError(f"min_plus must be 'fused' or 'chunked', got {min_plus!r}")
    if chunk_elements is None:
        chunk_elements = CHUNK_ELEMENTS.get(feature.device.type, CHUNK_ELEMENTS["cuda"])
    spacing = spacing.to(device=feature.device, dtype=torch.float32, non_blocking=True)
    spatial = list(range(1, feature.ndim))
    first = max(spatial, key=lambda axis: feature.shape[axis])
    squared = _first_pass(feature.bool(), first, spacing[:, first - 1])
    if feature.shape[0] == 0:
        return squared
    for axis in spatial:
        if axis != first:
            squared = _min_plus_pass(squared, axis, spacing[:, axis - 1], min_plus, chunk_elements)
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
    previous = torch.where(feature, index, float("-inf")).cummax(axis).values
    following = torch.where(feature, index, float("inf")).flip(axis).cummin(axis).values.flip(axis)
    steps = torch.minimum(index - previous, following - index)
    return (steps * _per_mask(spacing, feature.ndim - 1)).square_()


def _min_plus_pass(squared: Tensor, axis: int, spacing: Tensor, min_plus: MinPlus, chunk_elements: int) -> Tensor:
    """``f'[x] = min_y f[y] + (s (x - y))^2`` along ``axis`` for every line."""
    n = squared.shape[axis]
    lines = squared.movedim(axis, -1)
    moved_shape = lines.shape
    lines = lines.reshape(-1, n)
    per_mask = math.prod(squared.shape[1:]) // n
    line_spacing = spacing.square().repeat_interleave(per_mask)
    if min_plus == "fused":
        result = _fused_min_plus(lines, line_spacing)
    else:
        result = _chunked_min_plus(lines, line_spacing, chunk_elements)
    return result.reshape(moved_shape).movedim(-1, axis)


def _min_plus_lines(lines: Tensor, line_spacing: Tensor) -> Tensor:
    """``out[l, x] = min_y lines[l, y] + line_spacing[l] (x - y)^2`` for (L, n) lines, as one broadcast expression."""
    offsets = torch.arange(lines.shape[-1], device=lines.device, dtype=torch.float32)
    offsets_squared = (offsets[:, None] - offsets[None, :]).square()
    return torch.amin(torch.addcmul(lines[:, None, :], line_spacing[:, None, None], offsets_squared), dim=-1)


_fused_min_plus = torch.compile(_min_plus_lines, dynamic=True, fullgraph=True)
""":func:`_min_plus_lines` compiled: inductor fuses the broadcast into the reduction, so the
``(L, n, n)`` tensor never exists (one kernel: read ``lines``, write the result)."""


def _chunked_min_plus(lines: Tensor, line_spacing: Tensor, chunk_elements: int) -> Tensor:
    """:func:`_min_plus_lines` evaluated eagerly, ``chunk_elements // n^2`` lines at a time."""
    n = lines.shape[-1]
    chunk = max(1, chunk_elements // (n * n))
    result = torch.empty_like(lines)
    for start in range(0, lines.shape[0], chunk):
        result[start : start + chunk] = _min_plus_lines(lines[start : start + chunk], line_spacing[start : start + chunk])
    return result

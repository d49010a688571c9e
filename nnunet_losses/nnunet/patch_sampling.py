"""The maps of one augmented patch, read from the stored maps of its case, once.

nnU-Net's training pipeline turns a case into a patch in two geometric steps: the data
loader cuts an (enlarged) crop out of the case, zero-padded where it leaves the case
(``nnUNetDataLoader.generate_train_batch``, ``crop_and_pad_nd``), and nnU-Net's
``SpatialTransform`` cuts the final patch out of that crop — a plain box when it draws
neither rotation nor scaling (``crop_tensor``), a resampling on a grid otherwise
(``grid_sample``) — before ``MirrorTransform`` flips it. Carrying the maps through those
steps as image channels would decode, pad, copy and resample every map channel of the
whole enlarged crop. Here the maps skip them: the loader's crop (:class:`CaseCrop`),
the spatial transform's parameters (:class:`SpatialRecord`) and the mirrored axes are
recorded on the way, and :func:`sample_patch_maps` reads what the final patch needs:

* **box** (no grid): the patch box, decoded straight into the output, mirrored while it
  is dequantised (no flip copy);
* **grid**: the decoded part of the crop is only the bounding box of the grid's sample
  points (plus two voxels each side), written into a buffer of the crop's shape whose other voxels
  are never written nor read, and the spatial transform's own ``_apply_to_regr_target``
  resamples it with its own grid. Bilinear sampling reads only the two voxels around a
  sample point, so every voxel it reads holds what nnU-Net's crop holds there;
  mirroring flips the grid (a grid point per voxel) instead of the output.

Both give exactly, bit for bit, what nnU-Net's own transforms make of the maps as a
regression target of the whole crop (``tests/test_map_pipeline.py`` compares them on
the trainers' own pipelines in every configuration). Outside the case the maps are 0,
as nnU-Net's zero padding makes them.

Dummy-2D augmentation (``Convert3DTo2DTransform``) runs the spatial transform on the
last two axes only: the leading axis of the crop is then kept as it is.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .map_store import StoredMap


@dataclass(frozen=True)
class CaseCrop:
    """Where the loader's crop of one sample lies in its case, and the case's stored maps.

    ``origin``: the case coordinates of the crop's first voxel per axis (negative where the
    crop begins before the case); ``shape``: the crop's shape; ``case_shape``: the case's.
    In 2d configurations nnU-Net's loader crops a box one slice thick and drops that axis:
    :meth:`drop_leading_axis` does the same here.
    """

    case: str
    maps: Sequence[StoredMap]
    origin: tuple[int, ...]
    shape: tuple[int, ...]
    case_shape: tuple[int, ...]
    leading: tuple[int, ...] = field(default=())
    """Case coordinates of axes dropped in front (2d: the slice); not part of the crop's axes."""

    @property
    def num_channels(self) -> int:
        return sum(m.shape[0] for m in self.maps)

    def drop_leading_axis(self) -> CaseCrop:
        """The crop without its first axis, which must be one voxel thick (nnU-Net's 2d crop of a 3d case)."""
        if self.shape[0] != 1:
            raise RuntimeError(f"cannot drop an axis of {self.shape[0]} voxels from the crop {self.shape}")
        return CaseCrop(self.case, self.maps, self.origin[1:], self.shape[1:], self.case_shape[1:], (*self.leading, self.origin[0]))

    def read(self, starts: Sequence[int], stops: Sequence[int], out: np.ndarray, flips: Sequence[int] = ()) -> None:
        """``out[...] =`` the maps of crop region ``[starts, stops)`` (crop coordinates, all channels), flipped along
        the crop axes ``flips``; 0 outside the case. ``out``: float32 or float16 ``(channels, *(stops - starts))``, positive
        strides."""
        inside, box = [], []
        for axis, (start, stop, origin, size) in enumerate(zip(starts, stops, self.origin, self.case_shape)):
            low, high = max(start + origin, 0), min(stop + origin, size)
            if high <= low:
                out[...] = 0
                return
            first, last = low - origin - start, high - origin - start  # where the case lies in the region
            if axis in flips:
                first, last = (stop - start) - last, (stop - start) - first
            inside.append(slice(first, last))
            box.append((low, high))
        target = out[(slice(None), *inside)]
        for axis, part in enumerate(inside):  # zero only what lies outside the case
            before, after = (slice(None),) * (axis + 1) + (slice(0, part.start),), (slice(None),) * (axis + 1) + (slice(part.stop, None),)
            if part.start > 0:
                out[before] = 0
            if part.stop < out.shape[axis + 1]:
                out[after] = 0
        ranges = [(p, p + 1) for p in self.leading] + box
        shift = len(self.leading)  # the dropped axes come first in the stored box
        channel = 0
        for stored in self.maps:
            count = stored.shape[0]
            part = target[channel : channel + count]
            stored.read_into(part[(slice(None), *(None,) * shift)], ranges, flips=[axis + shift for axis in flips])
            channel += count


@dataclass(frozen=True)
class SpatialRecord:
    """What nnU-Net's ``SpatialTransform`` did to one sample: the transform (its recording wrapper,
    :class:`~.transforms.RecordingSpatialTransform`), its drawn parameters and the spatial shape of what it
    transformed (in dummy-2D augmentation the last two axes of the crop)."""

    transform: Any
    params: dict
    input_shape: tuple[int, ...]

    @property
    def grid(self) -> torch.Tensor | None:
        return self.params["grid"]

    @property
    def zoom(self) -> float:
        """The isotropic zoom of the drawn affine ``R @ S`` (geometric mean of its scale factors; 1 without one)."""
        affine = self.params.get("affine")
        return 1.0 if affine is None else float(abs(np.linalg.det(affine)) ** (1.0 / affine.shape[0]))


def _box_of_crop_transform(record: SpatialRecord) -> tuple[list[int], list[int]]:
    """The crop region nnU-Net's ``crop_tensor`` cuts for a spatial transform without a grid (its own rule:
    the patch centred on the floor of the drawn centre, ``start = centre - size // 2``)."""
    centre = [int(np.floor(c)) for c in record.params["center_location_in_pixels"]]
    starts = [c - size // 2 for c, size in zip(centre, record.transform.patch_size)]
    return starts, [s + size for s, size in zip(starts, record.transform.patch_size)]


def _grid_extremes(grid: torch.Tensor, affine: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate, the least and greatest value of ``grid`` (``(*patch, dim)``). A grid that is affine in the voxel
    index (no elastic deformation) takes them at the patch's corners: ``2^dim`` points instead of the whole grid."""
    if affine:
        grid = grid[tuple(slice(None, None, max(n - 1, 1)) for n in grid.shape[:-1])]
    flat = grid.reshape(-1, grid.shape[-1])
    return torch.aminmax(flat, dim=0)


def _region_read_by_grid(record: SpatialRecord) -> tuple[list[int], list[int]]:
    """The region of the transform's input that ``grid_sample`` reads at the record's grid (x last): the voxels
    around the sample points, widened by two voxels each side (bicubic's reach and rounding), clipped to the input.
    Padding modes that read the input's border for points outside it ("border", "reflection") read the whole input."""
    shape, transform = record.input_shape, record.transform
    if not transform.reads_only_inside:
        return [0] * len(shape), list(shape)
    low, high = _grid_extremes(record.grid, affine=record.params.get("elastic_offsets") is None)
    starts, stops = [], []
    for axis, size in enumerate(shape):
        k = len(shape) - 1 - axis  # grid coordinate k addresses spatial axis dim - 1 - k
        lo, hi = float(low[k]), float(high[k])
        if transform.align_corners:
            pixel_lo, pixel_hi = (lo + 1) / 2 * (size - 1), (hi + 1) / 2 * (size - 1)
        else:
            pixel_lo, pixel_hi = ((lo + 1) * size - 1) / 2, ((hi + 1) * size - 1) / 2
        if not (np.isfinite(pixel_lo) and np.isfinite(pixel_hi)):
            starts.append(0), stops.append(size)
            continue
        starts.append(min(max(int(np.floor(pixel_lo)) - 2, 0), size))
        stops.append(max(min(int(np.floor(pixel_hi)) + 4, size), 0))
    return starts, stops


def _crop_buffer(channels: int, shape: Sequence[int], kept: int, channels_last: bool) -> np.ndarray:
    """An uninitialised float32 ``(channels, *shape)`` array for the crop: only the region the grid reads is
    written, and bilinear sampling never reads outside it (it reads the two voxels around each point, all
    inside the region, and treats points outside the crop as zero padding without reading).

    ``channels_last``: laid out with the channels and the ``kept`` leading axes last, so that a 2D
    ``grid_sample`` reads each point's values of all channels together: bit for bit the same result,
    1.8 times as fast for the 80 merged channels of a 4-class dummy-2D patch of 20 slices (6.5 against
    11.6 ms per rotated 256x256 patch, one thread; ``benchmarks/patch_reading.py``).
    """
    if not channels_last:
        return np.empty((channels, *shape), dtype=np.float32)
    merged = (channels, *shape[:kept])
    stored = np.empty((*shape[kept:], *merged), dtype=np.float32)
    order = [*range(len(shape) - kept, stored.ndim), *range(len(shape) - kept)]
    return stored.transpose(order)


def sample_patch_maps(
    crop: CaseCrop, spatial: SpatialRecord | None, mirror_axes: Sequence[int], out: torch.Tensor, mm_slices: Sequence[slice]
) -> None:
    """Write the maps of the final patch into ``out`` (``(channels, *patch)``, float16 or float32, contiguous), the
    channels ``mm_slices`` (distances in mm) divided by the patch's zoom.

    ``spatial``: what the spatial transform did (``None``: it did not run, the patch is the crop, as in
    nnU-Net's validation pipeline); ``mirror_axes``: the patch axes ``MirrorTransform`` flipped. Values are
    computed in float32, as nnU-Net computes them, and rounded once into ``out``.
    """
    dims = len(crop.shape)
    kept = dims - (len(spatial.input_shape) if spatial is not None else 0)  # leading axes the transform left alone
    if spatial is not None and tuple(crop.shape[kept:]) != tuple(spatial.input_shape):
        raise RuntimeError(f"the spatial transform saw {spatial.input_shape}, but the loader's crop is {crop.shape}")
    if spatial is None or spatial.grid is None:  # a box of stored values, no affine: zoom 1
        starts, stops = [0] * dims, list(crop.shape)
        if spatial is not None:
            starts[kept:], stops[kept:] = _box_of_crop_transform(spatial)
        crop.read(starts, stops, out.numpy(), flips=mirror_axes)
        return
    transform, grid = spatial.transform, spatial.grid
    starts, stops = [0] * dims, list(crop.shape)
    starts[kept:], stops[kept:] = _region_read_by_grid(spatial)
    buffer = _crop_buffer(crop.num_channels, crop.shape, kept, channels_last=len(spatial.input_shape) == 2)
    region = buffer[(slice(None), *(slice(a, b) for a, b in zip(starts, stops)))]
    # the grid leaves the leading axes whole: flipping the output along one = reading the region flipped along it
    crop.read(starts, stops, region, flips=[axis for axis in mirror_axes if axis < kept])
    grid_flips = [axis - kept for axis in mirror_axes if axis >= kept]
    if grid_flips:  # flipping the output along an axis the grid addresses = reversing the grid along it, exactly
        grid = grid.flip(grid_flips)
    source = torch.from_numpy(buffer)
    if kept:  # dummy 2D: nnU-Net's Convert3DTo2DTransform merges the channels and the leading axis (a view here too)
        source = source.flatten(0, kept)
    sampled = transform.resample(source, spatial.params, grid).reshape(out.shape)
    zoom = spatial.zoom
    if zoom != 1.0:
        for channels in mm_slices:
            sampled[channels] /= zoom
    out.copy_(sampled)

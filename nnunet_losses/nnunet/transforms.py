"""Transforms that carry maps through nnU-Net's augmentation and deep supervision.

Precomputed maps (see :mod:`.dataset`):

1. :class:`SplitMapsFromImage` (first in the pipeline) moves the map channels that the
   data loader cropped with the image into ``regression_target``;
2. nnU-Net's ``SpatialTransform`` resamples it like the image (linear interpolation,
   zero padding) and ``MirrorTransform`` flips it. :class:`ZoomAwareSpatialTransform`
   wraps the former: when the patch is zoomed by ``s`` (nnU-Net's scaling is isotropic
   in voxel units), a distance of ``d`` mm becomes ``d / s`` in the patch, so channels in
   mm are divided by ``s``; normalised maps (RRW) are scale-free and left alone;
3. :class:`MapsToTarget` (last) downsamples the maps for every deep-supervision scale
   with the nearest-neighbour rule nnU-Net uses for the segmentation (so map and
   target voxels come from the same source voxel) and appends them to the target list.

On-the-fly maps: :class:`ComputeMapsOnPatch` (last) recomputes the maps from the final
augmented segmentation at every scale, as the RW reference code does, with the
patch's spacing (the configuration's spacing divided by the scale).

Padding: where nnU-Net pads a patch beyond the case, its segmentation becomes
background and the precomputed maps are 0. The RRW map there is 0 at the (background)
true class and 1 elsewhere, a rectified map that treats padding as background exactly
like the segmentation does; signed distances are 0, so no boundary term comes from
padding. On-the-fly maps see the padded background as part of the patch.

In both modes the target becomes ``[seg_0, ..., seg_n, maps_0, ..., maps_n]`` (or
``[seg, maps]`` without deep supervision); the trainer splits it again before
nnU-Net's ``train_step``/``validation_step`` see it.

Approximations, documented: at class borders the interpolated maps mix neighbouring
values (RRW stays negative inside the image: every voxel's own-class value is); the
zoom correction is exact for nnU-Net's synchronised scaling and uses the geometric
mean zoom otherwise; in-plane augmentation of 3D patches (nnU-Net's dummy 2D mode)
rescales the through-plane part of distances too.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from torch.nn.functional import interpolate

from .map_layout import MapLayout, compute_map_stack

DSScales = Sequence[Sequence[float]] | None


def downsample_like_segmentation(values: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
    """Resize ``(C, *spatial)`` as nnU-Net's ``DownsampleSegForDSTransform`` resizes the segmentation."""
    if all(s == 1 for s in scale):
        return values
    new_shape = [round(i * j) for i, j in zip(values.shape[1:], scale)]
    return interpolate(values[None].float(), new_shape, mode="nearest-exact")[0]


def pack_target(segmentation, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[seg_0..seg_n] + [maps_0..maps_n]`` (deep supervision) or ``[seg, maps]``."""
    segs = list(segmentation) if isinstance(segmentation, (list, tuple)) else [segmentation]
    if len(segs) != len(maps):
        raise RuntimeError(f"{len(segs)} segmentation scales but {len(maps)} map scales")
    return segs + maps


def zoom_factor(affine: np.ndarray) -> float:
    """Isotropic zoom of an affine ``R @ S`` (geometric mean of the scale factors)."""
    return float(abs(np.linalg.det(affine)) ** (1.0 / affine.shape[0]))


class SplitMapsFromImage(BasicTransform):
    """Move image channels ``num_image_channels:`` (the attached maps) to ``regression_target``."""

    def __init__(self, num_image_channels: int) -> None:
        super().__init__()
        self.num_image_channels = num_image_channels

    def apply(self, data_dict: dict, **params) -> dict:
        image = data_dict["image"]
        if image.shape[0] <= self.num_image_channels:
            raise RuntimeError("the patch carries no map channels: the dataset was not wrapped with its maps")
        data_dict["regression_target"] = image[self.num_image_channels :]
        data_dict["image"] = image[: self.num_image_channels]
        return data_dict


class ZoomAwareSpatialTransform(BasicTransform):
    """nnU-Net's ``SpatialTransform`` with mm map channels divided by the zoom factor."""

    def __init__(self, spatial: SpatialTransform, mm_channels: Sequence[int]) -> None:
        super().__init__()
        self.spatial = spatial
        self.mm_channels = list(mm_channels)

    def get_parameters(self, **data_dict) -> dict:
        return self.spatial.get_parameters(**data_dict)

    def apply(self, data_dict: dict, **params) -> dict:
        data_dict = self.spatial.apply(data_dict, **params)
        affine = params.get("affine")
        if affine is not None and self.mm_channels and data_dict.get("regression_target") is not None:
            data_dict["regression_target"][self.mm_channels] /= zoom_factor(affine)
        return data_dict


class MapsToTarget(BasicTransform):
    """Downsample the augmented maps per deep-supervision scale and append them to the target."""

    def __init__(self, deep_supervision_scales: DSScales) -> None:
        super().__init__()
        self.scales = deep_supervision_scales

    def apply(self, data_dict: dict, **params) -> dict:
        maps = data_dict.pop("regression_target").float()
        scales = self.scales if self.scales is not None else [[1] * (maps.ndim - 1)]
        data_dict["segmentation"] = pack_target(data_dict["segmentation"], [downsample_like_segmentation(maps, s) for s in scales])
        return data_dict


class ComputeMapsOnPatch(BasicTransform):
    """Compute the maps on the augmented segmentation at every scale and append them to the target."""

    def __init__(self, layout: MapLayout, spacing: Sequence[float], ignore_label: int | None, deep_supervision_scales: DSScales) -> None:
        super().__init__()
        self.layout = layout
        self.spacing = tuple(float(s) for s in spacing)
        self.ignore_label = ignore_label
        self.scales = deep_supervision_scales

    def _maps(self, segmentation: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
        spacing = [s / f for s, f in zip(self.spacing, scale)]
        maps = compute_map_stack(segmentation[0].numpy(), self.layout.kinds, self.layout.num_classes, self.ignore_label, spacing)
        return torch.from_numpy(np.concatenate([maps[k] for k in self.layout.kinds]))

    def apply(self, data_dict: dict, **params) -> dict:
        segmentation = data_dict["segmentation"]
        segs = list(segmentation) if isinstance(segmentation, (list, tuple)) else [segmentation]
        scales = self.scales if self.scales is not None else [[1] * (segs[0].ndim - 1)]
        data_dict["segmentation"] = pack_target(segmentation, [self._maps(s, f) for s, f in zip(segs, scales)])
        return data_dict


def add_map_transforms(
    pipeline: ComposeTransforms,
    layout: MapLayout,
    map_mode: str,
    num_image_channels: int,
    spacing: Sequence[float],
    ignore_label: int | None,
    deep_supervision_scales: DSScales,
) -> ComposeTransforms:
    """nnU-Net's training or validation pipeline with the map transforms of ``map_mode``.

    ``"precomputed"``: split the attached maps off the image first, make the spatial
    transform zoom-aware, append :class:`MapsToTarget`. ``"on_the_fly"``: append
    :class:`ComputeMapsOnPatch` (``spacing``: the patch's spacing, mm).
    """
    transforms = list(pipeline.transforms)
    if map_mode == "on_the_fly":
        return ComposeTransforms([*transforms, ComputeMapsOnPatch(layout, spacing, ignore_label, deep_supervision_scales)])
    if map_mode != "precomputed":
        raise ValueError(f"map_mode must be 'precomputed' or 'on_the_fly', got {map_mode!r}")
    transforms = [ZoomAwareSpatialTransform(t, layout.mm_channels) if isinstance(t, SpatialTransform) else t for t in transforms]
    return ComposeTransforms([SplitMapsFromImage(num_image_channels), *transforms, MapsToTarget(deep_supervision_scales)])

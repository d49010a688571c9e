"""Transforms that carry maps through nnU-Net's augmentation and deep supervision.

A trainer's ``map_mode`` picks one of three ways (:func:`add_map_transforms`).

Precomputed maps (see :mod:`.dataset`) enter as the last image channels and travel as
batchgenerators' ``regression_target``:

1. :class:`SplitMapsFromImage` (first in the pipeline) moves the last
   ``layout.num_channels`` image channels into ``regression_target``. Counting from the
   end keeps it independent of the number of image channels: in the cascade
   (``3d_cascade_fullres``) the trainer's ``num_input_channels`` also counts the previous
   stage's one-hot channels, which nnU-Net adds only later in the pipeline
   (``MoveSegAsOneHotToDataTransform``, ``nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py``
   ``get_training_transforms``); the loaded case has just its image channels;
2. nnU-Net's ``SpatialTransform`` resamples it like the image (linear interpolation,
   zero padding) and ``MirrorTransform`` flips it. :class:`ZoomRecordingSpatialTransform`
   wraps the former and only *records* the zoom ``s`` of the patch in the data dict
   (nnU-Net's scaling is isotropic in voxel units: ``p_synchronize_scaling_across_axes=1``);
3. :class:`MapsToTarget` (last) divides the mm channels by ``s`` (a distance of ``d`` mm
   is ``d / s`` mm of the patch; normalised maps such as RRW are scale-free and left
   alone), downsamples the maps for every deep-supervision scale with the
   nearest-neighbour rule nnU-Net uses for the segmentation (so map and target voxels
   come from the same source voxel) and packs them with the target of each scale
   (:meth:`.map_transport.MapTransport.pack`).

The zoom is applied at the end, not inside the spatial transform, because nnU-Net's
dummy-2D augmentation (``Convert3DTo2DTransform`` ... ``Convert2DTo3DTransform``, used for
3d configurations whose patch is short along the first axis) merges channels and the
first axis of ``regression_target`` around ``SpatialTransform``: inside that bracket a
channel index means (channel, slice); after it the channels are the map channels again.
The zoom of a dummy-2D patch is the in-plane zoom.

On-the-fly maps: :class:`ComputeMapsOnPatch` (last) recomputes the maps from the final
augmented segmentation at every scale, as the RW reference code does, with the
patch's spacing (the configuration's spacing divided by the scale), and packs them
with the target the same way.

Device maps (``map_mode = "device"``): nothing is added to nnU-Net's pipeline. The
trainer computes the maps on the training device from nnU-Net's final target of every
deep-supervision scale (:func:`.map_transport.device_maps`), as the on-the-fly mode does
in the workers, with the spacing ``spacing / f`` (``f``: the scale factor per axis).

One convention for all three modes: distances are in mm of the configuration's spacing
laid over the patch, the world the network sees (nnU-Net resamples every case to that
spacing, and at inference no patch is zoomed). A zoomed patch (nnU-Net's scaling ``s``,
larger = smaller objects) is a case whose anatomy is ``1/s`` times as large; a distance of
``d`` mm in the source case is ``d / s`` mm there, which is what the precomputed maps are
rescaled to, and what maps computed on the patch give. Computed on the patch (on the fly
or on the device), the maps are exact for every augmentation, rotation and deformation
included; the precomputed ones approximate them (see the end of this docstring).

Padding: where nnU-Net pads a patch beyond the case, its segmentation becomes
background and the precomputed maps are 0. The RRW map there is 0 at the (background)
true class and 1 elsewhere, a rectified map that treats padding as background exactly
like the segmentation does; signed distances are 0, so no boundary term comes from
padding. On-the-fly maps see the padded background as part of the patch.

In the first two modes each scale's target carries the maps as channels behind the
segmentation (:mod:`.map_transport`); the trainer takes them off again before
nnU-Net's ``train_step``/``validation_step`` see the target. In the device mode the
target is nnU-Net's own.

nnU-Net's pieces used here: batchgeneratorsv2's ``BasicTransform``
(``batchgeneratorsv2/transforms/base/basic_transform.py``), the base of every transform
above, its ``ComposeTransforms`` (``batchgeneratorsv2/transforms/utils/compose.py``), the
pipeline nnU-Net builds, and nnU-Net's ``SpatialTransform``
(``batchgeneratorsv2/transforms/spatial/spatial.py``), wrapped as described.

Approximations, documented: at class borders the interpolated maps mix neighbouring
values (RRW stays negative inside the image: every voxel's own-class value is);
rotation in a plane with anisotropic spacing distorts mm distances (nnU-Net rotates in
voxel space); in-plane augmentation of 3D patches (dummy 2D) rescales the
through-plane part of distances too.
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
from .map_transport import MapTransport

DSScales = Sequence[Sequence[float]] | None


def downsample_like_segmentation(values: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
    """Resize ``(C, *spatial)`` as nnU-Net's ``DownsampleSegForDSTransform`` resizes the segmentation.

    That transform (batchgeneratorsv2 ``deep_supervision_downsampling.py``) uses
    ``interpolate(..., round(n * s), mode="nearest-exact")``, which takes source voxel
    ``floor((i + 0.5) * n / m)`` for output voxel ``i``. When ``n = m * f`` exactly, that is
    ``i * f + f // 2``: a strided view, which is what this returns then (no copy, same
    voxels); otherwise it calls ``interpolate`` as nnU-Net does.
    """
    if all(s == 1 for s in scale):
        return values
    new_shape = [round(i * j) for i, j in zip(values.shape[1:], scale)]
    if all(n % m == 0 for n, m in zip(values.shape[1:], new_shape)):
        steps = [n // m for n, m in zip(values.shape[1:], new_shape)]
        return values[(slice(None), *(slice(f // 2, None, f) for f in steps))]
    return interpolate(values[None].float(), new_shape, mode="nearest-exact")[0]


def zoom_factor(affine: np.ndarray) -> float:
    """Isotropic zoom of an affine ``R @ S`` (geometric mean of the scale factors)."""
    return float(abs(np.linalg.det(affine)) ** (1.0 / affine.shape[0]))


ZOOM_KEY = "nnunet_losses_zoom"
"""Data-dict key under which :class:`ZoomRecordingSpatialTransform` leaves the patch's zoom."""


class SplitMapsFromImage(BasicTransform):
    """Move the last ``num_map_channels`` image channels (the attached maps) to ``regression_target``."""

    def __init__(self, num_map_channels: int) -> None:
        super().__init__()
        self.num_map_channels = num_map_channels

    def apply(self, data_dict: dict, **params) -> dict:
        image = data_dict["image"]
        if image.shape[0] <= self.num_map_channels:
            raise RuntimeError(
                f"the patch has {image.shape[0]} channels, but {self.num_map_channels} map channels follow the image: "
                "the dataset was not wrapped with its maps"
            )
        data_dict["regression_target"] = image[-self.num_map_channels :]
        data_dict["image"] = image[: -self.num_map_channels]
        return data_dict


class ZoomRecordingSpatialTransform(BasicTransform):
    """nnU-Net's ``SpatialTransform``, leaving the zoom it applied in ``data_dict[ZOOM_KEY]``."""

    def __init__(self, spatial: SpatialTransform) -> None:
        super().__init__()
        self.spatial = spatial

    def get_parameters(self, **data_dict) -> dict:
        return self.spatial.get_parameters(**data_dict)

    def apply(self, data_dict: dict, **params) -> dict:
        data_dict = self.spatial.apply(data_dict, **params)
        affine = params.get("affine")
        if affine is not None:
            data_dict[ZOOM_KEY] = data_dict.get(ZOOM_KEY, 1.0) * zoom_factor(affine)
        return data_dict


class MapsToTarget(BasicTransform):
    """Undo the zoom on mm channels, downsample the maps per deep-supervision scale, pack them with the target."""

    def __init__(self, mm_slices: Sequence[slice], deep_supervision_scales: DSScales) -> None:
        super().__init__()
        self.mm_slices = list(mm_slices)
        self.scales = deep_supervision_scales

    def apply(self, data_dict: dict, **params) -> dict:
        maps = data_dict.pop("regression_target")
        zoom = data_dict.pop(ZOOM_KEY, 1.0)
        if zoom != 1.0:
            for channels in self.mm_slices:
                maps[channels] /= zoom
        scales = self.scales if self.scales is not None else [[1] * (maps.ndim - 1)]
        data_dict["segmentation"] = MapTransport.pack(data_dict["segmentation"], [downsample_like_segmentation(maps, s) for s in scales])
        return data_dict


class ComputeMapsOnPatch(BasicTransform):
    """Compute the maps on the augmented segmentation at every scale and pack them with the target."""

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
        data_dict["segmentation"] = MapTransport.pack(segmentation, [self._maps(s, f) for s, f in zip(segs, scales)])
        return data_dict


MAP_MODES = ("precomputed", "on_the_fly", "device")


def add_map_transforms(
    pipeline: ComposeTransforms,
    layout: MapLayout,
    map_mode: str,
    spacing: Sequence[float],
    ignore_label: int | None,
    deep_supervision_scales: DSScales,
) -> ComposeTransforms:
    """nnU-Net's training or validation pipeline with the map transforms of ``map_mode``.

    ``"precomputed"``: split the attached maps off the image first, let the spatial
    transform record its zoom, append :class:`MapsToTarget`. ``"on_the_fly"``: append
    :class:`ComputeMapsOnPatch` (``spacing``: the patch's spacing, mm). ``"device"``:
    nnU-Net's pipeline unchanged (the trainer computes the maps from the final target).
    """
    if map_mode not in MAP_MODES:
        raise ValueError(f"map_mode must be one of {MAP_MODES}, got {map_mode!r}")
    transforms = list(pipeline.transforms)
    if map_mode == "on_the_fly":
        return ComposeTransforms([*transforms, ComputeMapsOnPatch(layout, spacing, ignore_label, deep_supervision_scales)])
    if map_mode == "device":
        return pipeline
    transforms = [ZoomRecordingSpatialTransform(t) if isinstance(t, SpatialTransform) else t for t in transforms]
    return ComposeTransforms([SplitMapsFromImage(layout.num_channels), *transforms, MapsToTarget(layout.mm_slices, deep_supervision_scales)])

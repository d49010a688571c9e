"""Transforms that bring maps to nnU-Net's target, through its augmentation and deep supervision.

A trainer's ``map_mode`` picks one of three ways (:func:`add_map_transforms`).

Precomputed maps are read once, for the final patch (:mod:`.patch_sampling`), instead of
travelling through nnU-Net's pipeline:

1. :class:`TakeCaseCrop` (first in the pipeline) takes the loader's crop of the sample
   from the dataset (:mod:`.dataset`): the case, its open map files, where the crop lies;
2. nnU-Net's ``SpatialTransform`` and ``MirrorTransform`` run as nnU-Net built them,
   wrapped to record what they drew (:class:`RecordingSpatialTransform`: its grid or
   crop centre and its affine; :class:`RecordingMirrorTransform`: the flipped axes);
3. :class:`MapsToTarget` (last) reads the maps of the final patch from the case's files
   with those parameters — exactly what nnU-Net's own transforms make of the maps as a
   regression target of the crop (linear interpolation, zero padding) — divides the mm
   channels by the zoom ``s`` of the patch (a distance of ``d`` mm is ``d / s`` mm of the
   patch; normalised maps such as RRW are scale-free and left alone; nnU-Net's scaling is
   isotropic in voxel units: ``p_synchronize_scaling_across_axes=1``), downsamples them
   for every deep-supervision scale with the nearest-neighbour rule nnU-Net uses for the
   segmentation (so map and target voxels come from the same source voxel) and packs them
   with the target of each scale (:meth:`.map_transport.MapTransport.pack`).

nnU-Net's dummy-2D augmentation (``Convert3DTo2DTransform`` ... ``Convert2DTo3DTransform``,
used for 3d configurations whose patch is short along the first axis) runs the spatial
transform on the last two axes; the recorded grid then addresses those, and the zoom of
a dummy-2D patch is the in-plane zoom. A transform that moves voxels in any other way
(``Rot90Transform``, ``TransposeAxesTransform``, or any transform that defines how it
moves a regression target) is refused when the pipeline is built: its movement would not
reach the maps. In the cascade (``3d_cascade_fullres``) the previous stage's one-hot
channels are added inside the pipeline (``MoveSegAsOneHotToDataTransform``); they change
no geometry.

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
above, whose ``_apply_to_regr_target`` a transform defines when it moves voxels; its
``ComposeTransforms`` (``batchgeneratorsv2/transforms/utils/compose.py``), the pipeline nnU-Net
builds; nnU-Net's ``SpatialTransform`` (``batchgeneratorsv2/transforms/spatial/spatial.py``),
wrapped as described, whose own ``_apply_to_regr_target`` resamples the maps and whose
``_get_grid_sample_padding_mode`` says whether its sampling reads only inside the crop;
``MirrorTransform`` (``batchgeneratorsv2/transforms/spatial/mirroring.py``), wrapped; and the
dummy-2D bracket ``Convert3DTo2DTransform`` / ``Convert2DTo3DTransform``
(``batchgeneratorsv2/transforms/utils/pseudo2d.py``), which moves no voxel.

Approximations, documented: at class borders the interpolated maps mix neighbouring
values (RRW stays negative inside the image: every voxel's own-class value is);
rotation in a plane with anisotropic spacing distorts mm distances (nnU-Net rotates in
voxel space); in-plane augmentation of 3D patches (dummy 2D) rescales the
through-plane part of distances too.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform

from .dataset import CropHandoff
from .map_layout import MapLayout, compute_map_stack
from .map_transport import MapTransport
from .patch_sampling import CaseCrop, SpatialRecord, sample_patch_maps

DSScales = Sequence[Sequence[float]] | None


CROP_KEY = "nnunet_losses_crop"
"""Data-dict key of the sample's :class:`~.patch_sampling.CaseCrop` (set by :class:`TakeCaseCrop`)."""
SPATIAL_KEY = "nnunet_losses_spatial"
"""Data-dict key of the :class:`~.patch_sampling.SpatialRecord` left by :class:`RecordingSpatialTransform`."""
MIRROR_KEY = "nnunet_losses_mirror"
"""Data-dict key of the patch axes :class:`RecordingMirrorTransform` flipped."""


class TakeCaseCrop(BasicTransform):
    """Take the loader's crop of this sample from the dataset's :class:`~.dataset.CropHandoff` (first transform)."""

    def __init__(self, handoff: CropHandoff) -> None:
        super().__init__()
        self.handoff = handoff

    def apply(self, data_dict: dict, **params) -> dict:
        crop: CaseCrop = self.handoff.take()
        shape = tuple(data_dict["image"].shape[1:])
        if len(crop.shape) == len(shape) + 1:  # 2d: nnU-Net's loader drops the crop's one-slice axis
            crop = crop.drop_leading_axis()
        if tuple(crop.shape) != shape:
            raise RuntimeError(f"the loader's crop of case {crop.case} is {crop.shape}, but the image reaching the transforms is {shape}")
        data_dict[CROP_KEY] = crop
        return data_dict


class RecordingTransform(BasicTransform):
    """One of nnU-Net's transforms, run as it is (same parameters, same random draws), leaving in the data dict what
    it did (:meth:`record`)."""

    def __init__(self, transform: BasicTransform) -> None:
        super().__init__()
        self.transform = transform

    def get_parameters(self, **data_dict) -> dict:
        return self.transform.get_parameters(**data_dict)

    def apply(self, data_dict: dict, **params) -> dict:
        shape = tuple(data_dict["image"].shape[1:])
        self.check(data_dict)
        data_dict = self.transform.apply(data_dict, **params)
        self.record(data_dict, params, shape)
        return data_dict

    def check(self, data_dict: dict) -> None:
        """Refuse a data dict whose recording would not address the maps."""

    def record(self, data_dict: dict, params: dict, input_shape: tuple[int, ...]) -> None:
        raise NotImplementedError


class RecordingSpatialTransform(RecordingTransform):
    """nnU-Net's ``SpatialTransform``, leaving what it did in ``data_dict[SPATIAL_KEY]``; it resamples the maps too."""

    @property
    def spatial(self) -> SpatialTransform:
        return self.transform

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(self.transform.patch_size)

    @property
    def align_corners(self) -> bool:
        return self.transform.align_corners

    @property
    def reads_only_inside(self) -> bool:
        """Whether its sampling treats points outside its input as zero, reading nothing there ("zeros", "constant")."""
        return self.transform._get_grid_sample_padding_mode(self.transform.padding_mode_image) == "zeros"

    def resample(self, values: torch.Tensor, params: dict, grid: torch.Tensor) -> torch.Tensor:
        """``values`` resampled at ``grid`` exactly as the transform resamples its regression target."""
        return self.transform._apply_to_regr_target(values, **{**params, "grid": grid})

    def check(self, data_dict: dict) -> None:
        if SPATIAL_KEY in data_dict:
            raise RuntimeError("a second SpatialTransform in the pipeline: maps follow one spatial transform only")

    def record(self, data_dict: dict, params: dict, input_shape: tuple[int, ...]) -> None:
        data_dict[SPATIAL_KEY] = SpatialRecord(self, params, input_shape)


class RecordingMirrorTransform(RecordingTransform):
    """nnU-Net's ``MirrorTransform``, adding the axes it flipped to ``data_dict[MIRROR_KEY]`` (two flips cancel)."""

    def check(self, data_dict: dict) -> None:
        crop = data_dict.get(CROP_KEY)
        if crop is not None and data_dict["image"].ndim - 1 != len(crop.shape):
            raise RuntimeError("MirrorTransform inside nnU-Net's dummy-2D bracket: its axes would not address the maps")

    def record(self, data_dict: dict, params: dict, input_shape: tuple[int, ...]) -> None:
        data_dict[MIRROR_KEY] = sorted(set(data_dict.get(MIRROR_KEY, ())) ^ set(params["axes"]))


class MapsToTarget(BasicTransform):
    """Read the final patch's maps (mm channels divided by the zoom) and pack them with the full-resolution target,
    in ``dtype`` (:attr:`.map_transport.MapTransport.target_dtype`). The coarser deep-supervision targets stay
    nnU-Net's: their maps are strided views of these (:meth:`.map_transport.MapTransport.take`)."""

    def __init__(self, mm_slices: Sequence[slice], dtype: torch.dtype) -> None:
        super().__init__()
        self.mm_slices = list(mm_slices)
        self.dtype = dtype

    def apply(self, data_dict: dict, **params) -> dict:
        crop: CaseCrop = data_dict.pop(CROP_KEY)
        spatial: SpatialRecord | None = data_dict.pop(SPATIAL_KEY, None)
        mirror_axes = data_dict.pop(MIRROR_KEY, [])
        segmentation = data_dict["segmentation"]
        seg = segmentation[0] if isinstance(segmentation, (list, tuple)) else segmentation
        full = torch.empty((seg.shape[0] + crop.num_channels, *seg.shape[1:]), dtype=self.dtype)
        full[: seg.shape[0]] = seg.float()  # int16 -> float16 directly is the slow conversion
        sample_patch_maps(crop, spatial, mirror_axes, full[seg.shape[0] :], self.mm_slices)
        data_dict["segmentation"] = [full, *segmentation[1:]] if isinstance(segmentation, (list, tuple)) else full
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

GEOMETRY_KEPT = (Convert3DTo2DTransform, Convert2DTo3DTransform)
"""Transforms that move a regression target without moving voxels of the patch (dummy 2D's reshapes)."""


def moves_voxels(transform: BasicTransform) -> bool:
    """Whether ``transform`` moves the voxels of a sample: it defines how it moves a regression target."""
    return type(transform)._apply_to_regr_target is not BasicTransform._apply_to_regr_target and not isinstance(transform, GEOMETRY_KEPT)


def with_recording(transform: BasicTransform) -> BasicTransform:
    """``transform`` with nnU-Net's spatial and mirror transforms wrapped to record what they draw, at any depth of
    nested ``ComposeTransforms``/``RandomTransform``-like containers; any other transform that moves voxels is refused."""
    if isinstance(transform, SpatialTransform):
        return RecordingSpatialTransform(transform)
    if isinstance(transform, MirrorTransform):
        return RecordingMirrorTransform(transform)
    children = {name: getattr(transform, name) for name in ("transforms", "transform", "list_of_transforms") if hasattr(transform, name)}
    if children:
        rebuilt = copy.copy(transform)
        for name, child in children.items():
            setattr(rebuilt, name, [with_recording(t) for t in child] if isinstance(child, (list, tuple)) else with_recording(child))
        return rebuilt
    if moves_voxels(transform):
        raise ValueError(
            f"{type(transform).__name__} moves the voxels of the patch in a way precomputed maps do not follow (they follow "
            "nnU-Net's SpatialTransform and MirrorTransform); use map_mode = 'on_the_fly' or 'device', which compute the maps "
            "on the augmented patch"
        )
    return transform


def add_map_transforms(
    pipeline: ComposeTransforms, transport: MapTransport, deep_supervision_scales: DSScales, handoff: CropHandoff | None = None
) -> ComposeTransforms:
    """nnU-Net's training or validation pipeline with the map transforms of ``transport.mode``.

    ``"precomputed"``: take the loader's crop from ``handoff`` first, let the spatial and mirror
    transforms record what they draw, append :class:`MapsToTarget`. ``"on_the_fly"``: append
    :class:`ComputeMapsOnPatch` (with the transport's spacing, mm). ``"device"``: nnU-Net's
    pipeline unchanged (the trainer computes the maps from the final target).
    """
    if transport.mode not in MAP_MODES:
        raise ValueError(f"map_mode must be one of {MAP_MODES}, got {transport.mode!r}")
    transforms = list(pipeline.transforms)
    layout = transport.layout
    if transport.mode == "on_the_fly":
        return ComposeTransforms([*transforms, ComputeMapsOnPatch(layout, transport.spacing, transport.ignore_label, deep_supervision_scales)])
    if transport.mode == "device":
        return pipeline
    if handoff is None:
        raise ValueError("precomputed maps need the CropHandoff of the dataset the pipeline's loader reads")
    return ComposeTransforms([
        TakeCaseCrop(handoff), *(with_recording(t) for t in transforms),
        MapsToTarget(layout.mm_slices, transport.target_dtype),
    ])

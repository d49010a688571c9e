"""Maps through nnU-Net's own augmentation and deep-supervision transforms stay aligned with the target.

The pipeline is nnU-Net's spatial part (SpatialTransform with nnU-Net's settings,
but rotation and scaling forced on, MirrorTransform, RemoveLabelTansform,
DownsampleSegForDSTransform) with the package's map transforms added exactly as the
trainers add them. The image is all ones, so after augmentation it marks the voxels
that come from inside the case (the rest is padding).
"""
from __future__ import annotations

import edt
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from scipy.ndimage import binary_erosion, gaussian_filter

from nnunet_losses.maps import is_rectified, own_class_distance, rrw_compact, signed_distance_map
from nnunet_losses.losses import rrw_from_compact
from nnunet_losses.nnunet.map_layout import MapLayout
from nnunet_losses.nnunet.transforms import add_map_transforms, downsample_like_segmentation, zoom_factor

NUM_CLASSES = 4
SPACING = (1.1, 1.1)  # isotropic in the rotation plane, as in nnU-Net 2d configurations (see transforms.py)
DS_SCALES = [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]]
LAYOUT = MapLayout(("rrw", "signed_distance"), NUM_CLASSES)


def case_labels(seed: int) -> np.ndarray:
    """Smooth multi-class regions, all classes present, on a 96 x 96 case."""
    rng = np.random.default_rng(seed)
    fields = np.stack([gaussian_filter(rng.standard_normal((96, 96)), 5.0) for _ in range(NUM_CLASSES)])
    labels = fields.argmax(0)
    assert np.all(np.bincount(labels.ravel(), minlength=NUM_CLASSES) > 200)
    return labels


def augment(labels: np.ndarray, maps: np.ndarray, zoom: float, seed: int, mode: str = "precomputed"):
    """Run the patch through the pipeline; returns (targets per scale, maps per scale, valid mask, zoom)."""
    spatial = SpatialTransform(
        (64, 64), patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
        p_rotation=1.0, rotation=(-np.pi, np.pi), p_scaling=1.0, scaling=(zoom, zoom),
        p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False,
        border_mode_seg="constant", padding_value_seg=-1,
    )
    pipeline = ComposeTransforms([spatial, MirrorTransform(allowed_axes=(0, 1)), RemoveLabelTansform(-1, 0), DownsampleSegForDSTransform(ds_scales=DS_SCALES)])
    pipeline = add_map_transforms(pipeline, LAYOUT, mode, 1, SPACING, None, DS_SCALES)
    image = torch.ones((1, *labels.shape))
    torch.manual_seed(seed)
    np.random.seed(seed)
    params = {}
    original = spatial.get_parameters
    spatial.get_parameters = lambda **d: params.setdefault("p", original(**d))
    if mode == "precomputed":
        out = pipeline(image=torch.cat([image, torch.from_numpy(maps)]), segmentation=torch.from_numpy(labels[None]).short())
    else:
        out = pipeline(image=image, segmentation=torch.from_numpy(labels[None]).short())
    targets, stacked = out["segmentation"][:3], out["segmentation"][3:]
    valid = out["image"][0].numpy() > 0.999
    return [t[0].numpy() for t in targets], [m.numpy() for m in stacked], valid, zoom_factor(params["p"]["affine"])


def interior(labels: np.ndarray, valid: np.ndarray, margin: int = 2) -> np.ndarray:
    """Valid voxels whose (2*margin+1)^2 neighbourhood holds a single class: away from borders."""
    structure = np.ones((2 * margin + 1,) * 2, dtype=bool)
    keep = np.zeros_like(valid)
    for k in range(NUM_CLASSES):
        keep |= binary_erosion(labels == k, structure, border_value=0)
    return keep & binary_erosion(valid, structure, border_value=0)


@pytest.mark.parametrize("zoom", [0.75, 1.0, 1.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_precomputed_maps_follow_the_augmented_target(zoom, seed):
    labels = case_labels(seed)
    rrw = rrw_compact(labels, NUM_CLASSES, SPACING)
    sd = signed_distance_map(labels, NUM_CLASSES, SPACING)
    class_max = {k: own_class_distance(labels, SPACING)[labels == k].max() for k in range(NUM_CLASSES)}
    targets, maps, valid, applied_zoom = augment(labels, np.concatenate([rrw, sd]), zoom, seed)
    assert applied_zoom == pytest.approx(zoom)
    for scale, (target, stacked) in enumerate(zip(targets, maps)):
        assert stacked.shape == (LAYOUT.num_channels, *target.shape)
        factor = 2**scale
        valid_here = downsample_like_segmentation(torch.from_numpy(valid[None]).float(), DS_SCALES[scale])[0].numpy() > 0.5
        inside = interior(target, valid_here, margin=1 if scale else 2)
        assert inside.sum() > (20 if scale == 0 else 0)
        split = LAYOUT.split(stacked[None])
        phi = split["signed_distance"][0]
        # sign: negative exactly inside the target's class, positive outside, away from class borders
        for k in range(NUM_CLASSES):
            assert np.all(phi[k][inside & (target == k)] < 0)
            assert np.all(phi[k][inside & (target != k)] > 0)
        # magnitude: distances recomputed on the augmented target, in the patch's mm
        patch_spacing = [s * factor for s in SPACING]
        recomputed = signed_distance_map(target, NUM_CLASSES, patch_spacing)
        own = own_class_distance(target, patch_spacing)
        # only where the nearest visible boundary is nearer than the patch edge or the padding,
        # so the patch shows the true nearest boundary
        edge = edt.edt(valid_here.astype(np.uint8), anisotropy=patch_spacing, black_border=True)
        far_from_patch_edge = (own < edge) & inside
        # boundaries are quantised on both grids (case and rotated patch): up to a voxel diagonal each
        tolerance = 2 * np.hypot(*patch_spacing) + 0.1 * np.abs(recomputed)
        for k in range(NUM_CLASSES):
            near = far_from_patch_edge & (target == k)
            assert np.all(np.abs(phi[k][near] - recomputed[k][near]) <= tolerance[k][near])
        if scale == 0:  # the zoom correction: deep distances agree in scale (uncorrected, the ratio would be the zoom)
            deep = np.stack([far_from_patch_edge & (np.abs(recomputed[k]) > 5) & (np.abs(recomputed[k]) < edge) for k in range(NUM_CLASSES)])
            assert np.median(phi[deep] / recomputed[deep]) == pytest.approx(1.0, abs=0.08)
        # RRW: negative where the image is, rectified, and its value is the own-class distance normalised
        v = split["rrw"][0, 0]
        assert np.all(v[valid_here] < 0)
        full = rrw_from_compact(torch.from_numpy(split["rrw"]), torch.nn.functional.one_hot(torch.from_numpy(target).long(), NUM_CLASSES).permute(2, 0, 1)[None].float())[0].numpy()
        assert is_rectified(full, target)
        expected = -own * zoom / np.array([class_max[k] for k in range(NUM_CLASSES)])[target]
        close = inside & far_from_patch_edge
        tolerance = 2 * np.hypot(*patch_spacing) * zoom / np.array([class_max[k] for k in range(NUM_CLASSES)])[target] + 0.05
        assert np.all(np.abs(v[close] - expected[close]) <= tolerance[close])
        if scale == 0:
            deep_rrw = close & (own > 5)
            assert np.median(v[deep_rrw] / expected[deep_rrw]) == pytest.approx(1.0, abs=0.08)


@pytest.mark.parametrize("zoom", [0.8, 1.25])
def test_zoom_divides_mm_channels_only(zoom):
    """A constant 10 mm map reads 10 / zoom mm in the patch; the normalised RRW channel is unchanged."""
    labels = case_labels(2)
    maps = np.concatenate([np.full((1, 96, 96), -0.5, np.float32), np.full((NUM_CLASSES, 96, 96), 10.0, np.float32)])
    _, stacked, valid, applied = augment(labels, maps, zoom, 8)
    inner = binary_erosion(valid, np.ones((3, 3), dtype=bool))
    np.testing.assert_allclose(stacked[0][0][inner], -0.5, rtol=1e-5)
    np.testing.assert_allclose(stacked[0][1:][:, inner], 10.0 / applied, rtol=1e-5)


def test_on_the_fly_maps_equal_maps_of_the_augmented_target():
    labels = case_labels(5)
    targets, maps, _, _ = augment(labels, None, 1.1, 6, mode="on_the_fly")
    for scale, (target, stacked) in enumerate(zip(targets, maps)):
        spacing = [s * 2**scale for s in SPACING]
        np.testing.assert_allclose(stacked[0], rrw_compact(target.astype(np.int64), NUM_CLASSES, spacing)[0], atol=1e-6)
        np.testing.assert_allclose(stacked[1:], signed_distance_map(target.astype(np.int64), NUM_CLASSES, spacing), atol=1e-5)


def test_deep_supervision_maps_come_from_the_same_voxels_as_the_target():
    """Each coarse map voxel is the full-resolution map at the voxel nnU-Net picked for the target."""
    labels = case_labels(4)
    maps = np.concatenate([rrw_compact(labels, NUM_CLASSES, SPACING), signed_distance_map(labels, NUM_CLASSES, SPACING)])
    _, stacked, _, _ = augment(labels, maps, 1.1, 9)
    index_image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64)
    picked = DownsampleSegForDSTransform(ds_scales=DS_SCALES)(segmentation=index_image)["segmentation"]
    for scale in range(1, len(DS_SCALES)):
        source = picked[scale][0].long().numpy()
        expected = stacked[0].reshape(LAYOUT.num_channels, -1)[:, source]
        np.testing.assert_array_equal(stacked[scale], expected)

"""Maps through nnU-Net's own pipelines, in every configuration nnU-Net has.

Everything here is built by the trainers themselves, as ``nnUNetv2_train`` builds it:
``trainer.initialize()``, then nnU-Net's ``get_dataloaders()`` (its ``nnUNetDataLoader``,
its ``get_training_transforms`` / ``get_validation_transforms`` with the arguments nnU-Net
computes, the package's map transforms added by the trainer). Only probabilities of
nnU-Net's ``SpatialTransform`` are forced where a test needs a known zoom or no
interpolation.

The dataset (ACDC-like, with an ignore label on the first slice) is preprocessed by
nnU-Net for 2d and 3d_fullres; a plans variant adds, as nnU-Net's planner would for
larger images, a ``3d_lowres`` stage (preprocessed by ``nnUNetv2_preprocess``) with its
``3d_cascade_fullres`` next stage, and a near-isotropic 3d patch (``3d_isotropic``) whose
augmentation is fully 3D, while ``3d_fullres`` (patch short along the first axis) uses
nnU-Net's dummy-2D augmentation.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert3DTo2DTransform

from nnunet_losses.losses import RegionWiseLoss
from nnunet_losses.nnunet.configuration import load_configuration
from nnunet_losses.nnunet.dataset import ImageWithMaps
from nnunet_losses.nnunet.map_layout import compute_map_stack
from nnunet_losses.nnunet.setup_maps import write_configuration_maps
from nnunet_losses.nnunet.small_plans import make_small_plans
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
from nnunet_losses.nnunet.transforms import ZoomRecordingSpatialTransform, downsample_like_segmentation
from nnunet_losses.synthetic import write_raw_dataset

from conftest import run_command

pytestmark = pytest.mark.nnunet

DATASET_ID = 204
PLANS = "nnUNetPipelinePlans"
IGNORE = 4
NUM_CLASSES = 4
DUMMY_2D = {"2d": False, "3d_fullres": True, "3d_isotropic": False, "3d_lowres": False, "3d_cascade_fullres": True}
CONFIGURATIONS = tuple(DUMMY_2D)


class nnUNetTrainerPipelineMaps(nnUNetTrainerLosses):
    """RW loss on RRW and on RW-Boundary maps: both stored kinds, ``rrw`` (scale-free) and ``signed_distance`` (mm)."""

    def loss_terms(self):
        return {"rrw": RegionWiseLoss("rrw"), "rwb": RegionWiseLoss("rw_boundary")}


class nnUNetTrainerPipelineMapsOnTheFly(nnUNetTrainerPipelineMaps):
    map_mode = "on_the_fly"


def prepare_dataset(workspace, dataset_id: int, trainers: Sequence[type]) -> str:
    """Raw data with an ignore label -> nnU-Net plan + preprocess -> plans variant with lowres/cascade/isotropic ->
    the 3d_lowres stage's segmentations for ``trainers``; returns the dataset name (no maps written)."""
    folder = write_raw_dataset("cardiac", workspace.raw, dataset_id, 5, seed=dataset_id, shape=(8, 48, 48))
    for label_file in (folder / "labelsTr").glob("*.nii.gz"):  # the annotator skipped the first slice
        image = sitk.ReadImage(str(label_file))
        labels = sitk.GetArrayFromImage(image)
        labels[0] = IGNORE
        edited = sitk.GetImageFromArray(labels)
        edited.CopyInformation(image)
        sitk.WriteImage(edited, str(label_file))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    dataset_json["labels"]["ignore"] = IGNORE
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    env = workspace.environment()
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "2d", "3d_fullres", "-np", "1"], env)

    plans_file = make_small_plans(dataset_id, ("2d", "3d_fullres"), features=(8, 16, 32), batch_size=2, target_plans=PLANS)
    plans = json.loads(plans_file.read_text())
    configurations = plans["configurations"]
    fullres = configurations["3d_fullres"]
    assert fullres["patch_size"][0] * 3 < max(fullres["patch_size"]), "3d_fullres must use dummy-2D augmentation"
    low_spacing = [fullres["spacing"][0]] + [2 * s for s in fullres["spacing"][1:]]
    configurations["3d_lowres"] = {
        "inherits_from": "3d_fullres",
        "data_identifier": f"{PLANS}_3d_lowres",
        "spacing": low_spacing,
        "patch_size": [fullres["patch_size"][0], 24, 24],
        "next_stage": ["3d_cascade_fullres"],
    }
    configurations["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    configurations["3d_isotropic"] = {"inherits_from": "3d_fullres", "patch_size": [fullres["patch_size"][0], 16, 16]}
    plans_file.write_text(json.dumps(plans, indent=2))
    run_command(["nnUNetv2_preprocess", "-d", str(dataset_id), "-plans_name", PLANS, "-c", "3d_lowres", "-np", "1"], env)
    write_previous_stage(workspace.results, load_configuration(dataset_id, "3d_fullres", PLANS), trainers)
    return folder.name


@pytest.fixture(scope="module")
def pipeline_dataset(workspace):
    """:func:`prepare_dataset` -> maps."""
    name = prepare_dataset(workspace, DATASET_ID, (nnUNetTrainerPipelineMaps, nnUNetTrainerPipelineMapsOnTheFly))
    for configuration in ("2d", "3d_fullres", "3d_lowres"):
        config = load_configuration(DATASET_ID, configuration, PLANS)
        assert config.ignore_label == IGNORE and config.num_classes == NUM_CLASSES
        write_configuration_maps(config, progress=False)
    return name


def write_previous_stage(results: Path, config, trainers: Sequence[type]) -> None:
    """What the 3d_lowres stage would hand the cascade: a segmentation per case at full resolution, in nnU-Net's
    ``predicted_next_stage`` folder of each trainer class given (nnU-Net names that folder after the trainer)."""
    for trainer in trainers:
        target = results / config.dataset_folder.name / f"{trainer.__name__}__{PLANS}__3d_lowres" / "predicted_next_stage" / "3d_cascade_fullres"
        target.mkdir(parents=True, exist_ok=True)
        for case in config.case_identifiers():
            seg = np.asarray(blosc2.open(str(config.data_folder / f"{case}_seg.b2nd"), mode="r")[0])
            previous = np.where((seg < 0) | (seg == IGNORE), 0, seg).astype(np.int16)
            blosc2.asarray(np.ascontiguousarray(np.roll(previous, 1, axis=-1)), urlpath=str(target / f"{case}.b2nd"), mode="w")


def build_trainer(trainer_class, configuration: str, dataset_name: str, monkeypatch) -> nnUNetTrainerLosses:
    """The trainer as nnUNetv2_train builds it (CPU, augmentation in this process), initialised."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    from nnunet_losses.nnunet.configuration import preprocessed_root

    folder = preprocessed_root() / dataset_name
    plans = load_json(str(folder / f"{PLANS}.json"))
    plans["continue_training"] = False
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = trainer_class(plans, configuration, 0, load_json(str(folder / "dataset.json")), torch.device("cpu"))
        trainer.initialize()
    return trainer


def loaders(trainer):
    with contextlib.redirect_stdout(io.StringIO()):
        train, val = trainer.get_dataloaders()
    return train.data_loader, val.data_loader


def spatial_transform(pipeline) -> SpatialTransform:
    wrapped = [t for t in pipeline.transforms if isinstance(t, ZoomRecordingSpatialTransform)]
    assert len(wrapped) == 1, "the trainer must wrap nnU-Net's one SpatialTransform"
    return wrapped[0].spatial


def split_target(trainer, batch: dict) -> tuple[list, list]:
    """nnU-Net's target (left in ``batch``) and the maps of every scale, as the trainer's own map transport takes them."""
    maps = trainer.map_transport.take(batch, trainer.device)
    segs = batch["target"]
    assert len(segs) == len(maps) == len(trainer._get_deep_supervision_scales())
    assert all(seg.dtype == torch.int16 and seg.shape[1] == 1 for seg in segs)  # nnU-Net's own target
    return segs, maps


# --- the zoom correction: right in every configuration, per channel ------------------------------------------------


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
@pytest.mark.parametrize("zoom", [0.8, 1.25])
def test_constant_mm_map_reads_value_over_zoom_in_every_channel_and_slice(pipeline_dataset, monkeypatch, configuration, zoom):
    """A constant 10 mm signed-distance map comes out as 10 / zoom everywhere, the RRW channel (-0.5) untouched,
    through the trainer's own training pipeline with nnU-Net's SpatialTransform forced to zoom."""
    trainer = build_trainer(nnUNetTrainerPipelineMaps, configuration, pipeline_dataset, monkeypatch)
    rotation, dummy_2d, initial_patch, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert dummy_2d == DUMMY_2D[configuration]
    pipeline = trainer.get_training_transforms(
        trainer.configuration_manager.patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes, dummy_2d,
        use_mask_for_norm=trainer.configuration_manager.use_mask_for_norm, is_cascaded=trainer.is_cascaded,
        foreground_labels=trainer.label_manager.foreground_labels, ignore_label=trainer.label_manager.ignore_label,
    )
    assert any(isinstance(t, Convert3DTo2DTransform) for t in pipeline.transforms) == dummy_2d
    spatial = spatial_transform(pipeline)
    spatial.p_rotation, spatial.p_scaling, spatial.scaling = 0.0, 1.0, (zoom, zoom)

    layout = trainer.map_transport.layout
    patch = tuple(int(p) for p in initial_patch)
    image_channels = len(trainer.dataset_json["channel_names"])
    maps = torch.empty((layout.num_channels, *patch))
    maps[layout.channels("rrw")] = -0.5
    maps[layout.channels("signed_distance")] = 10.0
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, NUM_CLASSES, (2 if trainer.is_cascaded else 1, *patch))).short()
    out = pipeline(image=torch.cat([torch.rand((image_channels, *patch)), maps]), segmentation=labels)

    assert out["image"].shape[0] == trainer.num_input_channels  # no map channel reaches the network
    segs, stacked = split_target(trainer, {"target": [scale[None] for scale in out["segmentation"]]})
    for seg, scale_maps in zip(segs, stacked):
        seg, scale_maps = seg[0], scale_maps[0]
        assert scale_maps.shape == (layout.num_channels, *seg.shape[1:])
        # Where zooming out reaches past the loaded patch, zero padding enters both channels with the same
        # interpolation weight w: RRW reads -0.5 w and the distances 10 w / zoom, in every channel and slice.
        weight = scale_maps[layout.channels("rrw")].numpy() / -0.5
        distances = scale_maps[layout.channels("signed_distance")].numpy()
        np.testing.assert_allclose(distances, np.broadcast_to(weight * 10.0 / zoom, distances.shape), rtol=1e-5, atol=1e-5)
        inside = np.isclose(weight[0], 1.0, rtol=1e-6, atol=0)  # RRW never rescaled: exactly -0.5 inside
        assert inside.mean() > (0.999 if zoom < 1 else 0.5)
        np.testing.assert_allclose(distances[:, inside], 10.0 / zoom, rtol=1e-6)


# --- the real data loaders: maps aligned with the target at every scale ------------------------------------------


def assert_maps_follow_target(trainer, batch: dict) -> None:
    """Without interpolation, every voxel's maps are the stored maps of the voxel its label came from: the signed
    distance is negative exactly at the voxel's own class (all positive at ignored voxels, a class of their own for
    the distances), RRW is in [-1, 0); padding (all maps 0) is background."""
    layout = trainer.map_transport.layout
    segs, stacked = split_target(trainer, batch)
    assert batch["data"].shape[1] == trainer.num_input_channels
    for seg, scale_maps in zip(segs, stacked):
        assert scale_maps.shape == (seg.shape[0], layout.num_channels, *seg.shape[2:])
        split = layout.split(scale_maps.numpy())
        phi, rrw, labels = split["signed_distance"], split["rrw"][:, 0], seg[:, 0].numpy()
        padding = np.all(scale_maps.numpy() == 0, axis=1)
        assert np.all(labels[padding] == 0)
        inside = ~padding
        assert np.any(inside & (labels != IGNORE))
        for k in range(NUM_CLASSES):
            assert np.all(phi[:, k][inside & (labels == k)] < 0)
            assert np.all(phi[:, k][inside & (labels != k)] > 0)
        annotated = inside & (labels != IGNORE)
        assert np.all(rrw[annotated] < 0) and np.all(rrw[annotated] >= -1)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_data_loader_maps_stay_aligned_at_every_scale(pipeline_dataset, monkeypatch, configuration):
    trainer = build_trainer(nnUNetTrainerPipelineMaps, configuration, pipeline_dataset, monkeypatch)
    train, val = loaders(trainer)
    spatial = spatial_transform(train.transforms)
    spatial.p_rotation = spatial.p_scaling = 0.0  # crops and mirrors only: values move, none is interpolated
    torch.manual_seed(0)
    np.random.seed(0)
    for _ in range(3):
        assert_maps_follow_target(trainer, next(train))
    assert_maps_follow_target(trainer, next(val))


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres", "3d_cascade_fullres"])
def test_augmented_batches_keep_rrw_rectified(pipeline_dataset, monkeypatch, configuration):
    """With nnU-Net's augmentation as configured (rotation, zoom), RRW stays in [-1, 0) wherever the case is."""
    trainer = build_trainer(nnUNetTrainerPipelineMaps, configuration, pipeline_dataset, monkeypatch)
    train, _ = loaders(trainer)
    spatial = spatial_transform(train.transforms)
    spatial.p_rotation = spatial.p_scaling = 1.0
    np.random.seed(1)
    batch = next(train)
    _, stacked = split_target(trainer, batch)
    rrw = trainer.map_transport.layout.split(stacked[0].numpy())["rrw"]
    assert rrw.min() >= -1.0 and rrw.max() <= 1.0 + 1e-6
    assert np.any(rrw < 0)


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres", "3d_cascade_fullres"])
def test_on_the_fly_maps_equal_maps_of_the_augmented_target(pipeline_dataset, monkeypatch, configuration):
    trainer = build_trainer(nnUNetTrainerPipelineMapsOnTheFly, configuration, pipeline_dataset, monkeypatch)
    train, _ = loaders(trainer)
    np.random.seed(2)
    batch = next(train)
    segs, stacked = split_target(trainer, batch)
    spacing, kinds = trainer.configuration_manager.spacing, trainer.map_transport.layout.kinds
    for seg, scale_maps, scale in zip(segs, stacked, trainer._get_deep_supervision_scales()):
        patch_spacing = [s / f for s, f in zip(spacing, scale)]
        for item in range(seg.shape[0]):
            expected = compute_map_stack(seg[item, 0].numpy(), kinds, NUM_CLASSES, IGNORE, patch_spacing)
            np.testing.assert_array_equal(scale_maps[item].numpy(), np.concatenate([expected[k] for k in kinds]))


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_deep_supervision_maps_come_from_the_voxels_nnunet_picks(pipeline_dataset, monkeypatch, configuration):
    """Each coarse map voxel is the full-resolution map at the voxel nnU-Net's DownsampleSegForDSTransform picks
    for the target: both are fed an image of voxel indices, with the trainer's own scales and patch."""
    trainer = build_trainer(nnUNetTrainerPipelineMaps, configuration, pipeline_dataset, monkeypatch)
    scales = trainer._get_deep_supervision_scales()
    patch = tuple(int(p) for p in trainer.configuration_manager.patch_size)
    indices = torch.arange(int(np.prod(patch)), dtype=torch.float32).reshape(1, *patch)
    picked = DownsampleSegForDSTransform(ds_scales=scales)(segmentation=indices)["segmentation"]
    for scale, nnunet_pick in zip(scales, picked):
        np.testing.assert_array_equal(downsample_like_segmentation(indices, scale).numpy(), nnunet_pick.numpy())


@pytest.mark.parametrize("stored", ["numpy", "blosc2"])
def test_image_with_maps_reads_exactly_the_box(stored):
    """The lazy image-with-maps array nnU-Net's loader crops equals the concatenated arrays, for in-bounds boxes,
    boxes touching the border and empty boxes (what ``crop_and_pad_nd`` asks for)."""
    rng = np.random.default_rng(0)
    image, maps = rng.random((1, 6, 30, 40)).astype(np.float32), rng.random((4, 6, 30, 40)).astype(np.float32)
    if stored == "blosc2":
        arrays = [blosc2.asarray(image, chunks=(1, 6, 16, 16), blocks=(1, 1, 16, 16)),
                  blosc2.asarray(maps, chunks=(4, 6, 16, 16), blocks=(1, 1, 16, 16), cparams={"clevel": 0})]
    else:
        arrays = [image, maps]
    lazy = ImageWithMaps(arrays[0], arrays[1:], "case", None, ["signed_distance"])
    assert lazy.shape == (5, 6, 30, 40) and lazy.dtype == np.float32
    reference = np.concatenate([image, maps])
    for box in [(slice(None), slice(1, 5), slice(3, 29), slice(0, 40)), (slice(None),),
                (slice(None), slice(2, 2), slice(0, 3)), (slice(None), slice(0, 6), slice(10, 30), slice(35, 40))]:
        np.testing.assert_array_equal(lazy[box], reference[box])

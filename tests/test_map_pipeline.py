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
import copy
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
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.rot90 import Rot90Transform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_losses.losses import RegionWiseLoss
from nnunet_losses.nnunet.configuration import load_configuration
from nnunet_losses.nnunet.dataset import CropHandoff, RecordingImage
from nnunet_losses.nnunet.map_store import MapStore
from nnunet_losses.nnunet.map_layout import compute_map_stack
from nnunet_losses.nnunet.setup_maps import write_configuration_maps
from nnunet_losses.nnunet.small_plans import make_small_plans
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
from nnunet_losses.nnunet.map_transport import downsample_like_segmentation
from nnunet_losses.nnunet.transforms import RecordingSpatialTransform, RecordingTransform, add_map_transforms
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
    wrapped = [t for t in pipeline.transforms if isinstance(t, RecordingSpatialTransform)]
    assert len(wrapped) == 1, "the trainer must wrap nnU-Net's one SpatialTransform"
    return wrapped[0].spatial


def split_target(trainer, batch: dict) -> tuple[list, list]:
    """nnU-Net's target (left in ``batch``) and the maps of every scale, as the trainer's own map transport takes them."""
    maps = trainer.map_transport.take(batch, trainer.device)
    segs = batch["target"]
    assert len(segs) == len(maps) == len(trainer._get_deep_supervision_scales())
    assert all(seg.dtype == torch.int16 and seg.shape[1] == 1 for seg in segs)  # nnU-Net's own target
    return segs, maps


# --- the maps are what nnU-Net's own transforms make of them -----------------------------------------------------------


class MapsAsImageChannels:
    """Reference dataset: nnU-Net's dataset with the case's whole maps (float32, as stored) behind the image channels,
    so that nnU-Net's loader crops and pads them with the image."""

    def __init__(self, dataset, store: MapStore, kinds) -> None:
        self.dataset, self.store, self.kinds = dataset, store, kinds
        self.identifiers = dataset.identifiers

    def load_case(self, identifier):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        maps = [self.store.read(identifier, kind) for kind in self.kinds]
        return np.concatenate([np.asarray(data[:]), *maps]), seg, seg_prev, properties


class MapsToRegressionTarget(BasicTransform):
    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = num_channels

    def apply(self, data_dict, **params):
        image = data_dict["image"]
        data_dict["regression_target"], data_dict["image"] = image[-self.num_channels :], image[: -self.num_channels]
        return data_dict


class KeepRegressionTarget(BasicTransform):
    """Last reference transform: the augmented maps travel on as segmentation channels of the full-resolution target."""

    def apply(self, data_dict, **params):
        maps = data_dict.pop("regression_target")
        segmentation = data_dict["segmentation"]
        first = segmentation[0] if isinstance(segmentation, list) else segmentation
        packed = torch.cat([first.float(), maps])
        data_dict["segmentation"] = [packed, *segmentation[1:]] if isinstance(segmentation, list) else packed
        return data_dict


class ZoomOf(BasicTransform):
    """Reference spatial transform: nnU-Net's, noting the scaling it drew (``p_synchronize_scaling_across_axes=1``)."""

    def __init__(self, spatial: SpatialTransform, zooms: list) -> None:
        super().__init__()
        self.spatial, self.zooms = spatial, zooms

    def get_parameters(self, **data_dict):
        return self.spatial.get_parameters(**data_dict)

    def apply(self, data_dict, **params):
        affine = params["affine"]  # R @ S with one scale factor s: det = s^dim
        self.zooms.append(1.0 if affine is None else float(abs(np.linalg.det(affine)) ** (1.0 / affine.shape[0])))
        return self.spatial.apply(data_dict, **params)


def reference_loader(trainer, pipeline: ComposeTransforms, zooms: list):
    """nnU-Net's own training loader, its pipeline the trainer's own (a copy of ``pipeline``, nnU-Net's transforms
    unwrapped, in the state they had: some of nnU-Net's transforms shuffle lists they keep), the maps cropped with
    the image and moved by nnU-Net as its regression target."""
    def unwrapped(transform):
        if isinstance(transform, RecordingSpatialTransform):
            return ZoomOf(transform.spatial, zooms)
        return transform.transform if isinstance(transform, RecordingTransform) else transform

    layout = trainer.map_transport.layout
    own = [unwrapped(t) for t in copy.deepcopy(pipeline.transforms)[1:-1]]  # without TakeCaseCrop and MapsToTarget
    assert not any(type(t).__module__.startswith("nnunet_losses") for t in own)
    train, _ = nnUNetTrainer.get_tr_and_val_datasets(trainer)
    dataset = MapsAsImageChannels(train, MapStore(trainer.preprocessed_config), layout.kinds)
    _, _, initial_patch, _ = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    return nnUNetDataLoader(
        dataset, trainer.batch_size, initial_patch, trainer.configuration_manager.patch_size, trainer.label_manager,
        oversample_foreground_percent=trainer.oversample_foreground_percent,
        transforms=ComposeTransforms([MapsToRegressionTarget(layout.num_channels), *own, KeepRegressionTarget()]),
        probabilistic_oversampling=trainer.probabilistic_oversampling,
    )


SPATIAL_DRAWS = {  # (p_rotation, p_scaling, scaling): none (a box), rotation only, zoom only, nnU-Net's own draw
    "box": (0.0, 0.0, None), "rotation": (1.0, 0.0, None), "zoom_out": (0.0, 1.0, (1.25, 1.25)), "zoom_in": (0.0, 1.0, (0.8, 0.8)),
    "nnunet": (None, None, None),
}


def force_draws(spatial: SpatialTransform, draw: str) -> None:
    p_rotation, p_scaling, scaling = SPATIAL_DRAWS[draw]
    if p_rotation is not None:
        spatial.p_rotation, spatial.p_scaling = p_rotation, p_scaling
    if scaling is not None:
        spatial.scaling = scaling


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_maps_equal_nnunets_own_augmentation_of_them_as_a_regression_target(pipeline_dataset, monkeypatch, configuration):
    """The trainer's maps, read once for the final patch, are exactly what nnU-Net's own loader and transforms make of
    the stored maps cropped with the image (linear interpolation, zero padding, mirroring), divided by the zoom in
    the mm channels, at every deep-supervision scale, rounded to the float16 they travel in; image and target are
    nnU-Net's, bit for bit. Each kind of draw of :data:`SPATIAL_DRAWS`, two seeds each: the same cases, boxes,
    rotations, zooms and flips for both loaders; in the cascade also the same previous-stage channels."""
    trainer = build_trainer(nnUNetTrainerPipelineMaps, configuration, pipeline_dataset, monkeypatch)
    train, _ = loaders(trainer)
    layout, transported = trainer.map_transport.layout, trainer.map_transport.target_dtype
    assert transported == torch.float16  # labels up to 2048: the maps travel as float16, rounded once
    mm = np.zeros(layout.num_channels, dtype=bool)
    for channels in layout.mm_slices:
        mm[channels] = True
    zooms: list[float] = []
    spatial = spatial_transform(train.transforms)
    own = (spatial.p_rotation, spatial.p_scaling, spatial.scaling)
    for draw in sorted(SPATIAL_DRAWS):
        spatial.p_rotation, spatial.p_scaling, spatial.scaling = own  # "nnunet": nnU-Net's own probabilities
        force_draws(spatial, draw)
        for seed in range(2):
            reference = reference_loader(trainer, train.transforms, zooms)
            np.random.seed(seed), torch.manual_seed(seed)
            batch = next(train)
            np.random.seed(seed), torch.manual_seed(seed)
            expected = reference.generate_train_batch()
            assert torch.equal(batch["data"], expected["data"]), draw
            segs, maps = split_target(trainer, batch)
            reference_full = expected["target"][0]
            assert torch.equal(segs[0], reference_full[:, :1].to(torch.int16))
            assert all(torch.equal(seg, target) for seg, target in zip(segs[1:], expected["target"][1:]))
            batch_zooms, zooms[:] = list(zooms), []
            assert len(batch_zooms) == trainer.batch_size
            for item, zoom in enumerate(batch_zooms):
                if draw.startswith("zoom"):
                    assert zoom == pytest.approx(SPATIAL_DRAWS[draw][2][0])
                reference_maps = reference_full[item, 1:].clone()
                reference_maps[mm] /= zoom
                for scale, scale_maps in zip(trainer._get_deep_supervision_scales(), maps):
                    want = downsample_like_segmentation(reference_maps, scale).to(transported).float()
                    assert torch.equal(scale_maps[item], want), (draw, seed, item, scale)
            assert np.any(maps[0].numpy()[:, mm] != 0)


def test_a_transform_that_moves_voxels_otherwise_is_refused(pipeline_dataset, monkeypatch):
    """nnU-Net's Rot90Transform (used by some of its trainer variants), bare or in a RandomTransform, would move the
    patch without the maps: the trainer refuses to build that pipeline."""
    trainer = build_trainer(nnUNetTrainerPipelineMaps, "3d_fullres", pipeline_dataset, monkeypatch)
    for extra in (Rot90Transform((1, 2, 3), (0, 1)), RandomTransform(Rot90Transform((1, 2, 3), (0, 1)), 0.5)):
        with pytest.raises(ValueError, match="Rot90Transform moves the voxels of the patch"):
            add_map_transforms(ComposeTransforms([extra]), trainer.map_transport, None, CropHandoff())


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


def test_recording_image_reads_as_nnunet_and_records_where_the_crop_lies():
    """Sliced by nnU-Net's ``crop_and_pad_nd``, the case's image gives what nnU-Net's own slicing gives, and the crop it
    leaves in the hand-off begins where the box began, also on both sides of a case shorter than the box."""
    from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

    image = np.random.default_rng(0).random((1, 6, 30, 40)).astype(np.float32)
    handoff = CropHandoff()
    recording = RecordingImage(blosc2.asarray(image, chunks=(1, 6, 16, 16), blocks=(1, 1, 16, 16)), [], "case", handoff)
    for bbox in ([[1, 5], [3, 29], [0, 40]], [[-2, 9], [-5, 35], [30, 50]], [[2, 3], [0, 30], [-7, 44]]):
        np.testing.assert_array_equal(crop_and_pad_nd(recording, bbox, 0), crop_and_pad_nd(image, bbox, 0))
        crop = handoff.take()
        assert (crop.origin, crop.shape, crop.case_shape) == (tuple(a for a, _ in bbox), tuple(b - a for a, b in bbox), (6, 30, 40))
    with pytest.raises(RuntimeError, match="no crop of a case with maps is pending"):
        handoff.take()

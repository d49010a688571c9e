"""Maps computed on the training device (``map_mode = "device"``), through nnU-Net's own pipelines.

As in ``test_map_pipeline.py``, the trainers build everything themselves (``initialize()``,
nnU-Net's ``get_dataloaders()``, its ``nnUNetDataLoader`` and its
``get_training_transforms`` / ``get_validation_transforms`` with the arguments nnU-Net
computes); only probabilities and ranges of nnU-Net's ``SpatialTransform`` are forced.
The dataset is that module's (ACDC-like, ignore label on the first slice; 2d,
3d_fullres with dummy-2D augmentation, near-isotropic 3d, 3d_lowres and its cascade),
without ``setup_maps`` ever run on it: the device mode stores nothing.

The maps the trainer's map transport hands the loss must equal the numpy maps
(:func:`compute_map_stack`) of the same final target, per sample and deep-supervision
scale ``f``, with the spacing ``spacing / f`` (mm of the configuration's spacing laid
over the patch, the convention of every map mode), up to float32 rounding (the device
EDT adds the squared axis terms in another order): relative 2e-6, zeros and signs exact.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

from nnunet_losses.losses import RegionWiseLoss
from nnunet_losses.nnunet.configuration import preprocessed_root
from nnunet_losses.nnunet.map_layout import compute_map_stack
from nnunet_losses.nnunet.map_store import MAP_FOLDER_NAME
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses

from conftest import run_command
from test_map_pipeline import CONFIGURATIONS, IGNORE, NUM_CLASSES, PLANS, build_trainer, loaders, prepare_dataset

pytestmark = pytest.mark.nnunet

DATASET_ID = 221


class nnUNetTrainerDeviceMaps(nnUNetTrainerLosses):
    """RW loss on RRW and on RW-Boundary maps (both kinds: scale-free and mm), computed on the device."""

    map_mode = "device"

    def loss_terms(self):
        return {"rrw": RegionWiseLoss("rrw"), "rwb": RegionWiseLoss("rw_boundary")}


@pytest.fixture(scope="module")
def device_dataset(workspace) -> str:
    """test_map_pipeline's dataset (ignore label; 2d, 3d_fullres, 3d_isotropic, 3d_lowres, cascade) without maps."""
    return prepare_dataset(workspace, DATASET_ID, (nnUNetTrainerDeviceMaps,))


def training_pipeline(trainer):
    """The trainer's training transforms, with the arguments nnU-Net's ``get_dataloaders`` passes."""
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    return trainer.get_training_transforms(
        trainer.configuration_manager.patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes, dummy_2d,
        use_mask_for_norm=trainer.configuration_manager.use_mask_for_norm, is_cascaded=trainer.is_cascaded,
        foreground_labels=trainer.label_manager.foreground_labels, ignore_label=trainer.label_manager.ignore_label,
    )


def spatial_transform(pipeline) -> SpatialTransform:
    """nnU-Net's one SpatialTransform of a pipeline (unwrapped: the device mode adds nothing)."""
    [spatial] = [t for t in pipeline.transforms if isinstance(t, SpatialTransform)]
    return spatial


def assert_maps_of_the_final_target(trainer, batch: dict) -> None:
    """The maps the trainer's transport takes for ``batch`` == numpy maps of each sample's target at each scale with
    spacing / scale; nnU-Net's own target is left in ``batch`` untouched."""
    segs = list(batch["target"])
    scales = trainer._get_deep_supervision_scales()
    assert len(segs) == len(scales)
    maps = trainer.map_transport.take(batch, trainer.device)
    assert len(batch["target"]) == len(segs) and all(a is b for a, b in zip(batch["target"], segs))  # nnU-Net's own target
    layout, spacing = trainer.map_transport.layout, trainer.configuration_manager.spacing
    kinds = layout.kinds
    for seg, scale_maps, scale in zip(segs, maps, scales):
        assert scale_maps.dtype == torch.float32 and scale_maps.shape == (seg.shape[0], layout.num_channels, *seg.shape[2:])
        for item in range(seg.shape[0]):
            expected = compute_map_stack(seg[item, 0].numpy(), kinds, NUM_CLASSES, IGNORE, [s / f for s, f in zip(spacing, scale)])
            # float32 EDTs summed in another order: equal up to a few float32 ulps, zeros exactly, signs exactly
            np.testing.assert_allclose(scale_maps[item].numpy(), np.concatenate([expected[k] for k in kinds]), rtol=2e-6, atol=0)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_device_maps_equal_numpy_maps_of_the_final_target_at_every_scale(device_dataset, monkeypatch, configuration):
    """Every training patch rotated and zoomed by nnU-Net's SpatialTransform, and the validation patches."""
    trainer = build_trainer(nnUNetTrainerDeviceMaps, configuration, device_dataset, monkeypatch)
    train, val = loaders(trainer)
    spatial = spatial_transform(train.transforms)
    spatial.p_rotation = spatial.p_scaling = 1.0
    np.random.seed(3)
    torch.manual_seed(3)
    assert_maps_of_the_final_target(trainer, next(train))
    assert_maps_of_the_final_target(trainer, next(val))


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_device_mode_leaves_nnunets_pipelines_as_they_are(device_dataset, monkeypatch, configuration):
    """Nothing is added to the augmentation workers' work: the same transforms, in the same order, as nnUNetTrainer's."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    device, native = (build_trainer(cls, configuration, device_dataset, monkeypatch) for cls in (nnUNetTrainerDeviceMaps, nnUNetTrainer))
    assert [type(t) for t in training_pipeline(device).transforms] == [type(t) for t in training_pipeline(native).transforms]
    scales = native._get_deep_supervision_scales()
    validation = [device.get_validation_transforms(scales), native.get_validation_transforms(scales)]
    assert [type(t) for t in validation[0].transforms] == [type(t) for t in validation[1].transforms]


def test_on_device_trainer_trains_through_nnunetv2_train_without_stored_maps(device_dataset, workspace):
    """nnUNetTrainerRRWOnDevice, 1 epoch of 2 iterations on CPU, on a dataset setup_maps never saw."""
    assert not (preprocessed_root() / device_dataset / MAP_FOLDER_NAME).exists()
    results = workspace.root / "device_mode_results"
    trainer = "nnUNetTrainerRRWOnDevice"
    env = workspace.training_environment(epochs=1, iterations=2, nnUNet_results=str(results))
    run_command(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-p", PLANS, "-tr", trainer, "-device", "cpu"], env, timeout=600)

    folder = results / device_dataset / f"{trainer}__{PLANS}__2d" / "fold_0"
    record = json.loads((folder / "nnunet_losses_run.json").read_text())["runs"][-1]
    assert (record["trainer"], record["map_mode"], record["maps"], record["num_epochs"]) == (trainer, "device", ["rrw"], 1)
    terms = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]["loss_terms"][0]
    assert set(terms) == {"rw"} and np.isfinite(terms["rw"])
    assert not (preprocessed_root() / device_dataset / MAP_FOLDER_NAME).exists()

"""The losses' public API: values pinned before the API change, maps routing, reduction,
functional forms, nnU-Net's Dice term, and the README example."""
from __future__ import annotations

import functools
import json
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_losses import losses as L
from nnunet_losses.maps import rrw_map
from test_losses import blob_target, maps_for, maps_read_by

LOSSES = {
    "rw_rrw": lambda **kw: L.RegionWiseLoss("rrw", **kw),
    "rw_class_emphasis": lambda **kw: L.RegionWiseLoss("class_emphasis_rrw", class_weights=[1.0, 2.0, 3.0], **kw),
    "rw_boundary": lambda **kw: L.RegionWiseLoss("rw_boundary", **kw),
    "rw_boundary_shift": lambda **kw: L.RegionWiseLoss("rw_boundary", kervadec_shift=True, **kw),
    "rw_ac": lambda **kw: L.RegionWiseLoss("ac", **kw),
    "rw_cao": lambda **kw: L.RegionWiseLoss("cao", **kw),
    "boundary": lambda **kw: L.BoundaryLoss(**kw),
    "boundary_fg": lambda **kw: L.BoundaryLoss(include_background=False, **kw),
    "boundary_fg_shift": lambda **kw: L.BoundaryLoss(include_background=False, kervadec_shift=True, **kw),
    "hd": lambda **kw: L.OneSidedHausdorffLoss(**kw),
    "hd_fg": lambda **kw: L.OneSidedHausdorffLoss(include_background=False, **kw),
    "dice": lambda **kw: L.SoftDiceLoss(**kw),
    "dice_bg": lambda **kw: L.SoftDiceLoss(include_background=True, **kw),
    "dice_batch": lambda **kw: L.SoftDiceLoss(batch_dice=True, **kw),
    "tversky": lambda **kw: L.TverskyLoss(**kw),
    "focal_tversky": lambda **kw: L.FocalTverskyLoss(**kw),
    "fbeta": lambda **kw: L.AsymmetricFBetaLoss(**kw),
    "gdl": lambda **kw: L.GeneralizedDiceLoss(**kw),
    "ce": lambda **kw: L.CrossEntropyLoss(**kw),
    "ce_weighted": lambda **kw: L.CrossEntropyLoss(class_weights=[0.2, 1.0, 2.0], **kw),
    "wce": lambda **kw: L.RRWWeightedCrossEntropyLoss(**kw),
    "focal": lambda **kw: L.FocalLoss(**kw),
    "cdl": lambda **kw: L.CommonSupportDiceLoss(**kw),
    "cs_boundary": lambda **kw: L.CommonSupportBoundaryLoss(**kw),
    "centroid": lambda **kw: L.CentroidDistanceLoss(**kw),
    "composite": lambda **kw: L.CompositeLoss(
        {"dice": L.SoftDiceLoss(**kw), "boundary": L.BoundaryLoss(include_background=False, **kw)}, {"dice": 1.0, "boundary": 0.1}
    ),
}

# (value, <gradient, probe>) of every loss on the batches below, computed by the losses
# before their API took only the maps each reads (then: BoundaryLoss(classes=[1, 2]),
# OneSidedHausdorffLoss(classes=[1, 2]) for the "_fg" rows), kept in tests/data/pinned_loss_values.json.
PINNED = {name: tuple(values) for name, values in json.loads((Path(__file__).parent / "data" / "pinned_loss_values.json").read_text()).items()}


@functools.lru_cache(maxsize=None)
def pinned_batch(kind: str):
    """A fixed batch (cached: callers must not modify it): 3 x 10x12 with an ignore label (3) under a mask (2d), or 2 x 5x8x8 without (3d)."""
    if kind == "2d":
        target = blob_target(3, (10, 12), 3, 21)
        maps = maps_for(target, 3)
        mask = torch.ones_like(target, dtype=torch.bool)
        mask[0, :, :3] = False
        mask[2, :, :, -4:] = False
        target = torch.where(mask, target, torch.full_like(target, 3))
    else:
        target = blob_target(2, (5, 8, 8), 3, 22)
        maps = maps_for(target, 3)
        mask = None
    generator = torch.Generator().manual_seed(23 if kind == "2d" else 24)
    logits = torch.randn(target.shape[0], 3, *target.shape[2:], generator=generator) * 2
    probe = torch.randn(logits.shape, generator=generator)
    return logits, target, mask, maps, probe


@pytest.mark.parametrize("kind", ["2d", "3d"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_values_and_gradients_are_the_pinned_ones(name, kind):
    logits, target, mask, maps, probe = pinned_batch(kind)
    loss = LOSSES[name]()
    x = logits.clone().requires_grad_(True)
    value = loss(x, target, mask=mask, **maps_read_by(loss, maps))
    value.backward()
    expected_value, expected_projection = PINNED[f"{name}-{kind}"]
    assert value.item() == pytest.approx(expected_value, rel=1e-6)
    assert (x.grad.double() * probe.double()).sum().item() == pytest.approx(expected_projection, rel=1e-6, abs=1e-9)


# --- functional forms ----------------------------------------------------------------------------------------

FUNCTIONAL = {
    "rw_rrw": lambda x, t, m, maps, **kw: L.region_wise_map_loss(x, t, m, map="rrw", rrw=maps["rrw"], **kw),
    "rw_class_emphasis": lambda x, t, m, maps, **kw: L.region_wise_map_loss(
        x, t, m, map="class_emphasis_rrw", class_weights=[1.0, 2.0, 3.0], rrw=maps["rrw"], **kw
    ),
    "rw_boundary": lambda x, t, m, maps, **kw: L.region_wise_map_loss(x, t, m, map="rw_boundary", signed_distance=maps["signed_distance"], **kw),
    "rw_boundary_shift": lambda x, t, m, maps, **kw: L.region_wise_map_loss(
        x, t, m, map="rw_boundary", kervadec_shift=True, signed_distance=maps["signed_distance"], **kw
    ),
    "rw_ac": lambda x, t, m, maps, **kw: L.region_wise_map_loss(x, t, m, map="ac", **kw),
    "rw_cao": lambda x, t, m, maps, **kw: L.region_wise_map_loss(x, t, m, map="cao", **kw),
    "boundary": lambda x, t, m, maps, **kw: L.boundary_loss(x, t, m, signed_distance=maps["signed_distance"], **kw),
    "boundary_fg": lambda x, t, m, maps, **kw: L.boundary_loss(x, t, m, signed_distance=maps["signed_distance"], include_background=False, **kw),
    "boundary_fg_shift": lambda x, t, m, maps, **kw: L.boundary_loss(
        x, t, m, signed_distance=maps["signed_distance"], include_background=False, kervadec_shift=True, **kw
    ),
    "hd": lambda x, t, m, maps, **kw: L.one_sided_hausdorff_loss(x, t, m, signed_distance=maps["signed_distance"], **kw),
    "hd_fg": lambda x, t, m, maps, **kw: L.one_sided_hausdorff_loss(
        x, t, m, signed_distance=maps["signed_distance"], include_background=False, **kw
    ),
    "dice": lambda x, t, m, maps, **kw: L.soft_dice_loss(x, t, m, **kw),
    "dice_bg": lambda x, t, m, maps, **kw: L.soft_dice_loss(x, t, m, include_background=True, **kw),
    "dice_batch": lambda x, t, m, maps, **kw: L.soft_dice_loss(x, t, m, batch_dice=True, **kw),
    "tversky": lambda x, t, m, maps, **kw: L.tversky_loss(x, t, m, **kw),
    "focal_tversky": lambda x, t, m, maps, **kw: L.focal_tversky_loss(x, t, m, **kw),
    "fbeta": lambda x, t, m, maps, **kw: L.asymmetric_f_beta_loss(x, t, m, **kw),
    "gdl": lambda x, t, m, maps, **kw: L.generalized_dice_loss(x, t, m, **kw),
    "ce": lambda x, t, m, maps, **kw: L.cross_entropy_loss(x, t, m, **kw),
    "ce_weighted": lambda x, t, m, maps, **kw: L.cross_entropy_loss(x, t, m, class_weights=[0.2, 1.0, 2.0], **kw),
    "wce": lambda x, t, m, maps, **kw: L.rrw_weighted_cross_entropy_loss(x, t, m, rrw=maps["rrw"], **kw),
    "focal": lambda x, t, m, maps, **kw: L.focal_loss(x, t, m, **kw),
    "cdl": lambda x, t, m, maps, **kw: L.common_support_dice_loss(x, t, m, **kw),
    "cs_boundary": lambda x, t, m, maps, **kw: L.common_support_boundary_loss(x, t, m, signed_distance=maps["signed_distance"], **kw),
    "centroid": lambda x, t, m, maps, **kw: L.centroid_distance_loss(x, t, m, **kw),
}
POOLED = {"dice_batch", "gdl", "cdl"}  # statistics pooled over the batch: only reduction="mean"


def test_every_loss_has_a_functional_form_exported():
    assert set(FUNCTIONAL) == set(LOSSES) - {"composite"}
    for name in ("region_wise_loss", "region_wise_map_loss", "soft_dice_loss", "cross_entropy_loss", "centroid_distance_loss"):
        assert name in L.__all__


@pytest.mark.parametrize("kind", ["2d", "3d"])
@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_form_equals_module(name, kind):
    logits, target, mask, maps, _ = pinned_batch(kind)
    reductions = ("mean",) if name in POOLED else ("mean", "none", "sum")
    for reduction in reductions:
        loss = LOSSES[name](reduction=reduction)
        x_module, x_function = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        expected = loss(x_module, target, mask=mask, **maps_read_by(loss, maps))
        value = FUNCTIONAL[name](x_function, target, mask, maps, reduction=reduction)
        assert torch.equal(value, expected), (name, reduction)
        expected.sum().backward()
        value.sum().backward()
        assert torch.equal(x_function.grad, x_module.grad), (name, reduction)


def test_region_wise_loss_of_a_full_map_is_the_module_with_that_map():
    logits, target, mask, maps, _ = pinned_batch("2d")
    z = 1.0 - 2.0 * torch.zeros_like(logits).scatter_(1, torch.where(mask, target, 0), 1.0)  # the Cao map
    expected = L.RegionWiseLoss("cao", reduction="none")(logits, target, mask=mask)
    assert torch.allclose(L.region_wise_loss(logits, z, mask, reduction="none"), expected, rtol=1e-6, atol=0)


# --- reduction -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["2d", "3d"])
@pytest.mark.parametrize("name", sorted(set(LOSSES) - POOLED))
def test_reduction_none_gives_per_sample_values_whose_mean_is_the_mean(name, kind):
    logits, target, mask, maps, _ = pinned_batch(kind)
    values = {r: LOSSES[name](reduction=r) for r in ("mean", "none", "sum")}
    results = {r: loss(logits, target, mask=mask, **maps_read_by(loss, maps)) for r, loss in values.items()}
    assert results["none"].shape == (logits.shape[0],)
    assert results["none"].mean().item() == pytest.approx(results["mean"].item(), rel=1e-6)
    assert results["sum"].item() == pytest.approx(results["none"].sum().item(), rel=1e-6)
    if mask is None and name != "ce_weighted":  # no mask, no voxel weights: each sample's value is its loss alone
        for b in range(logits.shape[0]):
            alone = {key: value[b : b + 1] for key, value in maps.items()}
            single = values["mean"](logits[b : b + 1], target[b : b + 1], **maps_read_by(values["mean"], alone))
            assert results["none"][b].item() == pytest.approx(single.item(), rel=1e-5), b


def test_reduction_none_with_a_mask_weights_samples_by_their_valid_voxels():
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    logits = torch.zeros(2, 2, 4, 4)
    mask = torch.ones(2, 1, 4, 4)
    mask[1, :, :, 2:] = 0  # sample 1 has half the valid voxels
    per_sample = L.CrossEntropyLoss(reduction="none")(logits, target, mask=mask)
    ce = np.log(2.0)  # every valid voxel: uniform softmax over 2 classes
    # shares B * sum_b / sum_all: 2 * 16 ce / 24 and 2 * 8 ce / 24
    assert per_sample.tolist() == pytest.approx([2 * 16 * ce / 24, 2 * 8 * ce / 24], rel=1e-6)


@pytest.mark.parametrize("name", sorted(POOLED))
def test_losses_pooled_over_the_batch_refuse_per_sample_reductions(name):
    for reduction in ("none", "sum"):
        with pytest.raises(ValueError, match=f"reduction='{reduction}' needs one value per sample, but .*; use reduction='mean'"):
            LOSSES[name](reduction=reduction)
    logits, target, mask, maps, _ = pinned_batch("2d")
    with pytest.raises(ValueError, match="needs one value per sample"):
        FUNCTIONAL[name](logits, target, mask, maps, reduction="none")


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        L.SoftDiceLoss(reduction="avg")


# --- maps: each loss takes only the maps it reads ------------------------------------------------------------


def test_losses_without_maps_take_no_map_arguments():
    logits, target, mask, maps, _ = pinned_batch("3d")
    for loss in (L.SoftDiceLoss(), L.CrossEntropyLoss(), L.FocalLoss(), L.GeneralizedDiceLoss(), L.CentroidDistanceLoss()):
        assert loss.required_maps == ()
        with pytest.raises(TypeError, match="unexpected keyword argument 'rrw'"):
            loss(logits, target, rrw=maps["rrw"])
    with pytest.raises(TypeError, match=r"RegionWiseLoss does not read the map\(s\) \['rrw'\]; it reads no maps"):
        L.RegionWiseLoss("ac")(logits, target, rrw=maps["rrw"])
    with pytest.raises(TypeError, match=r"does not read the map\(s\) \['signed_distance'\]; it reads \['rrw'\]"):
        L.RegionWiseLoss("rrw")(logits, target, rrw=maps["rrw"], signed_distance=maps["signed_distance"])
    with pytest.raises(TypeError, match=r"RegionWiseLoss does not read the map\(s\) \['rrw'\]; it reads no maps"):
        L.region_wise_map_loss(logits, target, map="ac", rrw=maps["rrw"])
    with pytest.raises(ValueError, match="needs the 'signed_distance' map: pass signed_distance=... \\(shape \\(B, C, \\*spatial\\)\\)"):
        L.BoundaryLoss()(logits, target)


def test_composite_takes_the_union_and_routes_each_map_to_its_terms():
    logits, target, mask, maps, _ = pinned_batch("2d")
    terms = {"dice": L.SoftDiceLoss(), "rrw": L.RegionWiseLoss("rrw"), "boundary": L.BoundaryLoss(), "wce": L.RRWWeightedCrossEntropyLoss()}
    weights = {"dice": 1.0, "rrw": 0.5, "boundary": 0.25, "wce": 2.0}
    composite = L.CompositeLoss(terms, weights)
    assert composite.required_maps == ("rrw", "signed_distance")
    total = composite(logits, target, mask=mask, **maps)
    alone = {name: term(logits, target, mask=mask, **maps_read_by(term, maps)) for name, term in terms.items()}
    assert {name: value.item() for name, value in composite.last_values.items()} == {name: value.item() for name, value in alone.items()}
    assert total.item() == pytest.approx(sum(weights[n] * alone[n].item() for n in terms), rel=1e-6)
    with pytest.raises(TypeError, match=r"CompositeLoss does not read the map\(s\) \['signed_distance'\]"):
        L.CompositeLoss({"dice": L.SoftDiceLoss()}, {"dice": 1.0})(logits, target, mask=mask, signed_distance=maps["signed_distance"])
    with pytest.raises(ValueError, match="needs the 'rrw' map"):
        composite(logits, target, mask=mask, signed_distance=maps["signed_distance"])

    class ReadsAnUndeclaredMap(L.SegmentationLoss):
        def compute(self, batch):
            return batch.require_map("rrw").mean()

    routed = L.CompositeLoss({"rrw": L.RegionWiseLoss("rrw"), "other": ReadsAnUndeclaredMap()}, {"rrw": 1.0, "other": 1.0})
    with pytest.raises(ValueError, match="needs the 'rrw' map"):  # a term sees only the maps it declares
        routed(logits, target, mask=mask, rrw=maps["rrw"])


def full_rrw(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """What :func:`nnunet_losses.maps.rrw_map` returns, per sample, stacked: (B, C, *spatial)."""
    return torch.from_numpy(np.stack([rrw_map(labels, num_classes) for labels in target[:, 0].numpy()]))


@pytest.mark.parametrize("make", [lambda: L.RegionWiseLoss("rrw"), lambda: L.RegionWiseLoss("class_emphasis_rrw", class_weights=[1.0, 2.0, 0.5]), L.RRWWeightedCrossEntropyLoss])
def test_rrw_accepts_the_full_map_of_rrw_map_as_well_as_the_compact_one(make):
    logits, target, _, maps, _ = pinned_batch("3d")
    loss = make()
    full = full_rrw(target, 3)
    assert full.shape == logits.shape
    assert loss(logits, target, rrw=full).item() == pytest.approx(loss(logits, target, rrw=maps["rrw"]).item(), rel=1e-6)


def test_rrw_of_another_channel_count_names_both_accepted_maps():
    logits, target, _, maps, _ = pinned_batch("3d")
    with pytest.raises(ValueError, match=r"map 'rrw' must have shape \(B, 1, \*spatial\) = \(2, 1, 5, 8, 8\) \(the compact map of maps.rrw_compact, or the full map of maps.rrw_map with C channels\), got \(2, 2, 5, 8, 8\)"):
        L.RegionWiseLoss("rrw")(logits, target, rrw=maps["rrw"].expand(-1, 2, -1, -1, -1))


def test_one_declaration_of_the_map_kinds_serves_losses_and_maps():
    from nnunet_losses.maps import MAP_KINDS
    from nnunet_losses.maps.declared_kinds import DECLARED_MAP_KINDS

    assert list(MAP_KINDS) == list(DECLARED_MAP_KINDS)
    for name, declared in DECLARED_MAP_KINDS.items():
        assert (MAP_KINDS[name].per_class_channels, MAP_KINDS[name].in_mm) == (declared.per_class_channels, declared.in_mm)
    map_losses = (L.RegionWiseLoss, L.BoundaryLoss, L.OneSidedHausdorffLoss, L.RRWWeightedCrossEntropyLoss, L.CommonSupportBoundaryLoss)
    keywords = {
        name for loss in map_losses for name, parameter in inspect.signature(loss.forward).parameters.items() if parameter.kind is parameter.KEYWORD_ONLY
    }
    assert keywords == set(DECLARED_MAP_KINDS)  # every map keyword of a loss is a declared kind, and every kind is read


# --- the README example ------------------------------------------------------------------------------------


def test_readme_example_of_the_losses_without_nnunet_runs(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("\n## Using the losses without nnU-Net\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    (code,) = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    exec(compile(code, "README.md: Using the losses without nnU-Net", "exec"), {})
    printed = capsys.readouterr().out
    assert re.fullmatch(r"RW -?\d\.\d{4}, per sample \[.+, .+\], Dice \d\.\d{4}, Dice \+ RW -?\d\.\d{4}\n", printed), printed


# --- nnU-Net's Dice term -------------------------------------------------------------------------------------


def nnunet_dice_batch(kind: str):
    """Logits and a float target (as nnU-Net's) with the ignore label 3 on some voxels."""
    generator = torch.Generator().manual_seed(31 if kind == "2d" else 32)
    spatial = (12, 10) if kind == "2d" else (4, 6, 5)
    target = torch.randint(0, 3, (3, 1, *spatial), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.2] = 3
    target[1] = torch.where(target[1] == 2, 0, target[1])  # a class absent from one sample
    logits = torch.randn(3, 3, *spatial, generator=generator) * 2
    return logits, target.float()


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_nnunet_dice_is_nnunets_memory_efficient_soft_dice_with_its_ignore_label_handling(kind, batch_dice):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from nnunet_losses.nnunet.nnunet_dice import NnUNetDiceLoss

    logits, target = nnunet_dice_batch(kind)
    # nnU-Net's loss as _build_loss builds it, with the CE weight 0: its Dice with the ignore-label handling
    theirs = DC_and_CE_loss(
        {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=0, weight_dice=1,
        ignore_label=3, dice_class=MemoryEfficientSoftDiceLoss,
    )
    x_theirs, x_ours = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    expected = theirs(x_theirs, target)
    value = NnUNetDiceLoss(batch_dice=batch_dice)(x_ours, target, mask=target != 3)  # the mask the loss adapter passes
    assert -1.0 < expected.item() < 0.0
    assert torch.equal(value, 1.0 + expected)
    expected.backward()
    value.backward()
    assert torch.equal(x_ours.grad, x_theirs.grad)


def test_nnunet_dice_refuses_per_sample_reductions():
    from nnunet_losses.nnunet.nnunet_dice import NnUNetDiceLoss

    with pytest.raises(ValueError, match="nnU-Net's Dice returns one value for the batch"):
        NnUNetDiceLoss(batch_dice=False, reduction="none")


NNUNET_DICE_TRAINERS = (
    "nnUNetTrainerBoundaryDiceFixed",
    "nnUNetTrainerBoundaryDiceRamp",
    "nnUNetTrainerBoundaryDiceRampOnDevice",
    "nnUNetTrainerBoundaryDiceRebalance",
    "nnUNetTrainerBoundaryDiceSteal",
    "nnUNetTrainerOneSidedHD",
    "nnUNetTrainerDiceFocal",
    "nnUNetTrainerDiceCESoftAdapt",
    "nnUNetTrainerDiceCECoV",
)
RW_PAPER_DICE_TRAINERS = (
    "nnUNetTrainerRRWDiceEqual",
    "nnUNetTrainerRRWDiceGradual",
    "nnUNetTrainerRWBoundaryDiceEqual",
    "nnUNetTrainerRWBoundaryDiceGradual",
    "nnUNetTrainerRRWDiceEqualAdam1e3",
    "nnUNetTrainerRWBoundaryDiceGradualAdam1e3",
)


def tiny_plans() -> tuple[dict, dict]:
    """Plans and dataset.json enough for nnU-Net to construct a trainer (2d: batch Dice, 3d_fullres: per sample)."""
    configuration = {
        "data_identifier": "nnUNetPlans", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
        "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities_kwargs": {},
    }

    def architecture(strides: list) -> dict:
        return {"network_class_name": "unused", "arch_kwargs": {"strides": strides}, "_kw_requires_import": []}

    plans = {
        "dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": [8, 32, 32],
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
        "configurations": {
            "2d": {**configuration, "patch_size": [32, 32], "spacing": [1.0, 1.0], "median_image_size_in_voxels": [32, 32], "batch_dice": True,
                   "architecture": architecture([[1, 1], [2, 2], [2, 2]])},
            "3d_fullres": {**configuration, "patch_size": [8, 32, 32], "spacing": [1.0, 1.0, 1.0], "median_image_size_in_voxels": [8, 32, 32], "batch_dice": False,
                           "architecture": architecture([[1, 1, 1], [1, 2, 2], [2, 2, 2]])},
        },
    }
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 2, "file_ending": ".nii.gz"}
    return plans, dataset_json


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    from nnunet_losses.nnunet.preflight import find_trainer_class

    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path))
    plans, dataset_json = tiny_plans()

    def make(name: str, configuration: str):
        return find_trainer_class(name)({**plans, "continue_training": False}, configuration, 0, dataset_json, torch.device("cpu"))

    return make


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_trainers_without_a_prescribed_dice_use_nnunets_dice_as_nnunet_builds_it(make_trainer, configuration):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_losses.nnunet.nnunet_dice import NnUNetDiceLoss

    for name in NNUNET_DICE_TRAINERS:
        trainer = make_trainer(name, configuration)
        dice = trainer.loss_terms()["dice"]
        native = nnUNetTrainer._build_loss(trainer).loss.dc  # the Dice of nnU-Net's own loss for this trainer
        assert type(dice) is NnUNetDiceLoss and type(dice.dice) is type(native), name
        settings = ("batch_dice", "do_bg", "smooth", "ddp", "apply_nonlin")
        assert {k: getattr(dice.dice, k) for k in settings} == {k: getattr(native, k) for k in settings}, name
        assert dice.dice.batch_dice is (configuration == "2d")
    for name in RW_PAPER_DICE_TRAINERS:
        dice = make_trainer(name, configuration).loss_terms()["dice"]
        assert type(dice) is L.SoftDiceLoss and dice.include_background and not dice.batch_dice, name

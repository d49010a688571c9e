"""Losses against analytic gradients, the RW paper's propositions and hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from nnunet_losses.losses import (
    AsymmetricFBetaLoss,
    BoundaryLoss,
    CentroidDistanceLoss,
    CommonSupportBoundaryLoss,
    CommonSupportDiceLoss,
    CompositeLoss,
    CrossEntropyLoss,
    FocalLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    OneSidedHausdorffLoss,
    RRWWeightedCrossEntropyLoss,
    RegionWiseLoss,
    SoftDiceLoss,
    TverskyLoss,
    common_support_mask,
    region_wise_loss,
)
from nnunet_losses.losses import inputs
from nnunet_losses.maps import rrw_compact, rrw_map, rw_gradient, signed_distance_map
from nnunet_losses.maps.reference import scipy_signed_distance_map


def blob_target(batch: int, shape: tuple[int, ...], num_classes: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(batch):
        fields = np.stack([gaussian_filter(rng.standard_normal(shape), 2.0) for _ in range(num_classes)])
        labels.append(fields.argmax(0))
    return torch.from_numpy(np.stack(labels)[:, None]).long()


def maps_for(target: torch.Tensor, num_classes: int, spacing=None) -> dict[str, torch.Tensor]:
    labels = target[:, 0].numpy()
    return {
        "rrw": torch.from_numpy(np.stack([rrw_compact(l, num_classes, spacing) for l in labels])),
        "signed_distance": torch.from_numpy(np.stack([signed_distance_map(l, num_classes, spacing) for l in labels])),
    }


def maps_read_by(loss, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The maps of ``maps`` that ``loss`` reads (a loss refuses maps it does not read)."""
    return {name: maps[name] for name in loss.required_maps}


def logits_for_probs(probs: np.ndarray) -> torch.Tensor:
    """Logits whose softmax is exactly ``probs`` (B, C, *spatial)."""
    return torch.log(torch.tensor(probs, dtype=torch.float64))


ALL_LOSSES = [
    RegionWiseLoss("rrw"),
    RegionWiseLoss("rw_boundary"),
    RegionWiseLoss("rw_boundary", kervadec_shift=True),
    RegionWiseLoss("ac"),
    RegionWiseLoss("cao"),
    RegionWiseLoss("class_emphasis_rrw", class_weights=[1.0, 2.0, 3.0]),
    BoundaryLoss(),
    OneSidedHausdorffLoss(),
    SoftDiceLoss(),
    SoftDiceLoss(include_background=True, batch_dice=True),
    GeneralizedDiceLoss(),
    TverskyLoss(),
    FocalTverskyLoss(),
    AsymmetricFBetaLoss(),
    CrossEntropyLoss(),
    CrossEntropyLoss(class_weights=[0.2, 1.0, 2.0]),
    RRWWeightedCrossEntropyLoss(),
    FocalLoss(),
    CommonSupportDiceLoss(),
    CommonSupportBoundaryLoss(),
    CentroidDistanceLoss(),
]


# --- region-wise loss: gradient and the paper's propositions -----------------------------------------------


def test_rw_autograd_equals_analytic_gradient_eq2():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    region_wise_loss(logits, z).backward()
    s = torch.softmax(logits.detach(), 1).numpy()
    analytic = np.stack([rw_gradient(z[b].numpy(), s[b]) for b in range(2)]) / z.numel()
    np.testing.assert_allclose(logits.grad.numpy(), analytic, rtol=1e-10, atol=1e-14)


def test_rw_gradcheck():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (1, 1, 4, 5))
    maps = maps_for(target, 3)
    loss = RegionWiseLoss("rrw")
    assert torch.autograd.gradcheck(lambda x: loss(x, target, rrw=maps["rrw"].double()), (logits,))


def test_rw_with_ac_map_equals_active_contour_loss():
    """Prop. 1: RW with z = 1 - g is the AC loss without its length term (binary)."""
    target = blob_target(2, (20, 24), 2, 0)
    logits = torch.randn(2, 2, 20, 24, dtype=torch.float64)
    u = torch.softmax(logits, 1)[:, 1]  # predicted foreground
    v = target[:, 0].double()  # ground-truth foreground
    ac_region = (u * (1 - v) ** 2 + (1 - u) * v**2).sum() / (2 * 2 * 20 * 24)  # mean over B*C*N as RW
    assert RegionWiseLoss("ac")(logits, target).item() == pytest.approx(ac_region.item(), rel=1e-12)


def test_rw_with_rw_boundary_map_equals_boundary_loss():
    """Prop. 2: RW with the RW-Boundary map is Kervadec's boundary loss (scipy reference map)."""
    target = blob_target(2, (8, 20, 20), 3, 1)
    spacing = (4.0, 1.5, 1.5)
    reference = np.stack([scipy_signed_distance_map(t, 3, spacing) for t in target[:, 0].numpy()]).astype(np.float64)
    logits = torch.randn(2, 3, 8, 20, 20, dtype=torch.float64)
    s = torch.softmax(logits, 1).numpy()
    boundary = np.einsum("bkxyz,bkxyz->", s, reference) / reference.size
    maps = maps_for(target, 3, spacing)
    rw = RegionWiseLoss("rw_boundary")(logits, target, signed_distance=maps["signed_distance"])
    bl = BoundaryLoss()(logits, target, signed_distance=maps["signed_distance"])
    assert rw.item() == pytest.approx(boundary, rel=1e-5)
    assert bl.item() == pytest.approx(boundary, rel=1e-5)


def test_boundary_loss_foreground_classes_and_shift():
    target = blob_target(1, (16, 16), 3, 2)
    maps = maps_for(target, 3)
    logits = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    s = torch.softmax(logits, 1)
    phi = maps["signed_distance"].double()
    expected = (s[:, [1, 2]] * phi[:, [1, 2]]).mean()
    assert BoundaryLoss(include_background=False)(logits, target, signed_distance=phi).item() == pytest.approx(expected.item())
    g = F.one_hot(target[:, 0], 3).permute(0, 3, 1, 2).double()
    shifted = (s * (phi + g)).mean()
    assert BoundaryLoss(kervadec_shift=True)(logits, target, signed_distance=phi).item() == pytest.approx(shifted.item())


def test_one_sided_hausdorff_is_rw_with_squared_error():
    """Prop. 3: mean((s - g)^2 D^2) with D the unsigned boundary distance."""
    target = blob_target(2, (18, 18), 2, 3)
    maps = maps_for(target, 2, (1.0, 2.0))
    logits = torch.randn(2, 2, 18, 18, dtype=torch.float64)
    s = torch.softmax(logits, 1)
    g = F.one_hot(target[:, 0], 2).permute(0, 3, 1, 2).double()
    d = maps["signed_distance"].double().abs()
    expected = ((s - g) ** 2 * d**2).mean()
    assert OneSidedHausdorffLoss()(logits, target, signed_distance=maps["signed_distance"]).item() == pytest.approx(expected.item())


def test_rrw_loss_from_compact_equals_full_map():
    target = blob_target(2, (6, 16, 16), 4, 4)
    logits = torch.randn(2, 4, 6, 16, 16, dtype=torch.float64)
    full = torch.from_numpy(np.stack([rrw_map(t, 4) for t in target[:, 0].numpy()]))
    compact = maps_for(target, 4)["rrw"]
    assert RegionWiseLoss("rrw")(logits, target, rrw=compact).item() == pytest.approx(region_wise_loss(logits, full).item())


def test_class_emphasis_and_cao_maps():
    target = torch.tensor([[[[0, 1], [2, 1]]]])
    logits = torch.zeros(1, 3, 2, 2, dtype=torch.float64)  # uniform softmax 1/3
    rrw = torch.tensor([[[[-1.0, -0.5], [-1.0, -1.0]]]], dtype=torch.float64)
    weights = [1.0, 2.0, 4.0]
    # per voxel: w_y * (v + 2) / 3, z = v at the true class and 1 at the two others
    per_voxel = [1.0 * (-1.0 + 2), 2.0 * (-0.5 + 2), 4.0 * (-1.0 + 2), 2.0 * (-1.0 + 2)]
    expected = sum(per_voxel) / 3 / 12
    loss = RegionWiseLoss("class_emphasis_rrw", class_weights=weights)(logits, target, rrw=rrw)
    assert loss.item() == pytest.approx(expected)
    assert RegionWiseLoss("cao")(logits, target).item() == pytest.approx((4 * (1 + 1 - 1) / 3) / 12)


# --- region-based losses: hand-computed values -------------------------------------------------------------


def two_pixel_case():
    """Two voxels, two classes: target (0, 1), prediction softmax (0.2/0.8, 0.6/0.4)."""
    probs = np.array([[[[0.2, 0.6]], [[0.8, 0.4]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[[0, 1]]]])
    return logits_for_probs(probs), target


def test_soft_dice_hand_value():
    logits, target = two_pixel_case()
    # foreground: TP = 0.4, FP = 0.8, FN = 0.6 -> 0.8 / 2.2; background: TP = 0.2, FP = 0.6, FN = 0.8 -> 0.4 / 1.8
    fg, bg = 0.8 / 2.2, 0.4 / 1.8
    assert SoftDiceLoss(smooth=0)(logits, target).item() == pytest.approx(1 - fg)
    assert SoftDiceLoss(include_background=True, smooth=0)(logits, target).item() == pytest.approx(1 - (fg + bg) / 2)


def test_tversky_family_hand_values():
    logits, target = two_pixel_case()
    tp, fp, fn = 0.4, 0.8, 0.6
    ti = tp / (tp + 0.3 * fp + 0.7 * fn)
    assert TverskyLoss(smooth=0)(logits, target).item() == pytest.approx(1 - ti)
    assert FocalTverskyLoss(smooth=0)(logits, target).item() == pytest.approx((1 - ti) ** 0.75)
    f = (1 + 2.25) * tp / ((1 + 2.25) * tp + 2.25 * fn + fp)
    assert AsymmetricFBetaLoss(smooth=0)(logits, target).item() == pytest.approx(1 - f)
    assert TverskyLoss(0.5, 0.5)(logits, target).item() == pytest.approx(SoftDiceLoss()(logits, target).item())


def test_generalized_dice_hand_value():
    logits, target = two_pixel_case()
    # w_bg = w_fg = 1 (one voxel each); numerator 0.2 + 0.4; denominator (1 + .04 + .36) + (1 + .64 + .16)
    expected = 1 - 2 * 0.6 / (1.4 + 1.8)
    assert GeneralizedDiceLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_generalized_dice_weights_and_empty_class():
    probs = np.array([[[[0.7, 0.1, 0.1]], [[0.2, 0.8, 0.1]], [[0.1, 0.1, 0.8]]]])  # (1, 3, 1, 3)
    target = torch.tensor([[[[0, 1, 1]]]])  # class 2 absent
    logits = logits_for_probs(probs)
    w = np.array([1.0, 1 / 4, 1 / 4])  # class 2 gets the largest finite weight... of the present classes: 1.0
    w[2] = w[:2].max()
    t = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=float)
    p = probs[0, :, 0]
    expected = 1 - 2 * np.sum(w * (t * p).sum(1)) / np.sum(w * (t**2 + p**2).sum(1))
    assert GeneralizedDiceLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)


# --- distribution-based losses -----------------------------------------------------------------------------


def test_cross_entropy_matches_torch():
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 1, 5, 6))
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(F.cross_entropy(logits, target[:, 0]).item(), rel=1e-6)
    weights = [0.2, 1.0, 2.0]
    expected = F.cross_entropy(logits, target[:, 0], weight=torch.tensor(weights))
    assert CrossEntropyLoss(class_weights=weights)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cross_entropy_with_ignore_mask_matches_torch_ignore_index():
    torch.manual_seed(4)
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 4, (2, 1, 5, 6))  # 3 = ignore label, outside the 3 classes
    mask = target != 3
    expected = F.cross_entropy(logits, target[:, 0], ignore_index=3)
    assert CrossEntropyLoss()(logits, target, mask=mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss():
    torch.manual_seed(5)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 1, 4, 4))
    assert FocalLoss(gamma=0)(logits, target).item() == pytest.approx(CrossEntropyLoss()(logits, target).item())
    p = torch.softmax(logits, 1).gather(1, target)
    expected = (-(1 - p) ** 2 * torch.log(p)).mean()
    assert FocalLoss()(logits, target).item() == pytest.approx(expected.item())


def test_rrw_weighted_cross_entropy():
    torch.manual_seed(6)
    target = blob_target(2, (12, 12), 3, 5)
    maps = maps_for(target, 3)
    logits = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    ce = -torch.log_softmax(logits, 1).gather(1, target)
    expected = ((1 + maps["rrw"].double().abs()) * ce).mean()
    assert RRWWeightedCrossEntropyLoss()(logits, target, rrw=maps["rrw"]).item() == pytest.approx(expected.item())


# --- temporal-loss terms -----------------------------------------------------------------------------------


def test_common_support_mask_by_hand():
    # 2D (H=3, W=4); class 1 in target at columns 0, 1; predicted at columns 1, 2
    target = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    t = F.one_hot(target, 2).permute(0, 3, 1, 2).float()
    p = F.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    m = common_support_mask(t, p, line_axis=-2)
    np.testing.assert_array_equal(m[0, 1].numpy(), np.tile([0, 1, 0, 0], (3, 1)))
    np.testing.assert_array_equal(m[0, 0].numpy(), np.ones((3, 4)))
    rows = common_support_mask(t, p, line_axis=-1)
    np.testing.assert_array_equal(rows[0, 1].numpy(), np.array([[1] * 4, [0] * 4, [0] * 4]))


def test_cdl_equals_gdl_on_full_support_and_boundary_term():
    target = torch.zeros(1, 1, 6, 5, dtype=torch.long)
    target[:, :, 2:4, :] = 1  # a band across every column
    probs = np.full((1, 2, 6, 5), 0.1)
    probs[:, 1, 2:4, :] = 0.9
    probs[:, 0] = 1 - probs[:, 1]
    logits = logits_for_probs(probs)
    assert CommonSupportDiceLoss()(logits, target).item() == pytest.approx(GeneralizedDiceLoss()(logits, target).item())
    maps = maps_for(target, 2)
    expected = (torch.tensor(probs) * maps["signed_distance"].double()).mean()
    assert CommonSupportBoundaryLoss()(logits, target, signed_distance=maps["signed_distance"]).item() == pytest.approx(
        expected.item()
    )


def test_cdl_ignores_columns_outside_the_support():
    target = torch.zeros(1, 1, 6, 6, dtype=torch.long)
    target[:, :, 2:4, :3] = 1  # annotated on the left half only
    probs = np.full((1, 2, 6, 6), 0.1)
    probs[:, 1, 2:4, :] = 0.9  # predicted on every column
    probs[:, 0] = 1 - probs[:, 1]
    logits = logits_for_probs(probs)
    cdl = CommonSupportDiceLoss()(logits, target).item()
    gdl = GeneralizedDiceLoss()(logits, target).item()
    assert cdl < gdl  # the unannotated predicted band is not penalised


# --- centroid loss -----------------------------------------------------------------------------------------


def test_centroid_loss_hand_built_case():
    """3D target: two 1-voxel laminae; prediction: one of them shifted by 3 voxels along x."""
    shape = (6, 10, 12)
    target = torch.zeros(1, 1, *shape, dtype=torch.long)
    target[0, 0, 2, 3, 2] = 1
    target[0, 0, 2, 3, 9] = 1
    pred = np.zeros(shape, dtype=bool)
    pred[2, 3, 5] = True  # one component, between the two
    probs = np.where(pred, 0.9, 0.1)[None, None]
    probs = np.concatenate([1 - probs, probs], axis=1)
    logits = logits_for_probs(probs)
    loss = CentroidDistanceLoss(projection_axes=(0, 1), smooth=0.0)
    # projections along z and along y: each shows gamma at x=2 and x=9 (same row), phi at x=5 -> d = (3 + 4)/2
    l_d = 3.5 + 3.5
    l_n = 1 + 1
    s = probs[0, 1]
    g = target[0, 0].numpy()
    dice = 1 - 2 * (s * g).sum() / (s.sum() + g.sum())
    assert loss(logits, target).item() == pytest.approx(dice * l_d * l_n, rel=1e-6)
    d, n = loss.scale_factors(g.astype(bool), pred)
    assert (d, n) == (pytest.approx(7.0), 2.0)


def test_centroid_loss_undefined_cases_keep_a_signal():
    loss = CentroidDistanceLoss()
    target = np.zeros((4, 8, 8), dtype=bool)
    target[1, 2, 2] = True
    empty = np.zeros_like(target)
    d_missed, n_missed = loss.scale_factors(target, empty)
    diagonal_z = math.hypot(8, 8)  # projection along axis 0 is 8x8
    diagonal_y = math.hypot(4, 8)  # projection along axis 1 is 4x8
    assert d_missed == pytest.approx(diagonal_z + diagonal_y)
    assert n_missed == 2
    d_fp, _ = loss.scale_factors(empty, target)
    assert d_fp == pytest.approx(diagonal_z + diagonal_y)
    assert loss.scale_factors(empty, empty) == (1.0, 1.0)  # floor: falls back to Dice
    assert loss.scale_factors(target, target) == (1.0, 1.0)
    # gradient flows through Dice even when the centroids coincide
    logits = torch.zeros(1, 2, 4, 8, 8, requires_grad=True)
    t = torch.from_numpy(target.astype(np.int64))[None, None]
    loss(logits, t).backward()
    assert logits.grad.abs().sum() > 0


# --- shared behaviour of every loss ------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda l: type(l).__name__)
def test_finite_with_empty_and_full_classes(loss):
    for target in (torch.zeros(2, 1, 4, 6, 6, dtype=torch.long), torch.full((2, 1, 4, 6, 6), 2, dtype=torch.long)):
        logits = torch.randn(2, 3, 4, 6, 6, requires_grad=True)
        value = loss(logits, target, **maps_read_by(loss, maps_for(target, 3)))
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda l: type(l).__name__)
def test_float32_under_autocast(loss):
    target = blob_target(2, (4, 8, 8), 3, 7)
    maps = maps_for(target, 3)
    logits = torch.randn(2, 3, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits.bfloat16(), target, **maps_read_by(loss, maps))
    assert value.dtype == torch.float32
    reference = loss(logits.bfloat16().float(), target, **maps_read_by(loss, maps))
    assert value.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda l: type(l).__name__)
def test_masked_voxels_do_not_count(loss):
    target = blob_target(2, (4, 8, 8), 3, 8)
    maps = maps_for(target, 3)
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[:, :, :, :2] = False
    logits = torch.randn(2, 3, 4, 8, 8)
    base = loss(logits, target, mask=mask, **maps_read_by(loss, maps))
    changed_logits = logits.clone()
    changed_logits[:, :, :, :2] = torch.randn(2, 3, 4, 2, 8) * 5
    changed_target = target.clone()
    changed_target[:, :, :, :2] = 3  # an ignore label outside the classes
    again = loss(changed_logits, changed_target, mask=mask, **maps_read_by(loss, maps))
    if isinstance(loss, (CommonSupportDiceLoss, CommonSupportBoundaryLoss, CentroidDistanceLoss)):
        # their line masks / components look at whole columns; only check the ignore label is accepted
        assert torch.isfinite(again)
    else:
        assert again.item() == pytest.approx(base.item(), rel=1e-5, abs=1e-7)


def test_composite_uses_schedule_weights_and_records_values():
    class Schedule:
        weights = {"dice": 0.25, "rrw": 2.0}

    target = blob_target(1, (10, 10), 3, 9)
    maps = maps_for(target, 3)
    logits = torch.randn(1, 3, 10, 10)
    dice, rw = SoftDiceLoss(), RegionWiseLoss("rrw")
    composite = CompositeLoss({"dice": dice, "rrw": rw}, Schedule())
    assert composite.required_maps == ("rrw",)
    total = composite(logits, target, rrw=maps["rrw"])
    d, r = dice(logits, target).item(), rw(logits, target, rrw=maps["rrw"]).item()
    assert total.item() == pytest.approx(0.25 * d + 2.0 * r, rel=1e-6)
    assert composite.last_values["dice"].item() == pytest.approx(d)
    with pytest.raises(ValueError, match="weights are given"):
        CompositeLoss({"dice": dice}, {"ce": 1.0})(logits, target)


def test_invalid_inputs_have_clear_errors(monkeypatch):
    monkeypatch.setattr(inputs, "_CHECKED_SIGNATURES", set())  # value errors name the values on a new input signature
    logits = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 3\)"):
        CrossEntropyLoss()(logits, torch.full((2, 1, 4, 4), 3))
    with pytest.raises(ValueError, match="target must have shape"):
        CrossEntropyLoss()(logits, torch.zeros(2, 1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class labels"):
        CrossEntropyLoss()(logits, torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="needs the 'rrw' map"):
        RegionWiseLoss("rrw")(logits, torch.zeros(2, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="map 'signed_distance' must have shape"):
        BoundaryLoss()(logits, torch.zeros(2, 4, 4, dtype=torch.long), signed_distance=torch.zeros(2, 1, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        SoftDiceLoss()(torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="at least 2 channels"):
        SoftDiceLoss()(torch.randn(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="unknown RW map"):
        RegionWiseLoss("hd")
    with pytest.raises(ValueError, match="class_weights are required"):
        RegionWiseLoss("class_emphasis_rrw")

"""Maps against SciPy references, the papers' definitions and the defined edge cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt, gaussian_filter

from nnunet_losses.maps import (
    ac_map,
    boundary_distance_map,
    cao_map,
    class_emphasis_rrw_map,
    compute_map,
    compute_maps,
    distance_to_class,
    expand_rrw,
    is_rectified,
    negative_component_counts,
    own_class_distance,
    rectification_violations,
    rrw_compact,
    rrw_map,
    rw_gradient,
    signed_distance_map,
    simplex_fraction_multiple_negative,
    simplex_grid,
)
from nnunet_losses.maps.reference import scipy_rrw_map, scipy_signed_distance_map
from nnunet_losses.synthetic import cardiac_case


def blob_labels(shape: tuple[int, ...], num_classes: int, seed: int) -> np.ndarray:
    """Multi-label array of smooth random regions (every class present, none full)."""
    rng = np.random.default_rng(seed)
    fields = np.stack([gaussian_filter(rng.standard_normal(shape), 2.0) for _ in range(num_classes)])
    labels = fields.argmax(0)
    assert len(np.unique(labels)) == num_classes
    return labels


CASES = [
    ((40, 50), 3, (1.0, 1.0)),
    ((48, 40), 4, (0.7, 1.9)),
    ((12, 40, 36), 3, (5.0, 1.5, 1.5)),
    ((10, 30, 32), 4, (2.5, 0.8, 1.2)),
]


@pytest.mark.parametrize("shape,num_classes,spacing", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_signed_distance_matches_scipy(shape, num_classes, spacing, seed):
    labels = blob_labels(shape, num_classes, seed)
    ours = signed_distance_map(labels, num_classes, spacing)
    np.testing.assert_allclose(ours, scipy_signed_distance_map(labels, num_classes, spacing), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("shape,num_classes,spacing", CASES)
def test_kervadec_shift_matches_one_hot2dist(shape, num_classes, spacing):
    labels = blob_labels(shape, num_classes, 3)
    ours = signed_distance_map(labels, num_classes, spacing, kervadec_shift=True)
    np.testing.assert_allclose(ours, scipy_signed_distance_map(labels, num_classes, spacing, shift=1.0), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("shape,num_classes,spacing", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_rrw_matches_scipy(shape, num_classes, spacing, seed):
    labels = blob_labels(shape, num_classes, seed)
    np.testing.assert_allclose(rrw_map(labels, num_classes, spacing), scipy_rrw_map(labels, num_classes, spacing), atol=1e-4)


@pytest.mark.parametrize(
    "shape,box,spacing",
    [
        ((30, 40), (slice(10, 14), slice(5, 30)), (0.7, 1.9)),  # foreground inside the array
        ((30, 40), (slice(0, 6), slice(33, 40)), (1.0, 1.0)),  # foreground in a corner
        ((12, 40, 36), (slice(3, 9), slice(0, 40), slice(10, 20)), (5.0, 1.5, 1.5)),  # spans one axis
    ],
)
def test_distance_to_a_class_surrounding_a_small_box(shape, box, spacing):
    """The background around a compact foreground: its transform is computed on the padded box only."""
    rng = np.random.default_rng(0)
    labels = np.zeros(shape, dtype=np.int64)
    labels[box] = rng.integers(0, 3, size=labels[box].shape)  # holes of background inside the box
    expected = distance_transform_edt(labels != 0, sampling=spacing)
    np.testing.assert_allclose(distance_to_class(labels, 0, spacing), expected, atol=1e-4)
    np.testing.assert_allclose(distance_to_class(labels, 2, spacing), distance_transform_edt(labels != 2, sampling=spacing), atol=1e-4)


def test_cardiac_case_maps_match_scipy():
    """A realistic case: small foreground in a large background, anisotropic spacing."""
    _, labels, _ = cardiac_case(seed=3, shape=(10, 96, 96), spacing=(8.0, 1.5, 1.5))
    spacing = (8.0, 1.5, 1.5)
    np.testing.assert_allclose(signed_distance_map(labels, 4, spacing), scipy_signed_distance_map(labels, 4, spacing), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(rrw_map(labels, 4, spacing), scipy_rrw_map(labels, 4, spacing), atol=1e-4)


def test_noisy_labels_match_scipy():
    labels = np.random.default_rng(5).integers(0, 4, size=(8, 20, 24))
    spacing = (3.0, 1.0, 0.5)
    np.testing.assert_allclose(rrw_map(labels, 4, spacing), scipy_rrw_map(labels, 4, spacing), atol=1e-4)
    np.testing.assert_allclose(signed_distance_map(labels, 4, spacing), scipy_signed_distance_map(labels, 4, spacing), atol=1e-4)


def test_hand_computed_rrw_and_signed_distance():
    labels = np.zeros((5, 7), dtype=np.int64)
    labels[1:4, 1:6] = 1  # 3x5 block: inner distances 1 on its rim, 2 in its centre row
    rrw = rrw_map(labels, 2, spacing=(1.0, 1.0))
    np.testing.assert_allclose(rrw[1, 2, 1:6], [-0.5, -1.0, -1.0, -1.0, -0.5])
    np.testing.assert_allclose(rrw[1, 0], np.ones(7))
    np.testing.assert_allclose(rrw[0, 0, 0], -1.0)  # background corner is farthest from the block
    sd = signed_distance_map(labels, 2, spacing=(2.0, 1.0))
    assert sd[1, 2, 3] == pytest.approx(-3.0)  # nearest background: 3 columns x 1 mm (2 rows x 2 mm is 4)
    assert sd[1, 0, 3] == pytest.approx(2.0)  # one row above the block, 2 mm
    assert sd[1, 2, 0] == pytest.approx(1.0)  # one column left of the block, 1 mm
    np.testing.assert_allclose(sd[0], -sd[1])  # two classes: one's inside distance is the other's outside distance


def test_empty_class_channels():
    labels = blob_labels((20, 20), 2, 0)  # classes 0 and 1; class 2 absent
    np.testing.assert_array_equal(rrw_map(labels, 3)[2], 1.0)
    np.testing.assert_array_equal(signed_distance_map(labels, 3)[2], 0.0)
    np.testing.assert_array_equal(boundary_distance_map(labels, 3)[2], 0.0)
    np.testing.assert_array_equal(ac_map(labels, 3)[2], 1.0)
    np.testing.assert_array_equal(cao_map(labels, 3)[2], 1.0)


def test_class_filling_the_array():
    labels = np.full((6, 7), 2)
    rrw = rrw_map(labels, 3)
    np.testing.assert_array_equal(rrw[2], -1.0)
    np.testing.assert_array_equal(rrw[:2], 1.0)
    np.testing.assert_array_equal(signed_distance_map(labels, 3), 0.0)
    assert is_rectified(rrw, labels)


def test_all_background_case():
    labels = np.zeros((4, 6, 6), dtype=np.int64)
    rrw = rrw_map(labels, 4, spacing=(5.0, 1.5, 1.5))
    np.testing.assert_array_equal(rrw[0], -1.0)
    np.testing.assert_array_equal(rrw[1:], 1.0)
    np.testing.assert_array_equal(signed_distance_map(labels, 4, (5.0, 1.5, 1.5)), 0.0)
    np.testing.assert_array_equal(ac_map(labels, 4)[0], 0.0)


def test_single_voxel_class():
    labels = np.zeros((5, 5, 5), dtype=np.int64)
    labels[2, 2, 2] = 1
    spacing = (3.0, 1.5, 1.5)
    assert rrw_map(labels, 2, spacing)[1, 2, 2, 2] == pytest.approx(-1.0)
    sd = signed_distance_map(labels, 2, spacing)
    assert sd[1, 2, 2, 2] == pytest.approx(-1.5)  # nearest other class: one in-plane step
    assert sd[1, 2, 2, 4] == pytest.approx(3.0)
    assert sd[1, 0, 2, 2] == pytest.approx(6.0)


def test_compact_rrw_roundtrip_and_range():
    labels = blob_labels((10, 30, 30), 4, 2)
    compact = rrw_compact(labels, 4, (4.0, 1.0, 1.0))
    assert compact.shape == (1, 10, 30, 30)
    assert compact.max() < 0 and compact.min() == pytest.approx(-1.0)
    np.testing.assert_array_equal(expand_rrw(compact, labels, 4), rrw_map(labels, 4, (4.0, 1.0, 1.0)))


def test_boundary_distance_is_unsigned_distance():
    labels = blob_labels((30, 30), 3, 4)
    d = boundary_distance_map(labels, 3, (1.0, 2.0))
    ref = np.abs(scipy_signed_distance_map(labels, 3, (1.0, 2.0)))
    np.testing.assert_allclose(d, ref, atol=1e-4)
    assert d.min() >= 0


def test_ac_and_cao_maps():
    labels = np.array([[0, 1], [2, 1]])
    np.testing.assert_array_equal(ac_map(labels, 3)[:, 0, 1], [1, 0, 1])
    np.testing.assert_array_equal(cao_map(labels, 3)[:, 1, 0], [1, 1, -1])
    np.testing.assert_array_equal(ac_map(labels, 3), (cao_map(labels, 3) + 1) / 2)  # zero-one normalised Cao


def test_per_slice_maps_equal_slice_by_slice():
    labels = blob_labels((5, 24, 24), 3, 7)
    spacing = (6.0, 1.2, 0.9)
    per_slice = compute_map("rrw", labels, 3, spacing, per_slice=True)
    for z in range(5):
        np.testing.assert_array_equal(per_slice[:, z], rrw_compact(labels[z], 3, spacing[1:]))
    whole = compute_map("signed_distance", labels, 3, spacing)
    np.testing.assert_array_equal(whole, signed_distance_map(labels, 3, spacing))


@pytest.mark.parametrize("per_slice", [False, True])
def test_maps_computed_together_equal_maps_computed_alone(per_slice):
    """compute_maps shares one own-class EDT between the kinds; each map must equal its lone computation."""
    labels = blob_labels((5, 24, 24), 4, 3)
    spacing = (6.0, 1.2, 0.9)
    together = compute_maps(["rrw", "signed_distance"], labels, 4, spacing, per_slice=per_slice)
    for kind in ("rrw", "signed_distance"):
        np.testing.assert_array_equal(together[kind], compute_map(kind, labels, 4, spacing, per_slice=per_slice))
    np.testing.assert_allclose(together["signed_distance"], scipy_signed_distance_map(labels, 4, spacing) if not per_slice
                               else np.stack([scipy_signed_distance_map(s, 4, spacing[1:]) for s in labels], axis=1), atol=1e-4)


def test_a_given_own_class_distance_is_used_and_left_unchanged():
    labels = blob_labels((30, 28), 3, 4)
    own = own_class_distance(labels, (1.0, 2.0))
    kept = own.copy()
    np.testing.assert_array_equal(rrw_compact(labels, 3, (1.0, 2.0), own_distance=own), rrw_compact(labels, 3, (1.0, 2.0)))
    np.testing.assert_array_equal(
        signed_distance_map(labels, 3, (1.0, 2.0), kervadec_shift=True, own_distance=own),
        signed_distance_map(labels, 3, (1.0, 2.0), kervadec_shift=True),
    )
    np.testing.assert_array_equal(own, kept)
    with pytest.raises(ValueError, match="own_distance has shape"):
        rrw_compact(labels, 3, own_distance=own[:-1])


def test_rectification_of_each_map():
    labels = blob_labels((12, 24, 24), 4, 0)
    spacing = (5.0, 1.5, 1.5)
    assert is_rectified(rrw_map(labels, 4, spacing), labels)
    assert is_rectified(class_emphasis_rrw_map(labels, 4, [1.0, 3.0, 2.0, 0.5], spacing), labels)
    assert is_rectified(ac_map(labels, 4), labels)
    assert is_rectified(cao_map(labels, 4), labels)
    assert not is_rectified(signed_distance_map(labels, 4, spacing), labels)
    per_channel = rrw_map(labels, 4, spacing) * np.array([1.0, 3.0, 2.0, 0.5])[:, None, None, None]
    assert rectification_violations(per_channel, labels).mean() > 0.5


def test_class_emphasis_scales_whole_vector():
    labels = blob_labels((20, 20), 3, 1)
    weights = [1.0, 4.0, 0.5]
    emphasised = class_emphasis_rrw_map(labels, 3, weights)
    expected = rrw_map(labels, 3) * np.asarray(weights)[labels][None]
    np.testing.assert_allclose(emphasised, expected)
    with pytest.raises(ValueError, match="positive"):
        class_emphasis_rrw_map(labels, 3, [1.0, 0.0, 1.0])


@pytest.mark.parametrize("num_classes", [3, 4])
def test_rrw_has_one_negative_gradient_component_on_simplex(num_classes):
    labels = blob_labels((16, 40, 40), num_classes, 3)
    spacing = (5.0, 1.5, 1.5)
    steps = 40 if num_classes == 3 else 24
    rrw_vectors = rrw_map(labels, num_classes, spacing).reshape(num_classes, -1).T
    rng = np.random.default_rng(0)
    sample = rrw_vectors[rng.choice(len(rrw_vectors), 200, replace=False)]
    assert np.all(simplex_fraction_multiple_negative(sample, steps) == 0.0)
    # and exactly one: the true class is the only negative component everywhere
    points = simplex_grid(num_classes, steps)
    z = sample[0]
    gradient = points * (z - points @ z[:, None])
    np.testing.assert_array_equal(np.sum(gradient < 0, axis=1), 1)
    assert np.all(gradient[:, np.argmin(z)] < 0)


@pytest.mark.parametrize("num_classes", [3, 4])
def test_rw_boundary_has_multiple_negative_components(num_classes):
    labels = blob_labels((16, 40, 40), num_classes, 3)
    vectors = signed_distance_map(labels, num_classes, (5.0, 1.5, 1.5)).reshape(num_classes, -1).T
    fractions = simplex_fraction_multiple_negative(vectors[::97], 24)
    assert fractions.max() > 0.2
    assert np.mean(fractions > 0) > 0.5


def test_negative_component_counts_at_uniform_prediction():
    labels = blob_labels((30, 30), 3, 6)
    uniform = np.full((3, 30, 30), 1.0 / 3.0)
    assert np.all(negative_component_counts(rrw_map(labels, 3), uniform) == 1)
    assert np.any(negative_component_counts(signed_distance_map(labels, 3), uniform) > 1)
    grad = rw_gradient(rrw_map(labels, 3), uniform)
    np.testing.assert_allclose(grad.sum(0), 0.0, atol=1e-12)  # softmax Jacobian rows sum to zero


def test_simplex_grid_is_open_simplex():
    points = simplex_grid(4, 10)
    assert np.all(points > 0)
    np.testing.assert_allclose(points.sum(1), 1.0)
    assert len(points) == 84  # compositions of 10 into 4 positive parts: C(9, 3)


def test_invalid_inputs_are_rejected():
    labels = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="integer"):
        rrw_map(labels.astype(float), 2)
    with pytest.raises(ValueError, match="num_classes"):
        rrw_map(labels + 3, 2)
    with pytest.raises(ValueError, match="spacing"):
        signed_distance_map(labels, 2, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="2D or 3D"):
        rrw_map(np.zeros(5, dtype=np.int64), 2)
    with pytest.raises(ValueError, match="unknown map kind"):
        compute_map("nope", labels, 2)
    with pytest.raises(ValueError, match="positive"):
        signed_distance_map(labels, 2, spacing=(1.0, 0.0))

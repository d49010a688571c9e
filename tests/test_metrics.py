from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from nnunet_losses.metrics import (
    PermutationResult,
    assd,
    centroid_distance,
    component_centroids,
    component_count,
    component_count_difference,
    d_3d,
    dice,
    dice_per_class,
    ecdf_at,
    empirical_cdf,
    hausdorff,
    hausdorff95,
    image_diagonal,
    one_mask_empty,
    paired_permutation_test,
    paired_t_test_one_tailed,
    surface_metrics,
)


def _square(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


# --- Dice -------------------------------------------------------------------------------


def test_dice_known_overlap():
    pred = np.zeros((4, 4), bool)
    gt = np.zeros((4, 4), bool)
    pred[0, :4] = True
    gt[0, 1:4] = True
    gt[1, 0:3] = True
    assert dice(pred, gt) == pytest.approx(2 * 3 / (4 + 6))


def test_dice_edge_cases():
    empty = np.zeros((3, 3), bool)
    full = np.ones((3, 3), bool)
    assert math.isnan(dice(empty, empty))
    assert dice(full, empty) == 0.0
    assert dice(empty, full) == 0.0
    assert dice(full, full) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        dice(empty, np.zeros((3, 4), bool))


def test_dice_per_class():
    gt = np.array([[0, 1, 1, 2], [0, 1, 2, 2]])
    pred = np.array([[0, 1, 2, 2], [0, 1, 1, 2]])
    scores = dice_per_class(pred, gt, classes=[1, 2, 3])
    assert scores[1] == pytest.approx(2 * 2 / 6)
    assert scores[2] == pytest.approx(2 * 2 / 6)
    assert math.isnan(scores[3])


# --- surface distances -------------------------------------------------------------------


@pytest.mark.parametrize(
    "spacing, expected",
    [
        # rows move 2 voxels: pred -> gt distances {0 x6, 0.5 x2, 1.0, 2.0 x2, 4.0 x5}, both ways
        ((2.0, 0.5), {"hausdorff": 4.0, "hausdorff95": 4.0, "assd": 52 / 32}),
        # same masks, axes' spacing swapped: {0 x6, 0.5 x2, 1.0 x8} both ways
        ((0.5, 2.0), {"hausdorff": 1.0, "hausdorff95": 1.0, "assd": 18 / 32}),
    ],
)
def test_shifted_squares_anisotropic(spacing, expected):
    gt = _square((20, 20), (5, 10), (5, 10))
    pred = _square((20, 20), (7, 12), (5, 10))
    result = surface_metrics(pred, gt, spacing)
    assert result == pytest.approx(expected)
    assert hausdorff(pred, gt, spacing) == pytest.approx(expected["hausdorff"])
    assert hausdorff95(pred, gt, spacing) == pytest.approx(expected["hausdorff95"])
    assert assd(pred, gt, spacing) == pytest.approx(expected["assd"])
    assert surface_metrics(gt, pred, spacing) == pytest.approx(expected)


def test_hd95_is_max_of_directed_percentiles():
    gt = _square((20, 20), (5, 10), (5, 10))
    pred = gt.copy()
    pred[15, 15] = True
    far = math.sqrt((6 * 2.0) ** 2 + (6 * 0.5) ** 2)  # to gt corner (9, 9)
    result = surface_metrics(pred, gt, (2.0, 0.5))
    assert result["hausdorff"] == pytest.approx(far)
    # pred -> gt holds 16 zeros and `far`; numpy's linear 95th percentile is at index 15.2
    assert result["hausdorff95"] == pytest.approx(0.2 * far)
    assert result["assd"] == pytest.approx(far / 33)


def test_shifted_cubes_3d():
    gt = np.zeros((8, 8, 8), bool)
    pred = np.zeros((8, 8, 8), bool)
    gt[2:5, 2:5, 2:5] = True
    pred[3:6, 2:5, 2:5] = True
    result = surface_metrics(pred, gt, (3.0, 1.0, 1.0))
    # each direction: 26 boundary voxels, 16 at 0, one at 1.0 (a centre against a face
    # neighbour), 9 at 3.0 (a whole face one slice of 3 mm away)
    assert result == pytest.approx({"hausdorff": 3.0, "hausdorff95": 3.0, "assd": 56 / 52})


def test_single_voxels():
    a = np.zeros((6, 8), bool)
    b = np.zeros((6, 8), bool)
    a[2, 2] = True
    b[2, 5] = True
    assert surface_metrics(a, b, (1.0, 0.7)) == pytest.approx(
        {"hausdorff": 2.1, "hausdorff95": 2.1, "assd": 2.1}
    )
    assert surface_metrics(a, a, (1.0, 0.7)) == {"hausdorff": 0.0, "hausdorff95": 0.0, "assd": 0.0}


def test_single_voxel_against_square():
    square = _square((7, 7), (2, 5), (2, 5))
    centre = np.zeros((7, 7), bool)
    centre[3, 3] = True
    result = surface_metrics(centre, square, (1.0, 1.0))
    root2 = math.sqrt(2.0)
    assert result["hausdorff"] == pytest.approx(root2)
    assert result["hausdorff95"] == pytest.approx(root2)
    assert result["assd"] == pytest.approx((1.0 + 4 * 1.0 + 4 * root2) / 9)


def test_boundary_uses_face_neighbours():
    plus = np.zeros((5, 5), bool)
    plus[2, 1:4] = True
    plus[1:4, 2] = True
    centre = np.zeros((5, 5), bool)
    centre[2, 2] = True
    # the plus's centre has all four face neighbours inside, so its boundary is the four arms
    result = surface_metrics(centre, plus, (2.0, 1.0))
    assert result == pytest.approx({"hausdorff": 2.0, "hausdorff95": 2.0, "assd": (1.0 + 1.0 + 1.0 + 2.0 + 2.0) / 5})


def test_array_edge_counts_as_outside():
    full = np.ones((5, 5), bool)
    inner = _square((5, 5), (1, 4), (1, 4))
    result = surface_metrics(inner, full, (1.0, 1.0))
    root2 = math.sqrt(2.0)
    assert result["hausdorff"] == pytest.approx(root2)
    assert result["assd"] == pytest.approx((8 * 1.0 + 12 * 1.0 + 4 * root2) / 24)


def test_surface_empty_cases_take_the_image_diagonal_when_one_mask_is_empty():
    empty = np.zeros((10, 20), bool)
    mask = _square((10, 20), (2, 5), (3, 9))
    diagonal = math.sqrt(20.0**2 + 20.0**2)  # 10 x 20 voxels at (2, 1) mm: a 20 mm x 20 mm image
    assert image_diagonal((10, 20), (2.0, 1.0)) == pytest.approx(diagonal, rel=1e-15)
    assert image_diagonal((4, 3, 2), (1.0, 2.0, 3.0)) == pytest.approx(math.sqrt(16 + 36 + 36), rel=1e-15)
    assert surface_metrics(empty, empty, (2.0, 1.0)) == {"hausdorff": 0.0, "hausdorff95": 0.0, "assd": 0.0}
    assert not one_mask_empty(empty, empty) and not one_mask_empty(mask, mask)
    for pred, gt in ((empty, mask), (mask, empty)):
        assert one_mask_empty(pred, gt)
        assert surface_metrics(pred, gt, (2.0, 1.0)) == pytest.approx({"hausdorff": diagonal, "hausdorff95": diagonal, "assd": diagonal}, rel=1e-15)
        assert hausdorff(pred, gt, (2.0, 1.0)) == hausdorff95(pred, gt, (2.0, 1.0)) == assd(pred, gt, (2.0, 1.0)) == pytest.approx(diagonal, rel=1e-15)


def test_surface_validation():
    mask = _square((5, 5), (1, 3), (1, 3))
    with pytest.raises(ValueError, match="same shape"):
        hausdorff(mask, np.zeros((5, 6), bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="one entry per array axis"):
        hausdorff(mask, mask, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        assd(mask, mask, (1.0, -1.0))


# --- centroids ---------------------------------------------------------------------------


def test_component_centroids_2d():
    mask = np.zeros((10, 10), bool)
    mask[1:3, 1:3] = True
    mask[5, 5] = mask[5, 6] = mask[6, 5] = True
    mask[8, 0] = True
    expected = np.array([[1.5, 1.5], [16 / 3, 16 / 3], [8.0, 0.0]])
    np.testing.assert_allclose(component_centroids(mask), expected)
    np.testing.assert_allclose(component_centroids(mask, spacing=(2.0, 0.5)), expected * [2.0, 0.5])
    assert component_count(mask) == 3


def test_component_centroids_3d():
    mask = np.zeros((8, 8, 8), bool)
    mask[0:2, 0:2, 0:2] = True
    mask[5, 5, 2:5] = True
    np.testing.assert_allclose(component_centroids(mask), [[0.5, 0.5, 0.5], [5.0, 5.0, 3.0]])
    np.testing.assert_allclose(
        component_centroids(mask, spacing=(1.0, 2.0, 3.0)), [[0.5, 1.0, 1.5], [5.0, 10.0, 9.0]]
    )
    assert component_centroids(np.zeros((4, 4, 4), bool)).shape == (0, 3)


def test_connectivity():
    diagonal_2d = np.eye(2, dtype=bool)
    assert component_count(diagonal_2d) == 1
    assert component_count(diagonal_2d, connectivity=4) == 2
    np.testing.assert_allclose(component_centroids(diagonal_2d), [[0.5, 0.5]])
    corner_3d = np.zeros((2, 2, 2), bool)
    corner_3d[0, 0, 0] = corner_3d[1, 1, 1] = True
    assert [component_count(corner_3d, c) for c in (None, 26, 18, 6)] == [1, 1, 2, 2]
    edge_3d = np.zeros((2, 2, 2), bool)
    edge_3d[0, 0, 0] = edge_3d[1, 1, 0] = True
    assert [component_count(edge_3d, c) for c in (18, 6)] == [1, 2]
    with pytest.raises(ValueError, match="connectivity"):
        component_centroids(diagonal_2d, connectivity=26)
    with pytest.raises(ValueError, match="connectivity"):
        component_centroids(corner_3d, connectivity=8)
    with pytest.raises(ValueError, match="2D or 3D"):
        component_centroids(np.zeros((2, 2, 2, 2), bool))


def test_centroid_distance():
    gt = np.array([[0.0, 0.0], [10.0, 0.0]])
    pred = np.array([[0.0, 3.0], [10.0, 4.0], [100.0, 100.0]])
    assert centroid_distance(gt, pred) == pytest.approx(3.5)
    assert centroid_distance(pred, gt) == pytest.approx((3.0 + 4.0 + math.hypot(90.0, 100.0)) / 3)
    empty = np.empty((0, 2))
    assert centroid_distance(empty, empty) == 0.0
    assert math.isnan(centroid_distance(gt, empty))
    assert math.isnan(centroid_distance(empty, pred))
    with pytest.raises(ValueError, match="same k"):
        centroid_distance(gt, np.zeros((1, 3)))


def _two_cube_case():
    gt = np.zeros((24, 16, 16), bool)
    pred = np.zeros((24, 16, 16), bool)
    gt[0:3, 0:3, 0:3] = True  # centroid (1, 1, 1)
    gt[10:13, 10:13, 10:13] = True  # centroid (11, 11, 11)
    pred[0:3, 4:7, 0:3] = True  # centroid (1, 5, 1)
    pred[10:13, 10:13, 13:16] = True  # centroid (11, 11, 14)
    pred[20:22, 0:2, 0:2] = True  # false positive, nearest to neither
    return pred, gt


def test_d_3d_and_delta():
    pred, gt = _two_cube_case()
    assert d_3d(pred, gt) == pytest.approx((4.0 + 3.0) / 2)
    assert d_3d(pred, gt, spacing=(1.0, 2.0, 1.0)) == pytest.approx((8.0 + 3.0) / 2)
    assert component_count_difference(pred, gt) == 1
    assert component_count_difference(gt, pred) == 1


def test_d_3d_empty_cases():
    pred, gt = _two_cube_case()
    empty = np.zeros_like(gt)
    assert d_3d(empty, empty) == 0.0
    assert math.isnan(d_3d(empty, gt))
    assert math.isnan(d_3d(pred, empty))
    assert component_count_difference(empty, empty) == 0
    assert component_count_difference(empty, gt) == 2
    with pytest.raises(ValueError, match="same shape"):
        d_3d(pred, gt[:-1])


# --- statistics --------------------------------------------------------------------------


def scipy_paired_permutation(a: np.ndarray, b: np.ndarray, **options):
    """SciPy's paired (sign-flip) permutation test of |mean(a - b)|, the reference."""
    return stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.abs(np.mean(x - y, axis=axis)),
        permutation_type="samples",
        vectorized=True,
        alternative="greater",
        n_resamples=10000,
        **options,
    )


def test_permutation_all_equal_differences():
    result = paired_permutation_test([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0])
    # only the all-plus and all-minus patterns reach |mean| = 1: p = 2 / 16
    assert result == PermutationResult(statistic=1.0, p_value=0.125, n_permutations=16, exact=True, n_dropped=0)


def test_permutation_exact_matches_brute_force_and_scipy():
    a = np.array([0.81, 0.77, 0.90, 0.62, 0.85, 0.70, 0.88, 0.79])
    b = np.array([0.78, 0.79, 0.84, 0.60, 0.80, 0.72, 0.83, 0.70])
    d = a - b
    observed = abs(d.mean())
    hits = sum(
        abs(np.mean(np.array(signs) * d)) >= observed - 1e-12
        for signs in itertools.product((-1.0, 1.0), repeat=d.size)
    )
    result = paired_permutation_test(a, b)
    assert result.exact and result.n_permutations == 256
    assert result.statistic == pytest.approx(observed)
    assert result.p_value == pytest.approx(hits / 256)
    reference = scipy_paired_permutation(a, b)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert 0.0 < result.p_value < 0.2


def test_permutation_monte_carlo_matches_scipy():
    rng = np.random.default_rng(3)
    b = rng.normal(0.80, 0.05, size=30)
    a = b + rng.normal(0.012, 0.03, size=30)
    result = paired_permutation_test(a, b, n_permutations=10000, seed=1)
    reference = scipy_paired_permutation(a, b, random_state=2)
    assert not result.exact and result.n_permutations == 10000
    assert result.statistic == pytest.approx(abs(np.mean(a - b)))
    standard_error = math.sqrt(reference.pvalue * (1 - reference.pvalue) / 10000)
    assert 0.005 < reference.pvalue < 0.5
    assert abs(result.p_value - reference.pvalue) < 5 * math.sqrt(2) * standard_error
    assert paired_permutation_test(a, b, seed=1) == result


def test_permutation_p_value_bounds():
    a = np.arange(30, dtype=float) + 10.0
    b = np.arange(30, dtype=float)
    strong = paired_permutation_test(a, b, n_permutations=1000)
    assert strong.p_value == pytest.approx(1 / 1001)
    identical = paired_permutation_test(b, b, n_permutations=1000)
    assert identical.statistic == 0.0 and identical.p_value == 1.0
    assert paired_permutation_test(b[:5], b[:5]).p_value == 1.0


def test_permutation_drops_nan_pairs():
    a = np.array([2.0, np.nan, 3.0, 4.0, 5.0])
    b = np.array([1.0, 0.0, 2.0, np.nan, 4.0])
    result = paired_permutation_test(a, b)
    assert result.n_dropped == 2
    # remaining differences [1, 1, 1]: p = 2 / 8
    assert result.p_value == pytest.approx(0.25)
    assert result.n_permutations == 8


def test_permutation_validation():
    with pytest.raises(ValueError, match="equal length"):
        paired_permutation_test([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_permutation_test([1.0, np.nan], [0.0, 1.0])
    with pytest.raises(ValueError, match="n_permutations"):
        paired_permutation_test([1.0, 2.0], [0.0, 1.0], n_permutations=0)


def test_t_test_against_hand_formula():
    a = np.array([3.0, 5.0, 7.0, 9.0])
    b = np.array([2.0, 3.0, 4.0, 5.0])  # d = [1, 2, 3, 4]: mean 2.5, s_d = sqrt(5/3)
    t = math.sqrt(15.0)
    # Student t with 3 df: F(t) = 1/2 + (u / (1 + u^2) + atan(u)) / pi with u = t / sqrt(3)
    u = t / math.sqrt(3.0)
    p_greater = 0.5 - (u / (1 + u * u) + math.atan(u)) / math.pi
    greater = paired_t_test_one_tailed(a, b, alternative="greater")
    assert greater.statistic == pytest.approx(t)
    assert greater.p_value == pytest.approx(p_greater)
    assert greater.p_value == pytest.approx(0.015233, abs=1e-6)
    assert greater.df == 3 and greater.n_dropped == 0
    less = paired_t_test_one_tailed(a, b, alternative="less")
    assert less.p_value == pytest.approx(1 - p_greater)
    flipped = paired_t_test_one_tailed(b, a, alternative="less")
    assert flipped.statistic == pytest.approx(-t)
    assert flipped.p_value == pytest.approx(p_greater)


def test_t_test_validation_and_nan():
    result = paired_t_test_one_tailed([3.0, 5.0, np.nan, 7.0, 9.0], [2.0, 3.0, 1.0, 4.0, 5.0])
    assert result.df == 3 and result.n_dropped == 1
    assert result.statistic == pytest.approx(math.sqrt(15.0))
    with pytest.raises(ValueError, match="alternative"):
        paired_t_test_one_tailed([1.0, 2.0], [0.0, 0.0], alternative="two-sided")
    with pytest.raises(ValueError, match="equal length"):
        paired_t_test_one_tailed([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_t_test_one_tailed([1.0], [0.0])


# --- ECDF --------------------------------------------------------------------------------


def test_empirical_cdf():
    x, f = empirical_cdf([0.9, 0.5, 0.7, 0.5])
    np.testing.assert_allclose(x, [0.5, 0.7, 0.9])
    np.testing.assert_allclose(f, [0.5, 0.75, 1.0])
    values = ecdf_at([0.9, 0.5, 0.7, 0.5], [0.4, 0.5, 0.6, 0.9, 1.0])
    np.testing.assert_allclose(values, [0.0, 0.5, 0.5, 1.0, 1.0])
    assert float(ecdf_at([0.9, 0.5, 0.7, 0.5], 0.75)) == 0.75
    assert math.isnan(float(ecdf_at([0.5], np.nan)))


def test_empirical_cdf_rejects_nan_and_empty():
    with pytest.raises(ValueError, match="2 NaN"):
        empirical_cdf([0.5, np.nan, 0.7, np.nan])
    with pytest.raises(ValueError, match="1 NaN"):
        ecdf_at([np.nan, 0.3], 0.5)
    with pytest.raises(ValueError, match="at least one"):
        empirical_cdf([])

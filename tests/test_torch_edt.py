"""The PyTorch EDT against SciPy's ``distance_transform_edt`` with ``sampling``."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from nnunet_losses.maps import distance_to_feature


def scipy_distances(feature: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Reference: SciPy per mask; ``inf`` for a mask without feature voxels."""
    out = np.full(feature.shape, np.inf)
    for m, (mask, sampling) in enumerate(zip(feature, spacing)):
        if mask.any():
            out[m] = distance_transform_edt(~mask, sampling=sampling)
    return out


def random_masks(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Masks of varied density, then one without feature, one all feature and one single voxel."""
    density = rng.choice([0.002, 0.02, 0.2, 0.6], size=shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    feature = rng.random(shape) < density
    feature[0] = False
    feature[1] = True
    feature[2] = False
    feature[2][tuple(rng.integers(0, n) for n in shape[1:])] = True
    return feature


@pytest.mark.parametrize("min_plus", ["fused", "chunked"])
@pytest.mark.parametrize(
    "shape",
    [(8, 23, 31), (7, 40, 9), (6, 9, 11, 13), (5, 15, 6, 8), (5, 6, 7, 17)],
    ids=["2d", "2d-long-first", "3d", "3d-long-first", "3d-long-last"],
)
def test_matches_scipy_with_per_mask_anisotropic_spacing(shape: tuple[int, ...], min_plus: str) -> None:
    rng = np.random.default_rng(sum(shape))
    feature = random_masks(rng, shape)
    spacing = rng.uniform(0.3, 5.0, size=(shape[0], len(shape) - 1))
    result = distance_to_feature(torch.from_numpy(feature), torch.from_numpy(spacing), min_plus)
    assert result.dtype == torch.float32 and result.shape == shape
    expected = scipy_distances(feature, spacing)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-4, atol=0)
    assert np.isinf(result[0].numpy()).all()
    assert (result[1].numpy() == 0).all()


def test_fused_equals_chunked_in_any_chunking() -> None:
    rng = np.random.default_rng(3)
    feature = torch.from_numpy(rng.random((4, 12, 10, 14)) < 0.05)
    spacing = torch.tensor([[1.0, 2.0, 0.5], [3.0, 1.0, 1.0], [0.7, 0.7, 0.7], [2.5, 1.5, 1.0]])
    fused = distance_to_feature(feature, spacing, "fused")
    for chunk_elements in (1 << 24, 2000, 1):
        torch.testing.assert_close(distance_to_feature(feature, spacing, "chunked", chunk_elements), fused, rtol=0, atol=0)
    np.testing.assert_allclose(fused.numpy(), scipy_distances(feature.numpy(), spacing.numpy()), rtol=1e-4)


def test_fused_min_plus_is_one_kernel_without_the_lines_by_n_by_n_temporary() -> None:
    """Inductor's code for the fused pass allocates only its (L, n) output: the broadcast lives inside the reduction."""
    from torch._inductor.utils import run_and_get_code

    from nnunet_losses.maps.torch_edt import _min_plus_lines

    lines, line_spacing = torch.rand(37, 19), torch.rand(37) + 0.5
    torch._dynamo.reset()
    result, (code,) = run_and_get_code(torch.compile(_min_plus_lines, dynamic=True, fullgraph=True), lines, line_spacing)
    torch.testing.assert_close(result, _min_plus_lines(lines, line_spacing), rtol=0, atol=0)
    allocations = re.findall(r"empty_strided_\w+\(\(([^)]*)\)", code)
    assert len(allocations) == 1 and allocations[0].count(",") == 1, allocations  # one 2D buffer: the output


def test_float_mask_and_empty_batch() -> None:
    feature = torch.zeros(2, 5, 6)
    feature[0, 2, 3] = 1.0
    feature[1, 0, 0] = 1.0
    spacing = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    expected = scipy_distances(feature.numpy() > 0, spacing.numpy())
    np.testing.assert_allclose(distance_to_feature(feature, spacing).numpy(), expected, rtol=1e-4)
    assert distance_to_feature(torch.zeros(0, 4, 4, dtype=torch.bool), torch.ones(0, 2)).shape == (0, 4, 4)


@pytest.mark.parametrize(
    ("feature", "spacing", "message"),
    [
        (torch.zeros(2, 4), torch.ones(2, 1), "2 or 3 non-empty spatial axes"),
        (torch.zeros(2, 4, 4, 4, 4), torch.ones(2, 4), "2 or 3 non-empty spatial axes"),
        (torch.zeros(2, 0, 4), torch.ones(2, 2), "2 or 3 non-empty spatial axes"),
        (torch.zeros(2, 4, 4), torch.ones(2, 3), r"shape \(N, ndim\)"),
        (torch.zeros(2, 4, 4), torch.ones(3, 2), r"shape \(N, ndim\)"),
        (torch.zeros(2, 4, 4), torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "positive and finite"),
        (torch.zeros(2, 4, 4), torch.tensor([[1.0, -2.0], [1.0, 1.0]]), "positive and finite"),
        (torch.zeros(2, 4, 4), torch.tensor([[1.0, float("nan")], [1.0, 1.0]]), "positive and finite"),
    ],
)
def test_invalid_input_is_a_clear_error(feature: torch.Tensor, spacing: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        distance_to_feature(feature, spacing)


def test_unknown_min_plus_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="min_plus must be 'fused' or 'chunked'"):
        distance_to_feature(torch.ones(1, 3, 3, dtype=torch.bool), torch.ones(1, 2), "pairs")

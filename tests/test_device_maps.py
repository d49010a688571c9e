"""``device_map_stack`` against ``compute_map_stack`` applied to each sample with its spacing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_losses.maps import device_map_stack, distance_to_feature
from nnunet_losses.nnunet.map_layout import compute_map_stack
from nnunet_losses.synthetic import cardiac_case

KINDS = ("rrw", "signed_distance")
NUM_CLASSES = 4


def assert_matches_per_sample(segmentation: np.ndarray, spacing: np.ndarray, ignore_label: int | None,
                              kinds: tuple[str, ...] = KINDS, dtype: torch.dtype = torch.float32) -> None:
    """``device_map_stack`` of the batch equals ``compute_map_stack`` of every sample."""
    result = device_map_stack(torch.from_numpy(segmentation).to(dtype), kinds, NUM_CLASSES, ignore_label, torch.from_numpy(spacing))
    assert list(result) == list(kinds)
    for b in range(segmentation.shape[0]):
        expected = compute_map_stack(segmentation[b, 0], kinds, NUM_CLASSES, ignore_label, spacing[b])
        for kind in kinds:
            assert result[kind].dtype == torch.float32
            assert result[kind].shape[0] == segmentation.shape[0] and result[kind].shape[1:] == expected[kind].shape
            np.testing.assert_allclose(result[kind][b].numpy(), expected[kind], rtol=1e-4, atol=1e-6, err_msg=f"{kind}, sample {b}")


def edge_case_batch(rng: np.random.Generator, labels: np.ndarray, ignore_label: int | None) -> np.ndarray:
    """(B, 1, *spatial) nnU-Net targets: phantom samples, then the edge cases (needs B >= 6).

    Sample 1 lacks class 1 and has ``-1`` outside a crop; 2 is filled by class 2; 3 is
    background with single voxels of classes 1 and 3; 4 is all ``-1``; 5 carries scattered
    ignore voxels (or ``-1`` without an ignore label).
    """
    segmentation = labels[:, None].astype(np.int16)
    spatial = segmentation.shape[2:]
    one = segmentation[1, 0]
    one[one == 1] = 0
    one[..., : spatial[-1] // 4] = -1
    segmentation[2] = 2
    segmentation[3] = 0
    segmentation[3, 0][tuple(n // 3 for n in spatial)] = 1
    segmentation[3, 0][tuple(n - 1 for n in spatial)] = 3
    segmentation[4] = -1
    scattered = rng.random(spatial) < 0.05
    segmentation[5, 0][scattered] = -1 if ignore_label is None else ignore_label
    return segmentation


@pytest.mark.parametrize("ignore_label", [None, 4], ids=["no-ignore", "ignore"])
def test_2d_batch_matches_per_sample(ignore_label: int | None) -> None:
    rng = np.random.default_rng(0)
    _, labels, _ = cardiac_case(seed=1, shape=(8, 48, 40), spacing=(5.0, 1.5, 1.5))
    segmentation = edge_case_batch(rng, labels, ignore_label)
    spacing = rng.uniform(0.5, 3.0, size=(8, 2))
    assert_matches_per_sample(segmentation, spacing, ignore_label)


@pytest.mark.parametrize("ignore_label", [None, 4], ids=["no-ignore", "ignore"])
def test_3d_batch_matches_per_sample(ignore_label: int | None) -> None:
    rng = np.random.default_rng(1)
    cases = [cardiac_case(seed=s, shape=(8, 32, 32), spacing=(5.0, 1.5, 1.5))[1][:, 4:28, 6:26] for s in range(6)]
    segmentation = edge_case_batch(rng, np.stack(cases), ignore_label)
    spacing = np.column_stack([rng.uniform(3.0, 8.0, 6), rng.uniform(0.5, 2.0, (6, 2))])
    assert_matches_per_sample(segmentation, spacing, ignore_label)


@pytest.mark.parametrize("kinds", [("rrw",), ("signed_distance",), ("signed_distance", "rrw")])
def test_each_kind_alone_and_in_any_order(kinds: tuple[str, ...]) -> None:
    _, labels, _ = cardiac_case(seed=2, shape=(6, 32, 32), spacing=(5.0, 1.5, 1.5))
    segmentation = edge_case_batch(np.random.default_rng(2), labels, 4)
    assert_matches_per_sample(segmentation, np.tile([1.25, 0.75], (6, 1)), 4, kinds, dtype=torch.int64)


def test_integer_target_is_not_modified() -> None:
    segmentation = torch.tensor([[[[-1, 0, 4], [1, 2, 3]]]])
    original = segmentation.clone()
    device_map_stack(segmentation, KINDS, NUM_CLASSES, 4, torch.ones(1, 2))
    assert torch.equal(segmentation, original)


def test_batch_of_single_class_samples() -> None:
    segmentation = np.stack([np.full((1, 6, 7), 3), np.full((1, 6, 7), -1)])
    assert_matches_per_sample(segmentation, np.ones((2, 2)), None)


@pytest.mark.parametrize(
    ("shape", "spacing", "kinds", "message"),
    [
        ((2, 8, 8), torch.ones(2, 2), KINDS, r"\(B, 1, \*spatial\)"),
        ((2, 2, 8, 8), torch.ones(2, 2), KINDS, r"\(B, 1, \*spatial\)"),
        ((2, 1, 8, 8), torch.ones(2, 3), KINDS, r"shape \(B, ndim\)"),
        ((2, 1, 8, 8, 8), torch.ones(1, 3), KINDS, r"shape \(B, ndim\)"),
        ((2, 1, 8, 8), torch.tensor([[1.0, 0.0], [1.0, 1.0]]), KINDS, "positive and finite"),
        ((2, 1, 8, 8), torch.tensor([[1.0, 1.0], [-1.0, 1.0]]), KINDS, "positive and finite"),
        ((2, 1, 8, 8), torch.ones(2, 2), ("rrw", "ac"), "unknown map kind"),
    ],
)
def test_invalid_input_is_a_clear_error(shape: tuple[int, ...], spacing: torch.Tensor, kinds: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        device_map_stack(torch.zeros(shape), kinds, NUM_CLASSES, None, spacing)


def test_label_out_of_range_is_a_clear_error() -> None:
    segmentation = torch.zeros(2, 1, 8, 8)
    segmentation[1, 0, 3, 3] = 4
    with pytest.raises(ValueError, match="label 4 found"):
        device_map_stack(segmentation, KINDS, NUM_CLASSES, None, torch.ones(2, 2))
    assert device_map_stack(segmentation, KINDS, NUM_CLASSES, 4, torch.ones(2, 2))["signed_distance"].shape == (2, 4, 8, 8)


def test_one_edt_per_present_class_of_a_multi_class_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Absent classes and single-class samples cost no EDT: masks go one per (sample, present class)."""
    from nnunet_losses.maps import device

    seen = []

    def recording(feature: torch.Tensor, spacing: torch.Tensor) -> torch.Tensor:
        seen.append((feature.clone(), spacing.clone()))
        return distance_to_feature(feature, spacing)

    monkeypatch.setattr(device, "distance_to_feature", recording)
    segmentation = torch.zeros(3, 1, 6, 8)
    segmentation[0, 0, 1, 1] = 3  # classes 0 and 3
    segmentation[1] = 2  # a single class
    segmentation[2, 0, :3] = 1  # classes 1 and 2
    segmentation[2, 0, 3:] = 2
    spacing = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    device_map_stack(segmentation, KINDS, NUM_CLASSES, None, spacing)
    (feature, mask_spacing), = seen
    expected = torch.stack([segmentation[0, 0] == 0, segmentation[0, 0] == 3, segmentation[2, 0] == 1, segmentation[2, 0] == 2])
    assert torch.equal(feature, expected)
    assert torch.equal(mask_spacing, spacing[[0, 0, 2, 2]])

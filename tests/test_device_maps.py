"""``device_map_stack`` against ``compute_map_stack`` applied to each sample with its spacing, for each transform."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_losses.maps import device_map_stack, distance_to_feature
from nnunet_losses.maps import compute_maps
from nnunet_losses.nnunet.map_layout import compute_map_stack
from nnunet_losses.synthetic import cardiac_case

KINDS = ("rrw", "signed_distance")
NUM_CLASSES = 4
TRANSFORMS = ("auto", "fused", "chunked")  # on CPU tensors "auto" is the edt package


def assert_matches_per_sample(segmentation: np.ndarray, spacing: np.ndarray, ignore_label: int | None,
                              kinds: tuple[str, ...] = KINDS, dtype: torch.dtype = torch.float32, transform: str = "auto") -> None:
    """``device_map_stack`` of the batch equals ``compute_map_stack`` of every sample."""
    result = device_map_stack(torch.from_numpy(segmentation).to(dtype), kinds, NUM_CLASSES, ignore_label, torch.from_numpy(spacing), transform)
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


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("ignore_label", [None, 4], ids=["no-ignore", "ignore"])
def test_2d_batch_matches_per_sample(ignore_label: int | None, transform: str) -> None:
    rng = np.random.default_rng(0)
    _, labels, _ = cardiac_case(seed=1, shape=(8, 48, 40), spacing=(5.0, 1.5, 1.5))
    segmentation = edge_case_batch(rng, labels, ignore_label)
    spacing = rng.uniform(0.5, 3.0, size=(8, 2))
    assert_matches_per_sample(segmentation, spacing, ignore_label, transform=transform)


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("ignore_label", [None, 4], ids=["no-ignore", "ignore"])
def test_3d_batch_matches_per_sample(ignore_label: int | None, transform: str) -> None:
    rng = np.random.default_rng(1)
    cases = [cardiac_case(seed=s, shape=(8, 32, 32), spacing=(5.0, 1.5, 1.5))[1][:, 4:28, 6:26] for s in range(6)]
    segmentation = edge_case_batch(rng, np.stack(cases), ignore_label)
    spacing = np.column_stack([rng.uniform(3.0, 8.0, 6), rng.uniform(0.5, 2.0, (6, 2))])
    assert_matches_per_sample(segmentation, spacing, ignore_label, transform=transform)


@pytest.mark.parametrize("transform", ["edt", "fused"])
@pytest.mark.parametrize("kinds", [("rrw",), ("signed_distance",), ("signed_distance", "rrw")])
def test_each_kind_alone_and_in_any_order(kinds: tuple[str, ...], transform: str) -> None:
    _, labels, _ = cardiac_case(seed=2, shape=(6, 32, 32), spacing=(5.0, 1.5, 1.5))
    segmentation = edge_case_batch(np.random.default_rng(2), labels, 4)
    assert_matches_per_sample(segmentation, np.tile([1.25, 0.75], (6, 1)), 4, kinds, dtype=torch.int64, transform=transform)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_integer_target_is_not_modified(transform: str) -> None:
    segmentation = torch.tensor([[[[-1, 0, 4], [1, 2, 3]]]])
    original = segmentation.clone()
    device_map_stack(segmentation, KINDS, NUM_CLASSES, 4, torch.ones(1, 2), transform)
    assert torch.equal(segmentation, original)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_batch_of_single_class_samples(transform: str) -> None:
    segmentation = np.stack([np.full((1, 6, 7), 3), np.full((1, 6, 7), -1)])
    assert_matches_per_sample(segmentation, np.ones((2, 2)), None, transform=transform)


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
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_invalid_input_is_a_clear_error(shape: tuple[int, ...], spacing: torch.Tensor, kinds: tuple[str, ...], message: str,
                                        transform: str) -> None:
    with pytest.raises(ValueError, match=message):
        device_map_stack(torch.zeros(shape), kinds, NUM_CLASSES, None, spacing, transform)


def test_unknown_transform_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="transform must be 'auto', 'edt', 'fused' or 'chunked'"):
        device_map_stack(torch.zeros(1, 1, 4, 4), KINDS, NUM_CLASSES, None, torch.ones(1, 2), "scipy")


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_label_out_of_range_is_a_clear_error(transform: str) -> None:
    segmentation = torch.zeros(2, 1, 8, 8)
    segmentation[1, 0, 3, 3] = 4
    with pytest.raises(ValueError, match="a label >= 4 found but num_classes=4 and ignore_label=None"):
        device_map_stack(segmentation, KINDS, NUM_CLASSES, None, torch.ones(2, 2), transform)
    assert device_map_stack(segmentation, KINDS, NUM_CLASSES, 4, torch.ones(2, 2), transform)["signed_distance"].shape == (2, 4, 8, 8)


def test_torch_path_transforms_every_sample_class_channel_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One EDT call for the batch: every (sample, class) mask, present or not, with its sample's spacing."""
    from nnunet_losses.maps import device

    seen = []

    def recording(feature: torch.Tensor, spacing: torch.Tensor, min_plus: str) -> torch.Tensor:
        seen.append((feature.clone(), spacing.clone(), min_plus))
        return distance_to_feature(feature, spacing, min_plus)

    monkeypatch.setattr(device, "distance_to_feature", recording)
    segmentation = torch.zeros(3, 1, 6, 8)
    segmentation[0, 0, 1, 1] = 3  # classes 0 and 3
    segmentation[1] = 2  # a single class
    segmentation[2, 0, :3] = 1  # classes 1 and 2
    segmentation[2, 0, 3:] = 2
    spacing = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    device_map_stack(segmentation, KINDS, NUM_CLASSES, None, spacing, "chunked")
    (feature, mask_spacing, min_plus), = seen
    expected = torch.stack([segmentation[b, 0] == k for b in range(3) for k in range(NUM_CLASSES)])
    assert torch.equal(feature, expected)
    assert torch.equal(mask_spacing, spacing.repeat_interleave(NUM_CLASSES, dim=0))
    assert min_plus == "chunked"


def test_cpu_tensors_use_the_edt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """``"auto"`` on CPU tensors never calls the PyTorch EDT; it calls ``compute_maps`` once per sample."""
    from nnunet_losses.maps import device

    def refuse(*args: object) -> None:
        raise AssertionError("the PyTorch EDT ran on CPU tensors")

    calls = []

    def recording(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        calls.append(args[1].shape)
        return compute_maps(*args, **kwargs)

    monkeypatch.setattr(device, "distance_to_feature", refuse)
    monkeypatch.setattr(device, "compute_maps", recording)
    _, labels, _ = cardiac_case(seed=4, shape=(3, 32, 36), spacing=(5.0, 1.5, 1.5))
    assert_matches_per_sample(labels[:, None], np.tile([1.5, 1.5], (3, 1)), None)
    assert calls == [(32, 36)] * 3


def test_torch_path_compiles_with_fullgraph_and_equals_eager() -> None:
    """``torch.compile(device_map_stack, fullgraph=True)`` on the PyTorch path: no graph break (hence no host
    synchronisation), the eager maps, and the label check still raises (a device-side assertion there)."""
    _, labels, _ = cardiac_case(seed=5, shape=(6, 32, 32), spacing=(5.0, 1.5, 1.5))
    segmentation = torch.from_numpy(edge_case_batch(np.random.default_rng(5), labels[:, 10:22, 11:21], 4)).float()
    spacing = torch.from_numpy(np.random.default_rng(6).uniform(0.5, 2.0, (6, 2))).float()
    torch._dynamo.reset()
    compiled = torch.compile(device_map_stack, fullgraph=True)
    result = compiled(segmentation, KINDS, NUM_CLASSES, 4, spacing, "fused")
    eager = device_map_stack(segmentation, KINDS, NUM_CLASSES, 4, spacing, "fused")
    for kind in KINDS:
        torch.testing.assert_close(result[kind], eager[kind], rtol=1e-5, atol=1e-6)
    segmentation[0, 0, 0, 0] = 5
    with pytest.raises(RuntimeError, match="a label >= 5 found"):
        compiled(segmentation, KINDS, NUM_CLASSES, 4, spacing, "fused")

"""The losses run without host synchronisation and compile with ``torch.compile(fullgraph=True)``.

``CentroidDistanceLoss`` is exempt from both, by definition: its connected components and
centroids are computed with numpy on the host (see its docstring).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nnunet_losses.losses import CentroidDistanceLoss, CompositeLoss, CrossEntropyLoss, inputs
from nnunet_losses.nnunet.nnunet_dice import NnUNetDiceLoss
from test_loss_api import LOSSES, pinned_batch
from test_losses import maps_read_by

# every loss of the package except the centroid loss (host connected components, see above)
SYNC_FREE = {name: factory for name, factory in LOSSES.items() if name != "centroid"}
SYNC_FREE["nnunet_dice"] = lambda: NnUNetDiceLoss(batch_dice=False)
SYNC_FREE["nnunet_dice_batch"] = lambda: NnUNetDiceLoss(batch_dice=True)
HOST_SYNCS = {"item", "tolist", "__bool__", "equal", "__int__", "__float__", "cpu", "numpy"}


class HostSyncRecorder(TorchFunctionMode):
    """Records the tensor methods that copy tensor data to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_SYNCS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def value_and_gradient(loss, logits, target, mask, maps):
    x = logits.clone().requires_grad_(True)
    value = loss(x, target, mask=mask, **maps)
    (gradient,) = torch.autograd.grad(value, x)
    return value.detach(), gradient


def assert_compiled_equals_eager(loss: nn.Module, kind: str, backend: str) -> None:
    torch._dynamo.reset()
    logits, target, mask, maps, _ = pinned_batch(kind)
    maps = maps_read_by(loss, maps)
    expected_value, expected_gradient = value_and_gradient(loss, logits, target, mask, maps)
    value, gradient = value_and_gradient(torch.compile(loss, fullgraph=True, backend=backend), logits, target, mask, maps)
    torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(SYNC_FREE))
def test_every_loss_compiles_fullgraph_with_the_eager_value_and_gradient(name):
    """Each loss is one graph (no graph break, so no host synchronisation in it) whose forward and backward,
    through AOT autograd, give the eager value and gradient. AOT autograd without inductor's code generation
    keeps this at about a second per loss on a CPU; inductor itself is exercised below."""
    assert_compiled_equals_eager(SYNC_FREE[name](), "2d", backend="aot_eager")


def test_a_trainer_composite_compiled_by_inductor_gives_the_eager_value_and_gradient():
    """nnU-Net's default compiler (inductor) on the terms of the package's trainers, 3d, sharing one prepared batch."""
    terms = {
        "dice": NnUNetDiceLoss(batch_dice=False),
        "rrw": SYNC_FREE["rw_rrw"](),
        "boundary": SYNC_FREE["boundary_fg"](),
        "ce": CrossEntropyLoss(),
    }
    assert_compiled_equals_eager(CompositeLoss(terms, {"dice": 1.0, "rrw": 0.5, "boundary": 0.1, "ce": 1.0}), "3d", backend="inductor")


@pytest.mark.parametrize("name", sorted(SYNC_FREE))
def test_forward_and_backward_do_not_copy_tensor_data_to_the_host(name):
    logits, target, mask, maps, _ = pinned_batch("2d")
    loss = SYNC_FREE[name]()
    target = target.float()  # as nnU-Net's: the integer check runs too
    loss(logits, target, mask=mask, **maps_read_by(loss, maps))  # the first call of a signature checks values on the host
    x = logits.clone().requires_grad_(True)
    with HostSyncRecorder() as recorder:
        loss(x, target, mask=mask, **maps_read_by(loss, maps)).backward()
        loss(x, target, mask=mask, **maps_read_by(loss, maps))
    assert recorder.calls == []


def test_the_recorder_sees_host_copies_and_the_centroid_loss_is_the_exempt_one():
    logits, target, mask, maps, _ = pinned_batch("3d")
    with HostSyncRecorder() as recorder:
        CentroidDistanceLoss()(logits, target, mask=mask)
    assert "cpu" in recorder.calls  # components on the host: exempt by definition
    with HostSyncRecorder() as recorder:
        torch.ones(2).sum().item()
        bool(torch.ones(1) > 0)
        torch.equal(torch.ones(2), torch.ones(2))
    assert recorder.calls == ["item", "__bool__", "equal"]


def test_value_checks_run_on_the_host_once_per_signature_then_on_the_device(monkeypatch):
    monkeypatch.setattr(inputs, "_CHECKED_SIGNATURES", set())
    logits = torch.randn(2, 3, 5, 5)
    good, bad = torch.zeros(2, 1, 5, 5, dtype=torch.long), torch.full((2, 1, 5, 5), 3)
    with pytest.raises(ValueError, match=r"found \[3, 3\]"):  # new signature: host check, names the values
        CrossEntropyLoss()(logits, bad)
    with HostSyncRecorder() as recorder:
        CrossEntropyLoss()(logits, good)  # still a new signature (the bad call did not pass)
    assert "tolist" in recorder.calls
    with HostSyncRecorder() as recorder:
        CrossEntropyLoss()(logits, good)
    assert recorder.calls == []
    with pytest.raises(RuntimeError, match=r"target labels must lie in \[0, 3\)"):  # device-side assertion
        CrossEntropyLoss()(logits, bad)
    with pytest.raises(ValueError, match="integer class labels"):  # a float target is a new signature
        CrossEntropyLoss()(logits, torch.full((2, 1, 5, 5), 0.5))
    CrossEntropyLoss()(logits, good.float())
    with pytest.raises(RuntimeError, match="integer class labels"):
        CrossEntropyLoss()(logits, torch.full((2, 1, 5, 5), 0.5))

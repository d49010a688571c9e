"""The module form shared by every loss: validate once, compute in float32."""
from __future__ import annotations

from torch import Tensor, nn

from .inputs import LossInput, float32_math


class SegmentationLoss(nn.Module):
    """Base class: ``loss(logits, target, mask=None, rrw=None, signed_distance=None)``.

    Subclasses implement :meth:`compute` on a prepared :class:`LossInput` and list the
    maps they need in :attr:`required_maps` (the nnU-Net integration loads exactly
    those). The result is a scalar tensor computed in float32 even under autocast.
    """

    required_maps: tuple[str, ...] = ()

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        mask: Tensor | None = None,
        rrw: Tensor | None = None,
        signed_distance: Tensor | None = None,
    ) -> Tensor:
        with float32_math(logits.device):
            batch = LossInput.prepare(logits, target, mask, {"rrw": rrw, "signed_distance": signed_distance})
            return self.compute(batch)

    def compute(self, batch: LossInput) -> Tensor:
        raise NotImplementedError

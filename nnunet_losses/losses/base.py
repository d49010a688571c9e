"""The module form shared by every loss: route the maps, validate once, compute in float32."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from .inputs import LossInput, Reduction, check_reduction, float32_math, missing_map_message


def evaluate(kernel: Callable[[LossInput], Tensor], logits: Tensor, target: Tensor, mask: Tensor | None = None, **maps: Tensor) -> Tensor:
    """``kernel`` on the prepared batch, in float32 also under autocast (the functional forms' body)."""
    with float32_math(logits.device):
        return kernel(LossInput.prepare(logits, target, mask, maps))


def routed_maps(owner: str, required: tuple[str, ...], maps: Mapping[str, Tensor | None]) -> dict[str, Tensor]:
    """The given (not ``None``) maps, which must be exactly ``required``: ``TypeError`` for a map ``owner`` does not read."""
    given = {name: value for name, value in maps.items() if value is not None}
    unread = sorted(set(given) - set(required))
    if unread:
        reads = f"it reads {list(required)}" if required else "it reads no maps"
        raise TypeError(f"{owner} does not read the map(s) {unread}; {reads}")
    for name in required:
        if name not in given:
            raise ValueError(missing_map_message(name))
    return given


class SegmentationLoss(nn.Module):
    """Base class: ``loss(logits, target, mask=None)``, plus keyword maps on the losses that read them.

    Subclasses implement :meth:`compute` on a prepared :class:`LossInput` and list the
    maps they read in :attr:`required_maps` (the nnU-Net integration loads exactly
    those); a loss that reads maps declares them as keyword-only arguments of its
    ``forward`` and passes them to :meth:`call_with_maps`. ``reduction`` (``docs/losses.md``):
    ``"mean"`` (a scalar), ``"none"`` (one value per sample, shape ``(B,)``, whose mean is
    ``"mean"``) or ``"sum"``; :attr:`pooled_over_batch` says why a loss refuses the last two.
    The result is computed in float32 even under autocast.

    Each loss's computation is one function of the prepared batch (e.g.
    :func:`~.overlap.tversky_family_loss`); :meth:`compute` calls it with the module's
    options and the loss's functional form (e.g. :func:`~.overlap.soft_dice_loss`) calls it
    through :func:`evaluate`, so module and functional form cannot drift apart.
    """

    required_maps: tuple[str, ...] = ()
    pooled_over_batch: str | None = None

    def __init__(self, reduction: Reduction = "mean", pooled_over_batch: str | None = None) -> None:
        super().__init__()
        if pooled_over_batch is not None:
            self.pooled_over_batch = pooled_over_batch
        self.reduction = check_reduction(reduction, self.pooled_over_batch)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.call_with_maps(logits, target, mask)

    def call_with_maps(self, logits: Tensor, target: Tensor, mask: Tensor | None = None, **maps: Tensor | None) -> Tensor:
        """:meth:`compute` on the prepared batch; ``maps`` must be exactly :attr:`required_maps`."""
        return evaluate(self.compute, logits, target, mask, **routed_maps(type(self).__name__, self.required_maps, maps))

    def compute(self, batch: LossInput) -> Tensor:
        raise NotImplementedError

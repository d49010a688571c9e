"""The module form shared by every loss: route the maps, validate once, compute in float32."""
from __future__ import annotations

import inspect
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

    Each loss's functional form (e.g. :func:`~.overlap.soft_dice_loss`) is made from the
    module by :func:`functional_form`, so the two cannot drift apart: same options, same
    checks, same values.
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


BASE_ONLY_OPTIONS = ("pooled_over_batch",)
"""Arguments of :meth:`SegmentationLoss.__init__` that subclasses set, never users."""


def functional_form(module: type[SegmentationLoss], name: str) -> Callable[..., Tensor]:
    """The functional form of a loss module, kornia style.

    ``name(logits, target, mask=None, *, <maps>, <options>)`` returns
    ``module(**options)(logits, target, mask, **maps)``: the maps are the keyword arguments
    of the module's ``forward`` (those it reads), the options those of its ``__init__``. The
    returned function carries that signature (``help``, ``inspect.signature``) and refuses an
    unknown keyword with a ``TypeError`` naming it.
    """
    options = [p for p in inspect.signature(module.__init__).parameters.values() if p.name != "self" and p.name not in BASE_ONLY_OPTIONS]
    calls = list(inspect.signature(module.forward).parameters.values())[1:]  # logits, target, mask, *maps
    option_names = {p.name for p in options}
    signature = inspect.Signature(
        [*calls[:3], *calls[3:], *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in options)],
        return_annotation=Tensor,
    )

    def loss(*arguments: object, **keywords: object) -> Tensor:
        bound = signature.bind(*arguments, **keywords)
        given = bound.arguments
        init = {key: value for key, value in given.items() if key in option_names}
        call = {key: value for key, value in given.items() if key not in option_names}
        return module(**init)(**call)

    loss.__signature__ = signature  # type: ignore[attr-defined]
    loss.__name__ = loss.__qualname__ = name
    loss.__module__ = module.__module__
    loss.__doc__ = f"Functional form of :class:`{module.__name__}`: ``{name}(logits, target, mask=None, **options)`` is ``{module.__name__}(**options)(logits, target, mask)``."
    return loss

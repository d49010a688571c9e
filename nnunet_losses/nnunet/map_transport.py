"""How maps travel with nnU-Net's target, from the augmentation to the loss: one object owns both ends.

nnU-Net's data loader keeps only ``image`` and ``segmentation`` of what the transforms
return and stacks them into ``batch["data"]`` and ``batch["target"]`` (one tensor per
deep-supervision scale; ``nnUNetDataLoader.generate_train_batch``), so maps cannot
travel under a key of their own. In the ``precomputed`` and ``on_the_fly`` modes they
travel as extra channels of the target: at every scale the transforms' last step
(:meth:`MapTransport.pack`) makes the sample's target ``(1 + C, *spatial)`` float32,
channel 0 nnU-Net's segmentation (label values, exact in float32), channels ``1..C``
the maps of the trainer's :class:`~.map_layout.MapLayout`. The target list keeps
nnU-Net's length, one entry per scale. :meth:`MapTransport.take`, in the trainer right
before nnU-Net's ``train_step``/``validation_step``, moves that target to the device
once, puts nnU-Net's segmentation back into ``batch["target"]`` in nnU-Net's dtype
(``int16``, what nnU-Net's data loader makes of the segmentation) and returns the maps
of every scale, on the device.

In the ``device`` mode nothing travels: :meth:`MapTransport.take` computes the maps on
the device from nnU-Net's final target of every scale (:func:`device_maps`).

nnU-Net's step functions call ``self.loss(output, target)`` with a target list they
rebuild, and read the plain target after the loss (pseudo Dice), so the maps reach the
loss beside that call, for exactly one step (:meth:`.loss_adapter.NnUNetLoss.carrying`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..maps.device import device_map_stack
from .map_layout import MapLayout

SEGMENTATION_DTYPE = torch.int16
"""nnU-Net's target dtype: its data loader crops the segmentation to int16 and its transforms keep it."""


@torch.no_grad()
def device_maps(
    segmentations: Sequence[Tensor],
    layout: MapLayout,
    spacing: Sequence[float],
    ignore_label: int | None,
    scales: Sequence[Sequence[float]],
) -> list[Tensor]:
    """The stacked maps of ``layout`` (``(B, channels, *spatial)``) of each scale's target, on its device.

    ``segmentations[i]`` is nnU-Net's ``(B, 1, *spatial)`` target of scale ``scales[i]``.
    Each map is computed on the patch as it is (:func:`nnunet_losses.maps.device.device_map_stack`,
    equal to :func:`.map_layout.compute_map_stack` per sample): RRW normalised by the
    patch's per-class maximum, as the RW reference code does; signed distances in mm of
    the spacing ``spacing / scale`` (a target voxel of scale ``f`` spans ``1 / f`` patch
    voxels; the convention of every map mode, see :mod:`.transforms`).
    """
    if len(segmentations) != len(scales):
        raise RuntimeError(f"{len(segmentations)} target scales but {len(scales)} deep-supervision scales")
    stacks = []
    for segmentation, scale in zip(segmentations, scales):
        patch_spacing = torch.tensor([s / f for s, f in zip(spacing, scale)], dtype=torch.float64)  # on the host: checked there, copied without a sync
        maps = device_map_stack(segmentation, layout.kinds, layout.num_classes, ignore_label, patch_spacing.expand(segmentation.shape[0], -1))
        stacks.append(torch.cat([maps[kind] for kind in layout.kinds], dim=1))
    return stacks


class MapTransport:
    """The maps of ``layout`` between nnU-Net's transforms and the loss, in ``mode`` (precomputed, on_the_fly, device).

    ``scales``: nnU-Net's deep-supervision scales (``None`` without deep supervision);
    ``spacing`` and ``ignore_label``: what the device mode computes the maps with.
    """

    def __init__(
        self, layout: MapLayout, mode: str, scales: Sequence[Sequence[float]] | None, spacing: Sequence[float], ignore_label: int | None
    ) -> None:
        self.layout = layout
        self.mode = mode
        self.scales = [list(s) for s in scales] if scales is not None else None
        self.spacing = tuple(float(s) for s in spacing)
        self.ignore_label = ignore_label

    @staticmethod
    def pack(segmentation: Tensor | list[Tensor], maps: Sequence[Tensor]) -> Tensor | list[Tensor]:
        """One sample's target with its maps as extra channels: a list per scale (deep supervision) or one tensor."""
        segs = list(segmentation) if isinstance(segmentation, (list, tuple)) else [segmentation]
        if len(segs) != len(maps):
            raise RuntimeError(f"{len(segs)} segmentation scales but {len(maps)} map scales")
        packed = [torch.cat([seg.float(), scale_maps.float()]) for seg, scale_maps in zip(segs, maps)]
        return packed if isinstance(segmentation, (list, tuple)) else packed[0]

    def take(self, batch: dict, device: torch.device) -> list[Tensor]:
        """Leave nnU-Net's own target in ``batch["target"]`` (on ``device``); return the maps of every scale on ``device``."""
        target = batch["target"]
        targets = [t.to(device, non_blocking=True) for t in (target if isinstance(target, list) else [target])]
        if self.mode == "device":
            scales = self.scales if self.scales is not None else [[1] * (targets[0].ndim - 2)]
            maps = device_maps(targets, self.layout, self.spacing, self.ignore_label, scales)
            segs = targets
        else:
            channels = 1 + self.layout.num_channels
            for t in targets:
                if t.shape[1] != channels:
                    raise RuntimeError(
                        f"the target has {t.shape[1]} channels, expected 1 segmentation + {self.layout.num_channels} map channels: "
                        "the trainer's map transforms did not run"
                    )
            segs = [t[:, :1].to(SEGMENTATION_DTYPE) for t in targets]
            maps = [t[:, 1:] for t in targets]
        batch["target"] = segs if isinstance(target, list) else segs[0]
        return maps

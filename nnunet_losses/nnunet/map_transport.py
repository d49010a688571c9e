"""How maps travel with nnU-Net's target, from the augmentation to the loss: one object owns both ends.

nnU-Net's data loader keeps only ``image`` and ``segmentation`` of what the transforms
return and stacks them into ``batch["data"]`` and ``batch["target"]`` (one tensor per
deep-supervision scale; ``nnUNetDataLoader.generate_train_batch``), so maps cannot
travel under a key of their own. They travel as extra channels of the target: channel 0
nnU-Net's segmentation (label values), channels ``1..C`` the maps of the trainer's
:class:`~.map_layout.MapLayout`, and the target list keeps nnU-Net's length.

* ``precomputed``: only the full-resolution target carries the maps, as float16
  (:attr:`MapTransport.target_dtype`: the precision of the stored signed distances, half
  the bytes to copy, pin and move to the device; labels up to 2048 are exact in it, larger
  ones switch the target to float32). The coarser targets stay nnU-Net's own: their maps
  are the voxels nnU-Net's ``DownsampleSegForDSTransform`` picks for the segmentation
  (:func:`downsample_like_segmentation`), taken on the device.
* ``on_the_fly``: the maps computed at every scale travel with the target of that scale,
  as float32 (:meth:`MapTransport.pack`).
* ``device``: nothing travels; :meth:`MapTransport.take` computes the maps on the device
  from nnU-Net's final target of every scale (:func:`device_maps`).

:meth:`MapTransport.take`, in the trainer right before nnU-Net's
``train_step``/``validation_step``, moves the target to the device once, puts nnU-Net's
segmentation back into ``batch["target"]`` in nnU-Net's dtype (``int16``, what nnU-Net's
data loader makes of the segmentation) and returns the float32 maps of every scale, on
the device.

nnU-Net's step functions call ``self.loss(output, target)`` with a target list they
rebuild, and read the plain target after the loss (pseudo Dice), so the maps reach the
loss beside that call, for exactly one step (:meth:`.loss_adapter.NnUNetLoss.carrying`).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.functional import interpolate

from ..maps.device import device_map_stack
from .map_layout import MapLayout

SEGMENTATION_DTYPE = torch.int16
"""nnU-Net's target dtype: its data loader crops the segmentation to int16 and its transforms keep it."""
LARGEST_FLOAT16_LABEL = 2048
"""Every integer up to 2^11 is exact in float16."""


def downsample_like_segmentation(values: Tensor, scale: Sequence[float]) -> Tensor:
    """Resize ``(..., C, *spatial)`` (``len(scale)`` spatial axes) as nnU-Net's ``DownsampleSegForDSTransform``
    resizes the segmentation.

    That transform (batchgeneratorsv2 ``deep_supervision_downsampling.py``) uses
    ``interpolate(..., round(n * s), mode="nearest-exact")``, which takes source voxel
    ``floor((i + 0.5) * n / m)`` for output voxel ``i``. When ``n = m * f`` exactly, that is
    ``i * f + f // 2``: a strided view, which is what this returns then (no copy, same
    voxels); otherwise it calls ``interpolate`` as nnU-Net does.
    """
    spatial = tuple(values.shape[values.ndim - len(scale) :])
    steps = _strides_of_scale(spatial, tuple(scale))
    if steps is not None:
        return values[(Ellipsis, *steps)]
    new_shape = [round(i * j) for i, j in zip(spatial, scale)]
    batch = values.reshape((-1, values.shape[-len(scale) - 1], *spatial)).float()
    return interpolate(batch, new_shape, mode="nearest-exact").reshape((*values.shape[: -len(scale)], *new_shape)).to(values.dtype)


@functools.lru_cache(maxsize=256)
def _strides_of_scale(shape: tuple[int, ...], scale: tuple[float, ...]) -> tuple[slice, ...] | None:
    """The strided view :func:`downsample_like_segmentation` takes, or ``None`` where nnU-Net's sizes do not divide."""
    new_shape = [round(i * j) for i, j in zip(shape, scale)]
    if not all(n % m == 0 for n, m in zip(shape, new_shape)):
        return None
    return tuple(slice((n // m) // 2, None, n // m) for n, m in zip(shape, new_shape))


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

    @property
    def target_dtype(self) -> torch.dtype:
        """The dtype precomputed maps travel in with the labels: float16, exact for labels up to 2048, else float32."""
        largest_label = max(self.layout.num_classes - 1, self.ignore_label or 0)
        return torch.float16 if largest_label <= LARGEST_FLOAT16_LABEL else torch.float32

    @staticmethod
    def pack(segmentation: Tensor | list[Tensor], maps: Sequence[Tensor]) -> Tensor | list[Tensor]:
        """One sample's float32 target with its maps as extra channels: a list per scale (deep supervision) or one tensor."""
        segs = list(segmentation) if isinstance(segmentation, (list, tuple)) else [segmentation]
        if len(segs) != len(maps):
            raise RuntimeError(f"{len(segs)} segmentation scales but {len(maps)} map scales")
        packed = [torch.cat([seg.float(), scale_maps.float()]) for seg, scale_maps in zip(segs, maps)]
        return packed if isinstance(segmentation, (list, tuple)) else packed[0]

    def take(self, batch: dict, device: torch.device) -> list[Tensor]:
        """Leave nnU-Net's own target in ``batch["target"]`` (on ``device``); return the maps of every scale on ``device``."""
        target = batch["target"]
        targets = [t.to(device, non_blocking=True) for t in (target if isinstance(target, list) else [target])]
        scales = self.scales if self.scales is not None else [[1] * (targets[0].ndim - 2)]
        if self.mode == "device":
            maps = device_maps(targets, self.layout, self.spacing, self.ignore_label, scales)
            segs = targets
        elif self.mode == "precomputed":  # maps behind the full-resolution target; coarser scales are strided views
            self._check_channels(targets[0])
            full = targets[0][:, 1:].float()
            segs = [targets[0][:, :1].to(SEGMENTATION_DTYPE), *targets[1:]]
            maps = [downsample_like_segmentation(full, scale).contiguous() for scale in scales]
        else:
            for t in targets:
                self._check_channels(t)
            segs = [t[:, :1].to(SEGMENTATION_DTYPE) for t in targets]
            maps = [t[:, 1:].float() for t in targets]
        batch["target"] = segs if isinstance(target, list) else segs[0]
        return maps

    def _check_channels(self, target: Tensor) -> None:
        if target.shape[1] != 1 + self.layout.num_channels:
            raise RuntimeError(
                f"the target has {target.shape[1]} channels, expected 1 segmentation + {self.layout.num_channels} map channels: "
                "the trainer's map transforms did not run"
            )

"""Precomputed maps enter nnU-Net's data loader as extra image channels.

nnU-Net's data loader crops ``data`` and ``seg`` of a case with one bounding box and
hands only ``image`` and ``segmentation`` to the transforms. :class:`MapAttachingDataset`
wraps nnU-Net's dataset so that ``load_case`` returns the image with the case's maps
stacked behind its channels, lazily: the loader's own crop then cuts the maps with the
same box and pads them with zeros exactly where it pads the image. The first transform
of the pipeline (:class:`~.transforms.SplitMapsFromImage`) moves those channels into
the ``regression_target`` that batchgenerators carries through spatial and mirror
augmentation. nnU-Net's data loader itself is used unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset

from .map_store import MapStore


class ImageWithMaps:
    """A lazy ``(C_image + C_maps, *spatial)`` array: slicing reads only the requested box."""

    def __init__(self, image, maps: Sequence) -> None:
        self.image = image
        self.maps = list(maps)
        self.num_image_channels = image.shape[0]
        self.shape = (self.num_image_channels + sum(m.shape[0] for m in self.maps), *image.shape[1:])
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        if not isinstance(index, tuple):
            index = (index,)
        channel_index, spatial = index[0], (slice(None), *index[1:])
        parts = [np.asarray(self.image[spatial], dtype=np.float32)] + [np.asarray(m[spatial], dtype=np.float32) for m in self.maps]
        return np.concatenate(parts)[channel_index]


class MapAttachingDataset:
    """nnU-Net dataset whose cases carry their maps behind the image channels."""

    def __init__(self, dataset: nnUNetBaseDataset, store: MapStore, kinds: Sequence[str]) -> None:
        self.dataset = dataset
        self.store = store
        self.kinds = tuple(kinds)
        self.identifiers = dataset.identifiers

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        spatial_shape = tuple(seg.shape[1:])
        maps = [self.store.open(identifier, kind, spatial_shape, properties) for kind in self.kinds]
        return ImageWithMaps(data, maps), seg, seg_prev, properties

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

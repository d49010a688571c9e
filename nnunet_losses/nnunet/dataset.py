"""Precomputed maps enter nnU-Net's data loader as extra image channels.

nnU-Net's data loader (``nnunetv2/training/dataloading/data_loader.py``,
``nnUNetDataLoader.generate_train_batch``) crops ``data`` and ``seg`` of a case with one
bounding box through ``acvl_utils``' ``crop_and_pad_nd`` (which slices the array once
with the in-bounds box and pads the rest) and hands only ``image`` and ``segmentation``
to the transforms. :class:`MapAttachingDataset` wraps nnU-Net's dataset (an
``nnUNetBaseDataset``, ``nnunetv2/training/dataloading/nnunet_dataset.py``) so that
``load_case`` returns the image with the case's maps stacked behind its channels,
lazily: the loader's own crop then reads the maps of exactly that box and pads them
with zeros exactly where it pads the image. The first transform of the pipeline
(:class:`~.transforms.SplitMapsFromImage`) moves those channels into the
``regression_target`` that batchgenerators carries through spatial and mirror
augmentation. nnU-Net's data loader itself is used unchanged.

Cost, in the augmentation workers (what a GPU waits for): each worker opens and checks a
case's map files once and keeps them open (:class:`OpenMaps`), a crop decodes only the
blocks of the box from the (compressed, memory-mapped) map files, and image and maps are
written into one preallocated float32 array: the maps are dequantised straight into it
from a buffer of their stored dtype (:class:`~.map_store.StoredMap`; stored forms and their
error bounds: :mod:`.map_store`, ``docs/maps.md``), with no concatenation.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import blosc2
import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset

from .map_store import MapStore, StoredMap


class ImageWithMaps:
    """A lazy ``(C_image + C_maps, *spatial)`` float32 array: slicing reads only the requested box.

    ``maps``: stored map files (:class:`~.map_store.StoredMap`, decoded on read) or float32 arrays."""

    def __init__(self, image, maps: Sequence, case: str, store: MapStore, kinds: Sequence[str]) -> None:
        self.image = image
        self.maps = list(maps)
        self.case = case
        self.store = store
        self.kinds = tuple(kinds)
        self.num_image_channels = image.shape[0]
        self.shape = (self.num_image_channels + sum(m.shape[0] for m in self.maps), *image.shape[1:])
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        channel_index, spatial = index[0], tuple(index[1:])
        spatial += (slice(None),) * (self.ndim - 1 - len(spatial))
        if not all(isinstance(s, slice) and s.step in (None, 1) for s in spatial):
            raise IndexError(f"ImageWithMaps supports box crops only, got {index}")
        ranges = [s.indices(n)[:2] for s, n in zip(spatial, self.shape[1:])]
        out = np.empty((self.shape[0], *(max(stop - start, 0) for start, stop in ranges)), dtype=np.float32)
        read_box(self.image, out[: self.num_image_channels], ranges)
        start = self.num_image_channels
        for kind, values in zip(self.kinds, self.maps):
            end = start + values.shape[0]
            try:
                if isinstance(values, StoredMap):
                    values.read_into(out[start:end], ranges)  # dequantised from the stored form
                else:  # a float32 array given directly
                    read_box(values, out[start:end], ranges)
            except Exception as error:  # blosc2 raises RuntimeError and others on damaged data
                raise self.store.damaged(self.case, kind, error) from error
            start = end
        return out if channel_index == slice(None) else out[channel_index]


def read_box(array, out: np.ndarray, ranges: Sequence[tuple[int, int]]) -> None:
    """Write ``array[:, box]`` (all channels, ``ranges`` = (start, stop) per spatial axis) into ``out``.

    blosc2 arrays decompress straight into ``out`` (``get_slice_numpy``), saving the copy
    that ``out[...] = array[box]`` makes of the array blosc2 would return.
    """
    if out.size == 0:
        return
    if isinstance(array, blosc2.NDArray) and array.dtype == out.dtype:
        starts = (0, *(start for start, _ in ranges))
        stops = (array.shape[0], *(stop for _, stop in ranges))
        array.get_slice_numpy(out, (starts, stops))
    else:
        out[...] = array[(slice(None), *(slice(start, stop) for start, stop in ranges))]


class OpenMaps:
    """The map files of the most recently used cases, opened and checked once per process.

    nnU-Net's augmentation workers are forked from the trainer; each keeps its own handles.
    At most ``capacity`` cases stay open (least recently used are closed first).
    """

    def __init__(self, store: MapStore, kinds: Sequence[str], capacity: int = 512) -> None:
        self.store = store
        self.kinds = tuple(kinds)
        self.capacity = capacity
        self._cases: OrderedDict[str, list[StoredMap]] = OrderedDict()

    def get(self, case: str, seg_shape: tuple[int, ...], properties: dict) -> list[StoredMap]:
        if case in self._cases:
            self._cases.move_to_end(case)
            return self._cases[case]
        arrays = [self.store.open(case, kind, seg_shape, properties) for kind in self.kinds]
        self._cases[case] = arrays
        if len(self._cases) > self.capacity:
            self._cases.popitem(last=False)
        return arrays


class MapAttachingDataset:
    """nnU-Net dataset whose cases carry their maps behind the image channels."""

    def __init__(self, dataset: nnUNetBaseDataset, store: MapStore, kinds: Sequence[str]) -> None:
        self.dataset = dataset
        self.store = store
        self.kinds = tuple(kinds)
        self.identifiers = dataset.identifiers
        self.open_maps = OpenMaps(store, self.kinds)

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        maps = self.open_maps.get(identifier, tuple(seg.shape[1:]), properties)
        return ImageWithMaps(data, maps, identifier, self.store, self.kinds), seg, seg_prev, properties

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

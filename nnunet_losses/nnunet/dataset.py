"""Where nnU-Net's data loader cut each crop: the dataset side of reading precomputed maps.

nnU-Net's data loader (``nnunetv2/training/dataloading/data_loader.py``,
``nnUNetDataLoader.generate_train_batch``) handles one sample at a time: it loads a case
(``dataset.load_case``), draws a box (``get_bbox``), crops image and segmentation with
``acvl_utils``' ``crop_and_pad_nd`` (which slices the array once with the part of the box
inside the case, then ``np.pad``-s the rest with zeros) and runs the transforms on that
crop right away. It hands only ``image`` and ``segmentation`` to the transforms.

:class:`CaseMapsDataset` wraps nnU-Net's dataset (an ``nnUNetBaseDataset``,
``nnunetv2/training/dataloading/nnunet_dataset.py``) so that ``load_case`` returns the
image as a :class:`RecordingImage`: slicing it reads the image exactly as nnU-Net does and
leaves a :class:`~.patch_sampling.CaseCrop` — the case, its open map files and where the
box lies in it — in a :class:`CropHandoff` that the first map transform takes
(:class:`~.transforms.TakeCaseCrop`). The padding ``crop_and_pad_nd`` adds is reported by
the sliced array itself (:class:`CroppedImage`, through NumPy's ``__array_function__``
protocol for ``np.pad``), which fixes where a box longer than the case began. No map value
is read here: :func:`~.patch_sampling.sample_patch_maps` reads the final patch's maps
once, at the end of the pipeline. nnU-Net's data loader and its image reads are unchanged.

Each augmentation worker opens and checks a case's map files once and keeps them open
(:class:`OpenMaps`).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset

from .map_store import MapStore, StoredMap
from .patch_sampling import CaseCrop


class CropHandoff:
    """The crop of the sample in progress, from the dataset's image read to the first map transform.

    nnU-Net's loader crops a sample and transforms it before it loads the next, so one slot is
    enough; a crop is taken once, and a transform that finds none refuses to guess.
    """

    def __init__(self) -> None:
        self._pending: CaseCrop | None = None

    def put(self, crop: CaseCrop) -> None:
        self._pending = crop

    def replace(self, old: CaseCrop, new: CaseCrop) -> None:
        if self._pending is not old:
            raise RuntimeError("the padded crop is not the crop just read: nnU-Net's loader crops in an unexpected order")
        self._pending = new

    def take(self) -> CaseCrop:
        crop, self._pending = self._pending, None
        if crop is None:
            raise RuntimeError(
                "no crop of a case with maps is pending: the map transforms run on a sample that was not cut from a "
                "CaseMapsDataset (the trainer's get_tr_and_val_datasets) by nnU-Net's data loader"
            )
        return crop


class CroppedImage(np.ndarray):
    """The in-case part of a crop, as nnU-Net's ``crop_and_pad_nd`` receives it; ``np.pad`` on it reports the
    padding to the :class:`CropHandoff`, so the crop's origin is known on both sides of a case shorter than it."""

    _handoff: CropHandoff
    _crop: CaseCrop

    def __array_function__(self, func, types, args, kwargs):
        plain = tuple(a.view(np.ndarray) if isinstance(a, CroppedImage) else a for a in args)
        if func is np.pad and args and args[0] is self:
            pad_width = kwargs["pad_width"] if "pad_width" in kwargs else args[1]
            self._handoff.replace(self._crop, padded_crop(self._crop, pad_width, self.ndim))
        return func(*plain, **kwargs)


def padded_crop(crop: CaseCrop, pad_width: Any, ndim: int) -> CaseCrop:
    """``crop`` after ``np.pad(..., pad_width)`` of its ``(channels, *spatial)`` array (``pad_width`` in any form
    ``np.pad`` takes)."""
    widths = [(int(a), int(b)) for a, b in np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (ndim, 2))]
    if widths[0] != (0, 0):
        raise RuntimeError(f"the loader padded the channel axis of a crop ({pad_width})")
    return CaseCrop(
        crop.case, crop.maps, tuple(o - b for o, (b, _) in zip(crop.origin, widths[1:])),
        tuple(s + b + a for s, (b, a) in zip(crop.shape, widths[1:])), crop.case_shape,
    )


class RecordingImage:
    """A case's image for nnU-Net's loader: slicing reads the image as nnU-Net would and records the crop."""

    def __init__(self, image, maps: Sequence[StoredMap], case: str, handoff: CropHandoff) -> None:
        self.image = image
        self.maps = list(maps)
        self.case = case
        self.handoff = handoff
        self.shape = tuple(image.shape)
        self.dtype = image.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> CroppedImage:
        index = index if isinstance(index, tuple) else (index,)
        spatial = tuple(index[1:]) + (slice(None),) * (self.ndim - len(index))
        if index[0] != slice(None) or not all(isinstance(s, slice) and s.step in (None, 1) for s in spatial):
            raise IndexError(f"a case with maps is read in box crops of all channels only, got {index}")
        ranges = [s.indices(n)[:2] for s, n in zip(spatial, self.shape[1:])]
        crop = CaseCrop(self.case, self.maps, tuple(a for a, _ in ranges), tuple(max(b - a, 0) for a, b in ranges), self.shape[1:])
        cropped = np.asarray(self.image[(slice(None), *spatial)]).view(CroppedImage)
        cropped._handoff, cropped._crop = self.handoff, crop
        self.handoff.put(crop)
        return cropped


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


class CaseMapsDataset:
    """nnU-Net's dataset whose images record each crop, with the case's maps, in ``handoff``."""

    def __init__(self, dataset: nnUNetBaseDataset, store: MapStore, kinds: Sequence[str], handoff: CropHandoff) -> None:
        self.dataset = dataset
        self.store = store
        self.kinds = tuple(kinds)
        self.handoff = handoff
        self.identifiers = dataset.identifiers
        self.open_maps = OpenMaps(store, self.kinds)

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        maps = self.open_maps.get(identifier, tuple(seg.shape[1:]), properties)
        return RecordingImage(data, maps, identifier, self.handoff), seg, seg_prev, properties

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

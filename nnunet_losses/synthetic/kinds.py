"""The registry of phantom kinds that ``write_raw_dataset`` can write."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from nnunet_losses.synthetic.cardiac import CARDIAC_LABELS, cardiac_case
from nnunet_losses.synthetic.common import Spacing3D
from nnunet_losses.synthetic.intima_media import INTIMA_MEDIA_LABELS, intima_media_case
from nnunet_losses.synthetic.lamina import LAMINA_LABELS, lamina_case

PhantomFn = Callable[..., tuple[np.ndarray, np.ndarray, Spacing3D]]


@dataclass(frozen=True)
class DatasetKind:
    """How one phantom kind becomes an nnU-Net raw dataset.

    ``generate(seed, shape=..., spacing=...)`` makes one case (its own defaults apply
    when the caller gives no shape or spacing); ``channel_name`` is the
    modality written to ``dataset.json`` (nnU-Net z-scores channels it does not know);
    ``labels`` maps label names to values, background 0; cases are named
    ``{case_prefix}_{i:03d}`` in a dataset called ``Dataset{id:03d}_{default_name}``
    unless a name is given.
    """

    generate: PhantomFn
    channel_name: str
    labels: Mapping[str, int]
    case_prefix: str
    default_name: str


DATASET_KINDS: Mapping[str, DatasetKind] = MappingProxyType({
    "cardiac": DatasetKind(cardiac_case, "MRI", CARDIAC_LABELS, "cardiac", "SyntheticCardiac"),
    "intima_media": DatasetKind(intima_media_case, "US", INTIMA_MEDIA_LABELS, "imc", "SyntheticIntimaMedia"),
    "lamina": DatasetKind(lamina_case, "US", LAMINA_LABELS, "lamina", "SyntheticLamina"),
})

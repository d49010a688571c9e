"""Synthetic phantom datasets in nnU-Net v2's raw format, for tests and demos.

Three phantoms imitate the data of the papers this package implements, each a
deterministic function of its seed returning ``(image float32, labels uint8, spacing)``
in numpy's (z, y, x) order with spacing in mm:

* ``cardiac_case``: ACDC-like short-axis cine MRI (RV, myocardium, LV);
* ``intima_media_case``: carotid B-mode ultrasound with a partly annotated
  intima-media band;
* ``lamina_case``: 3D spine ultrasound with pairs of laminae beside the spinous process.

``write_raw_dataset`` writes any of them (``DATASET_KINDS``) as an nnU-Net raw dataset.
This subpackage does not import nnU-Net.
"""
from __future__ import annotations

from nnunet_losses.synthetic.cardiac import cardiac_case
from nnunet_losses.synthetic.intima_media import intima_media_case
from nnunet_losses.synthetic.kinds import DATASET_KINDS
from nnunet_losses.synthetic.lamina import lamina_case
from nnunet_losses.synthetic.raw_dataset import write_raw_dataset

__all__ = ["DATASET_KINDS", "cardiac_case", "intima_media_case", "lamina_case", "write_raw_dataset"]

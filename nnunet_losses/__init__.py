"""Region-wise, boundary, temporal and centroid losses for nnU-Net v2.

Subpackages: ``maps`` (RW and distance maps from labels), ``losses`` (torch losses),
``schedules`` (loss-weight schedules), ``metrics`` (evaluation and statistics),
``nnunet`` (the nnU-Net integration), ``study`` (seed studies) and ``synthetic``
(phantom datasets in nnU-Net's raw format).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nnunet-losses")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

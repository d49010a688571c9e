"""Where the package's nnU-Net trainers live: the folder ``nnUNet_extTrainer`` must point at.

nnU-Net finds trainers outside its own package only through that environment variable
(``nnunetv2.utilities.find_objects``); the command ``nnunet-losses trainers-path``, the
demo and the trainer checks before a study all take the folder from here.
"""
from __future__ import annotations

from pathlib import Path


def trainers_path() -> Path:
    """The folder holding the package's nnU-Net trainers (editable or wheel install)."""
    from . import trainers

    return Path(trainers.__file__).resolve().parent

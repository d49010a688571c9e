"""Check, before launching ``nnUNetv2_train``, that a trainer exists and has what it needs.

Studies launch many trainings; a typo in a trainer name or missing maps should stop
them at once with a clear message, not fail fifty jobs later. :func:`check_trainer`
finds the trainer the way ``nnUNetv2_train`` does (nnU-Net's package, then
``nnUNet_extTrainer``), builds it and its loss without a network, and, for map-based
trainers, verifies the maps of every case of the fold.

nnU-Net internal used here: ``recursive_find_trainer_class_by_name``
(``nnunetv2/utilities/find_objects.py``), the lookup ``nnUNetv2_train`` itself uses.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from ..trainer_folder import trainers_path
from .configuration import ConfigurationError, load_configuration


def package_trainer_names() -> list[str]:
    """Names of the trainers shipped in the package's trainers folder."""
    import importlib.util

    names = []
    for module_file in sorted(trainers_path().glob("losses_*.py")):
        spec = importlib.util.spec_from_file_location(f"_preflight_{module_file.stem}", module_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        names += [name for name in vars(module) if name.startswith("nnUNetTrainer") and name != "nnUNetTrainerLosses"]
    return sorted(set(names))


def find_trainer_class(name: str) -> type:
    """The trainer class ``nnUNetv2_train -tr name`` would use; a clear error listing ours otherwise."""
    os.environ.setdefault("nnUNet_extTrainer", str(trainers_path()))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        raise ConfigurationError(
            f"unknown trainer {name!r}. Trainers of nnunet-losses: {', '.join(package_trainer_names())} "
            "(and nnU-Net's own, e.g. nnUNetTrainer)"
        ) from None


def check_trainer(dataset: str | int, configuration: str, trainer_name: str, fold: int | str = 0, plans: str = "nnUNetPlans") -> type:
    """Raise ``ConfigurationError``/``MapError`` unless ``trainer_name`` can train on this data."""
    config = load_configuration(dataset, configuration, plans)
    trainer_class = find_trainer_class(trainer_name)
    plans_dict = load_json(str(config.dataset_folder / f"{plans}.json"))
    plans_dict["continue_training"] = False
    dataset_json = load_json(str(config.dataset_folder / "dataset.json"))
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        previous = os.environ.get("nnUNet_results")
        os.environ["nnUNet_results"] = scratch  # the trainer creates its output folder on construction
        try:
            trainer = trainer_class(plans_dict, configuration, int(fold) if str(fold).isdigit() else fold, dataset_json, torch.device("cpu"))
            if hasattr(trainer, "_require_maps"):
                trainer.loss = trainer._build_loss()
                trainer._require_maps()
        finally:
            if previous is None:
                os.environ.pop("nnUNet_results", None)
            else:
                os.environ["nnUNet_results"] = previous
    return trainer_class

"""Resolve a dataset, plans and configuration the way nnU-Net does, with errors that name the fix.

Everything the map code needs about one preprocessed configuration is gathered in
:class:`PreprocessedConfiguration`: the folders, the voxel spacing of the
preprocessed arrays (the configuration's ``spacing`` in the plans, not the spacing
stored in each case's ``.pkl``), the number of classes and the ignore label.

nnU-Net's own code resolves them: ``nnUNet_preprocessed`` (``nnunetv2/paths.py``),
``maybe_convert_to_dataset_name`` (``nnunetv2/utilities/dataset_name_id_conversion.py``),
``PlansManager`` and ``ConfigurationManager`` (``nnunetv2/utilities/plans_handling/plans_handler.py``),
``LabelManager`` (``nnunetv2/utilities/label_handling/label_handling.py``) and, for the
cases of a folder, ``infer_dataset_class`` (``nnunetv2/training/dataloading/nnunet_dataset.py``).

:func:`require_label_based` is the package's one refusal of region-based datasets
(trainers, ``setup_maps`` and the studies call it).
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from batchgenerators.utilities.file_and_folder_operations import load_json, load_pickle
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager


class ConfigurationError(RuntimeError):
    """A dataset, plans file or configuration that cannot be used, with the fix in the message."""


def preprocessed_root() -> Path:
    if not nnUNet_preprocessed.is_set():
        raise ConfigurationError(
            "nnUNet_preprocessed is not set. Export it as for nnU-Net, e.g. export nnUNet_preprocessed=/data/nnUNet_preprocessed"
        )
    return Path(nnUNet_preprocessed.get())


def resolve_dataset_name(dataset: str | int) -> str:
    """``27``, ``"27"`` or ``"Dataset027_ACDC"`` -> ``"Dataset027_ACDC"``; lists the datasets on failure."""
    root = preprocessed_root()
    try:
        name = maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else str(dataset))
    except (RuntimeError, AssertionError):
        name = None
    if name is None or not (root / name).is_dir():
        available = sorted(p.name for p in root.glob("Dataset*") if p.is_dir()) if root.is_dir() else []
        raise ConfigurationError(
            f"dataset {dataset!r} has no preprocessed data in {root}. Available: {available or 'none'}. "
            f"Run nnU-Net's preprocessing first: nnUNetv2_plan_and_preprocess -d {dataset}"
        )
    return name


@dataclass(frozen=True)
class PreprocessedConfiguration:
    """One preprocessed configuration of one dataset, checked to exist."""

    dataset_name: str
    plans_name: str
    configuration: str
    plans_manager: PlansManager
    configuration_manager: ConfigurationManager
    label_manager: LabelManager
    dataset_folder: Path
    data_folder: Path

    @property
    def spacing(self) -> tuple[float, ...]:
        """The configuration's spacing (mm) from the plans: 3 entries for 3D, in-plane only for 2d."""
        return tuple(float(s) for s in self.configuration_manager.spacing)

    def case_spacing(self, properties: dict) -> tuple[float, ...]:
        """Spacing (mm) of a preprocessed case array ``(z, y, x)``.

        3D configurations resample every case to the configuration's spacing. 2d
        configurations resample in-plane only and keep each case's own slice distance,
        which is its original spacing along the first transposed axis (the ``.pkl``).
        """
        if len(self.spacing) == 3:
            return self.spacing
        slice_distance = float(properties["spacing"][self.plans_manager.transpose_forward[0]])
        return (slice_distance, *self.spacing)

    def load_properties(self, case: str) -> dict:
        """The ``.pkl`` properties nnU-Net stored for a preprocessed case."""
        return load_pickle(str(self.data_folder / f"{case}.pkl"))

    @property
    def num_classes(self) -> int:
        """Number of output classes (background included, ignore label excluded)."""
        return self.label_manager.num_segmentation_heads

    @property
    def ignore_label(self) -> int | None:
        return self.label_manager.ignore_label

    def case_identifiers(self) -> list[str]:
        """The cases nnU-Net sees in the preprocessed folder, sorted."""
        return sorted(infer_dataset_class(str(self.data_folder)).get_identifiers(str(self.data_folder)))

    def setup_maps_command(self, *extra: str) -> str:
        """The command that writes the maps of this configuration, in the console form that works from any folder."""
        plans = "" if self.plans_name == "nnUNetPlans" else f" -p {self.plans_name}"
        return " ".join([f"nnunet-losses setup-maps -d {self.dataset_name} -c {self.configuration}{plans}", *extra])

    def require_label_based(self) -> None:
        """:func:`require_label_based` for this dataset."""
        require_label_based(self.label_manager.label_dict, self.dataset_name)


def require_label_based(labels: Mapping[str, int | Sequence[int]], dataset_name: str) -> None:
    """Refuse a region-based dataset: the maps, losses and studies of the package are defined per label.

    ``labels`` is dataset.json's ``"labels"``; nnU-Net's rule (``LabelManager``) makes a
    dataset region-based when a label is given as a list of more than one value.
    """
    if any(isinstance(value, (list, tuple)) and len(value) > 1 for value in labels.values()):
        raise ConfigurationError(
            f"{dataset_name} is region-based (dataset.json gives labels as lists of values, overlapping regions); "
            "nnunet-losses does not support region-based training: its maps and losses need one label per voxel. "
            "Train it with nnU-Net's own trainers, or re-create it with one value per label"
        )


def configuration_from_managers(
    plans_manager: PlansManager, configuration: str, dataset_json: dict, dataset_folder: str | Path
) -> PreprocessedConfiguration:
    """The same description for a trainer, which already holds nnU-Net's managers."""
    configuration_manager = plans_manager.get_configuration(configuration)
    return PreprocessedConfiguration(
        dataset_name=plans_manager.dataset_name,
        plans_name=plans_manager.plans_name,
        configuration=configuration,
        plans_manager=plans_manager,
        configuration_manager=configuration_manager,
        label_manager=plans_manager.get_label_manager(dataset_json),
        dataset_folder=Path(dataset_folder),
        data_folder=Path(dataset_folder) / configuration_manager.data_identifier,
    )


def load_configuration(dataset: str | int, configuration: str, plans_name: str = "nnUNetPlans") -> PreprocessedConfiguration:
    """Check that the dataset, its plans and the configuration's preprocessed data exist."""
    name = resolve_dataset_name(dataset)
    dataset_folder = preprocessed_root() / name
    plans_file = dataset_folder / f"{plans_name}.json"
    if not plans_file.is_file():
        available = sorted(p.stem for p in dataset_folder.glob("*Plans*.json"))
        raise ConfigurationError(
            f"plans {plans_name!r} not found in {dataset_folder} (available: {available or 'none'}). "
            f"Run nnUNetv2_plan_and_preprocess -d {dataset} or pass -p with one of the available plans"
        )
    plans_manager = PlansManager(str(plans_file))
    if configuration not in plans_manager.available_configurations:
        raise ConfigurationError(
            f"configuration {configuration!r} is not in {plans_file.name}; available: {plans_manager.available_configurations}"
        )
    config = configuration_from_managers(plans_manager, configuration, load_json(str(dataset_folder / "dataset.json")), dataset_folder)
    if not config.data_folder.is_dir() or not any(config.data_folder.glob("*.pkl")):
        raise ConfigurationError(
            f"no preprocessed data for configuration {configuration!r} in {config.data_folder}. "
            f"Run nnUNetv2_preprocess -d {dataset} -c {configuration} -plans_name {plans_name}"
        )
    return config


def writable_directory(folder: Path) -> Path:
    """Create ``folder`` if needed and check it is writable; a clear error otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except OSError as error:
        raise ConfigurationError(
            f"cannot write to {folder}: {error.strerror}. Fix its permissions (or free the disk) and run again"
        ) from error
    return folder

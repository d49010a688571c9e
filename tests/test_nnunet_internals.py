"""The nnU-Net internals the package relies on: each used in one module only, named there with nnU-Net's file.

An *internal* is anything of nnU-Net (``nnunetv2``, ``batchgeneratorsv2``, ``batchgenerators``'
augmenters) the package touches beyond overriding a trainer's hooks: every name it
imports from those packages, every private attribute (``_name``) defined in their source
and not by the package itself, and the public attributes of nnU-Net's logger, loss
wrapper and augmenters listed in :data:`STATE`. The package source (``nnunet_losses/``
and ``trainers/``) is scanned for them; the table :data:`EXPECTED` says where each may
be used. A new internal, or one used in a second module, fails here: put it in its one
module (:mod:`nnunet_losses.nnunet.internals` for the trainer's), name it in that
module's docstring with nnU-Net's file, and add it to the table.
"""
from __future__ import annotations

import ast
import re
import sys
import tomllib
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

import batchgenerators
import batchgeneratorsv2
import nnunetv2
from nnunet_losses.nnunet import internals

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FILES = sorted([*(REPO / "nnunet_losses").rglob("*.py"), *(REPO / "trainers").glob("*.py")])
EXTERNAL_ROOTS = {name: Path(next(iter(module.__path__))) for name, module in
                  (("nnunetv2", nnunetv2), ("batchgeneratorsv2", batchgeneratorsv2), ("batchgenerators", batchgenerators))}
NOT_INTERNAL = ("batchgenerators.utilities.file_and_folder_operations",)
"""batchgenerators' file helpers (``load_json``, ...): a small file library, not nnU-Net's training machinery."""
STATE = {"local_logger", "my_fantastic_logging", "loggers", "weight_factors", "restart", "num_processes", "save_checkpoint"}
"""Public attributes of nnU-Net's objects that are its internal state rather than an extension interface."""

TRAINER_PY = "nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py"
LOGGER_PY = "nnunetv2/training/logging/nnunet_logger.py"
AUGMENTER_PY = "batchgenerators/dataloading/nondet_multi_threaded_augmenter.py"
INTERNALS = "nnunet_losses/nnunet/internals.py"
USED_IN: dict[str, tuple[str, ...]] = {  # the one module that may use each internal
    INTERNALS: (
        "batchgenerators.dataloading.multi_threaded_augmenter.MultiThreadedAugmenter",
        "batchgenerators.dataloading.nondet_multi_threaded_augmenter.NonDetMultiThreadedAugmenter",
        "nnunetv2.training.logging.nnunet_logger.LocalLogger", "nnunetv2.training.logging.nnunet_logger.MetaLogger",
        "nnunetv2.training.loss.deep_supervision.DeepSupervisionWrapper",
        "nnunetv2.training.nnUNetTrainer.nnUNetTrainer.nnUNetTrainer", "._get_deep_supervision_scales",
        "._do_i_compile", "._finish", ".save_checkpoint", ".local_logger", ".loggers", ".my_fantastic_logging",
        ".weight_factors", ".restart", ".num_processes",
    ),
    "nnunet_losses/nnunet/trainer.py": (
        "nnunetv2.training.lr_scheduler.polylr.PolyLRScheduler",
    ),
    "nnunet_losses/nnunet/transforms.py": (
        "batchgeneratorsv2.transforms.base.basic_transform.BasicTransform",
        "batchgeneratorsv2.transforms.spatial.spatial.SpatialTransform",
        "batchgeneratorsv2.transforms.spatial.mirroring.MirrorTransform",
        "batchgeneratorsv2.transforms.utils.compose.ComposeTransforms",
        "batchgeneratorsv2.transforms.utils.pseudo2d.Convert2DTo3DTransform",
        "batchgeneratorsv2.transforms.utils.pseudo2d.Convert3DTo2DTransform",
        "._apply_to_regr_target", "._get_grid_sample_padding_mode",
    ),
    "nnunet_losses/nnunet/dataset.py": (
        "nnunetv2.training.dataloading.nnunet_dataset.nnUNetBaseDataset",
    ),
    "nnunet_losses/nnunet/map_store.py": (
        "nnunetv2.training.dataloading.nnunet_dataset.comp_blosc2_params",
    ),
    "nnunet_losses/nnunet/configuration.py": (
        "nnunetv2.paths.nnUNet_preprocessed", "nnunetv2.training.dataloading.nnunet_dataset.infer_dataset_class",
        "nnunetv2.utilities.dataset_name_id_conversion.maybe_convert_to_dataset_name",
        "nnunetv2.utilities.label_handling.label_handling.LabelManager",
        "nnunetv2.utilities.plans_handling.plans_handler.ConfigurationManager",
        "nnunetv2.utilities.plans_handling.plans_handler.PlansManager",
    ),
    "nnunet_losses/nnunet/preflight.py": (
        "nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name",
    ),
    "nnunet_losses/study/runner.py": (
        "nnunetv2.utilities.crossval_split.generate_crossval_split",
    ),
    "nnunet_losses/nnunet/nnunet_dice.py": (
        "nnunetv2.training.loss.dice.MemoryEfficientSoftDiceLoss", "nnunetv2.utilities.helpers.softmax_helper_dim1",
    ),
}
ATTRIBUTE_FILES: dict[str, tuple[str, ...]] = {  # nnU-Net's file of each attribute internal (imports name their own)
    TRAINER_PY: ("._get_deep_supervision_scales", "._do_i_compile", ".save_checkpoint",),
    AUGMENTER_PY: ("._finish", ".restart", ".num_processes",),
    LOGGER_PY: (".local_logger", ".loggers", ".my_fantastic_logging",),
    "nnunetv2/training/loss/deep_supervision.py": (".weight_factors",),
    "batchgeneratorsv2/transforms/base/basic_transform.py": ("._apply_to_regr_target",),
    "batchgeneratorsv2/transforms/spatial/spatial.py": ("._get_grid_sample_padding_mode",),
}
EXPECTED: dict[str, tuple[str, str | None]] = {
    internal: (module, next((file for file, names in ATTRIBUTE_FILES.items() if internal in names), None))
    for module, internals in USED_IN.items()
    for internal in internals
}
"""internal: (the one module that uses it, nnU-Net's file for attributes; imports name their own file)."""


def _defined_private_names(files) -> set[str]:
    names: set[str] = set()
    for file in files:
        text = file.read_text(errors="replace")
        names |= set(re.findall(r"\bdef (_[A-Za-z]\w*)", text)) | set(re.findall(r"\bself\.(_[A-Za-z]\w*)\s*=", text))
    return {name for name in names if not name.startswith("__")}


def external_private_names() -> set[str]:
    """Private names nnU-Net and batchgenerators define and the package does not define itself (its own, or hooks it overrides)."""
    external = _defined_private_names(f for root in EXTERNAL_ROOTS.values() for f in root.rglob("*.py"))
    return external - _defined_private_names(PACKAGE_FILES)


def used_internals() -> dict[str, set[str]]:
    """``{internal: modules (paths relative to the repository) that use it}``, from the package source."""
    private = external_private_names()
    used: dict[str, set[str]] = defaultdict(set)
    for file in PACKAGE_FILES:
        module = file.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _external(node.module):
                for alias in node.names:
                    used[f"{node.module}.{alias.name}"].add(module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _external(alias.name):
                        used[alias.name].add(module)
            elif isinstance(node, ast.Attribute) and (node.attr in private or node.attr in STATE):
                used[f".{node.attr}"].add(module)
    return dict(used)


def _external(module: str) -> bool:
    return module.split(".")[0] in EXTERNAL_ROOTS and not module.startswith(NOT_INTERNAL)


def nnunet_file(internal: str) -> str:
    """nnU-Net's file that defines an imported name (``nnunetv2/paths.py``), or the table's file for an attribute."""
    if internal.startswith("."):
        return EXPECTED[internal][1]
    parts = internal.split(".")[:-1]
    root = EXTERNAL_ROOTS[parts[0]].parent
    path = Path(*parts)
    return (path.with_suffix(".py") if (root / path.with_suffix(".py")).is_file() else path / "__init__.py").as_posix()


def test_every_internal_is_used_in_one_module_only():
    used = used_internals()
    shared = {internal: sorted(modules) for internal, modules in used.items() if len(modules) > 1}
    assert not shared, f"nnU-Net internals used in more than one module (keep each in one): {shared}"


def test_the_package_uses_exactly_the_listed_internals_where_listed():
    used = {internal: next(iter(modules)) for internal, modules in used_internals().items()}
    new = {internal: module for internal, module in used.items() if internal not in EXPECTED}
    assert not new, f"new nnU-Net internals (add each to EXPECTED and to its module's docstring): {new}"
    moved = {internal: (module, EXPECTED[internal][0]) for internal, module in used.items() if module != EXPECTED[internal][0]}
    assert not moved, f"internals used outside their module (used in, listed in): {moved}"
    assert set(EXPECTED) == set(used), f"listed but no longer used (remove them from EXPECTED): {sorted(set(EXPECTED) - set(used))}"


@pytest.mark.parametrize("internal", sorted(EXPECTED))
def test_the_module_docstring_names_the_internal_and_nnunets_file(internal):
    module, _ = EXPECTED[internal]
    docstring = ast.get_docstring(ast.parse((REPO / module).read_text())) or ""
    name = internal.rsplit(".", 1)[1]
    assert name in docstring, f"{module}'s docstring does not name {name}"
    assert nnunet_file(internal) in docstring, f"{module}'s docstring does not name {nnunet_file(internal)} (where {name} is defined)"


def test_the_scan_finds_what_it_looks_for():
    """The scanner sees a private nnU-Net method, an imported name and nnU-Net's logger state in a module."""
    private = external_private_names()
    assert {"_get_deep_supervision_scales", "_do_i_compile", "_finish"} <= private
    assert "_build_loss" not in private  # a hook the package's trainer overrides
    used = used_internals()
    assert used["._get_deep_supervision_scales"] == {INTERNALS}
    assert used["nnunetv2.training.nnUNetTrainer.nnUNetTrainer.nnUNetTrainer"] == {INTERNALS}


def test_supported_range_is_the_one_pyproject_declares():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"nnunetv2{internals.SUPPORTED_NNUNET}" in dependencies
    assert internals.TESTED_NNUNET == "2.8.1"


def test_startup_check_warns_with_both_versions_and_refuses_a_missing_internal(monkeypatch):
    logged = []
    monkeypatch.setattr(internals, "_checked", False)
    monkeypatch.setattr(internals.importlib.metadata, "version", lambda name: "2.8.7")
    with pytest.warns(UserWarning, match=r"nnunetv2 2\.8\.7 is installed; nnunet-losses was tested with nnunetv2 2\.8\.1"):
        internals.check_nnunet(logged.append)
    assert len(logged) == 1 and ">=2.8,<2.9" in logged[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        internals.check_nnunet(logged.append)  # once per process
    monkeypatch.delattr(internals.nnUNetTrainer, "_get_deep_supervision_scales")
    with pytest.raises(internals.NnUNetIncompatible, match=rf"nnUNetTrainer\._get_deep_supervision_scales \({re.escape(TRAINER_PY)}\)"):
        internals.check_nnunet(logged.append)


def test_startup_check_is_silent_on_the_tested_version(monkeypatch):
    monkeypatch.setattr(internals, "_checked", False)
    logged = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        internals.check_nnunet(logged.append)
    assert logged == [] and sys.modules["nnunetv2"] is nnunetv2

"""Write phantom datasets in nnU-Net v2's raw format (without importing nnU-Net)."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from nnunet_losses.files import write_atomically
from nnunet_losses.synthetic.kinds import DATASET_KINDS

FILE_ENDING = ".nii.gz"
CASE_SEED_STRIDE = 100003  # a prime above any realistic number of cases per dataset

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` in a dataset written with ``seed``: ``seed * 100003 + index``."""
    return seed * CASE_SEED_STRIDE + index


def write_raw_dataset(kind: str, raw_root: str | Path, dataset_id: int, num_cases: int,
                      seed: int = 0, shape: Sequence[int] | None = None,
                      spacing: Sequence[float] | None = None, dataset_name: str | None = None,
                      overwrite: bool = False) -> Path:
    """Write ``num_cases`` phantoms of ``kind`` as an nnU-Net v2 raw dataset.

    Layout: ``<raw_root>/Dataset{dataset_id:03d}_{name}/`` with ``imagesTr/{case}_0000.nii.gz``,
    ``labelsTr/{case}.nii.gz`` and ``dataset.json`` (``channel_names``, ``labels``,
    ``numTraining``, ``file_ending`` and, under ``synthetic``, the arguments that
    generated it). Cases are named ``{prefix}_{i:03d}``; case ``i`` is generated with
    seed ``case_seed(seed, i)``, so cases differ from one another and are reproducible.
    ``shape`` and ``spacing`` (numpy (z, y, x) order, mm) default to the generator's; the
    NIfTI spacing is written in SimpleITK's (x, y, z) order. ``dataset_name`` defaults to
    the kind's ``default_name`` in ``DATASET_KINDS``.

    Every file is written under a temporary name in its destination folder and renamed
    into place; ``dataset.json`` is written last, so a folder without
    it is incomplete. An existing, complete folder written with the same arguments is
    returned as it is; if the folder holds any other files, ``FileExistsError`` is raised
    unless ``overwrite`` is true, which deletes and rewrites it. Another folder with the same dataset id (a
    different name) always raises ``FileExistsError``, since nnU-Net could not tell the
    two apart. Unknown kinds raise ``ValueError``.

    Returns the dataset folder.
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; known kinds: {', '.join(DATASET_KINDS)}")
    spec = DATASET_KINDS[kind]
    _check_count("dataset_id", dataset_id, 1)
    _check_count("num_cases", num_cases, 1)
    _check_count("seed", seed, 0)
    dataset_id, num_cases, seed = int(dataset_id), int(num_cases), int(seed)
    name = spec.default_name if dataset_name is None else dataset_name
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"dataset_name must be letters, digits, '_' or '-' (not first), got {name!r}")

    raw_root = Path(raw_root)
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    clashes = [p for p in raw_root.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p != folder]
    if clashes:
        raise FileExistsError(f"dataset id {dataset_id} is already used by {clashes[0]}; "
                              f"nnU-Net needs ids to be unique within {raw_root}")

    case_ids = [f"{spec.case_prefix}_{i:03d}" for i in range(num_cases)]
    expected_files = {f"imagesTr/{case}_0000{FILE_ENDING}" for case in case_ids}
    expected_files |= {f"labelsTr/{case}{FILE_ENDING}" for case in case_ids}
    dataset_json = {
        "name": name,
        "description": f"Synthetic {kind} phantoms from nnunet_losses.synthetic",
        "channel_names": {"0": spec.channel_name},
        "labels": dict(spec.labels),
        "numTraining": num_cases,
        "file_ending": FILE_ENDING,
        "synthetic": {
            "kind": kind,
            "seed": seed,
            "num_cases": num_cases,
            "shape": None if shape is None else [int(n) for n in shape],
            "spacing": None if spacing is None else [float(s) for s in spacing],
        },
    }

    if any(p.is_file() for p in folder.rglob("*")):
        if not overwrite:
            if _holds(folder, dataset_json, expected_files):
                return folder
            raise FileExistsError(f"{folder} already exists with different or incomplete content; "
                                  f"pass overwrite=True to replace it")
        shutil.rmtree(folder)

    options = {key: value for key, value in (("shape", shape), ("spacing", spacing)) if value is not None}
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    for index, case in enumerate(case_ids):
        image, labels, voxel_spacing = spec.generate(case_seed(seed, index), **options)
        _write_nifti(image, voxel_spacing, folder / "imagesTr" / f"{case}_0000{FILE_ENDING}")
        _write_nifti(labels, voxel_spacing, folder / "labelsTr" / f"{case}{FILE_ENDING}")
    write_atomically(folder / "dataset.json", json.dumps(dataset_json, indent=4).encode("utf-8"))
    return folder


def _check_count(name: str, value: int, minimum: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _holds(folder: Path, dataset_json: dict[str, Any], expected_files: set[str]) -> bool:
    """Whether ``folder`` is a complete dataset written with exactly this ``dataset_json``."""
    json_path = folder / "dataset.json"
    if not json_path.is_file() or json.loads(json_path.read_text(encoding="utf-8")) != dataset_json:
        return False
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    return present == expected_files | {"dataset.json"}


def _write_nifti(array: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    """Write a (z, y, x) array with (z, y, x) spacing in mm as NIfTI, atomically."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # SimpleITK wants (x, y, z)
    _atomic_write(path, FILE_ENDING, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True))


def _atomic_write(path: Path, suffix: str, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then move it onto ``path``.

    For writers that need a file name rather than content (SimpleITK picks the format from
    the name's ``suffix``, which the temporary name keeps); content in memory goes through
    :func:`nnunet_losses.files.write_atomically`. The temporary file is removed if writing fails.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

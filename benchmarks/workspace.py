"""The nnU-Net workspace of a benchmark: synthetic cardiac data, planned and preprocessed by nnU-Net, maps written.

Benchmarks run from the repository root (``python benchmarks/<name>.py``), so this
module is importable beside them. A ``--workdir`` kept between runs is reused: only
what is missing is written, planned, preprocessed or mapped.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path


def point_nnunet_at(workdir: Path) -> dict[str, str]:
    """Set nnU-Net's folders to ``workdir`` (created) and return the environment for its commands."""
    from nnunet_losses.trainer_folder import trainers_path

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(workdir / name)
        (workdir / name).mkdir(parents=True, exist_ok=True)
    os.environ["nnUNet_extTrainer"] = str(trainers_path())
    return {key: value for key, value in os.environ.items() if key != "nnUNet_n_proc_DA"}  # preprocessing needs its workers


def build_loader(name: str, dataset_id: int, configuration: str, fold: int | str = 0):
    """nnU-Net's training data loader exactly as trainer ``name`` builds it (``initialize()``, ``get_dataloaders()``)."""
    import contextlib
    import io

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_losses.nnunet.preflight import find_trainer_class

    folder = Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(dataset_id)
    plans = load_json(str(folder / "nnUNetPlans.json"))
    plans["continue_training"] = False
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = find_trainer_class(name)(plans, configuration, fold, load_json(str(folder / "dataset.json")), torch.device("cpu"))
        trainer.initialize()
        loader, _ = trainer.get_dataloaders()
    return loader


def time_interleaved(
    names: Sequence[str], dataset_id: int, configuration: str, warmup: int, batches: int, fold: int | str = 0
) -> dict[str, list[float]]:
    """Seconds of each ``next(loader)`` of every trainer in ``names``, taking turns batch by batch.

    Batch ``i`` of every trainer is drawn with numpy and torch seeded with ``i``: the same cases, boxes and
    augmentations for all (the package's transforms draw nothing), so the times are paired, and a slow spell of
    the machine falls on all trainers alike. The first ``warmup`` batches (files opened, caches filled) are not
    returned. Compare trainers by the ratio of their mean seconds per batch.
    """
    import time

    import numpy as np
    import torch

    loaders = {name: build_loader(name, dataset_id, configuration, fold) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + batches):
        for name, loader in loaders.items():
            np.random.seed(i)
            torch.manual_seed(i)
            start = time.perf_counter()
            next(loader)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def prepare_workspace(
    workdir: Path, dataset_id: int, cases: int, shape: Sequence[int], configurations: Sequence[str], spacing: Sequence[float] | None = None
) -> None:
    """Point nnU-Net at ``workdir`` and make the dataset, its preprocessed ``configurations`` and their maps exist."""
    env = point_nnunet_at(workdir)
    if not any((workdir / "nnUNet_raw").glob(f"Dataset{dataset_id}_*")):
        from nnunet_losses.synthetic import write_raw_dataset

        write_raw_dataset("cardiac", workdir / "nnUNet_raw", dataset_id, cases, seed=dataset_id, shape=shape, spacing=spacing)
    preprocessed = next(iter((workdir / "nnUNet_preprocessed").glob(f"Dataset{dataset_id}_*")), None)
    missing = [c for c in configurations if preprocessed is None or not (preprocessed / f"nnUNetPlans_{c}").is_dir()]
    if missing:
        subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", *missing, "-np", "2"], check=True, capture_output=True, env=env)
    for configuration in configurations:
        subprocess.run(["nnunet-losses", "setup-maps", "-d", str(dataset_id), "-c", configuration, "-np", "2", "--quiet"], check=True, env=env)

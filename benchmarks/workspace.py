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


def prepare_workspace(
    workdir: Path, dataset_id: int, cases: int, shape: Sequence[int], configurations: Sequence[str], spacing: Sequence[float] | None = None
) -> None:
    """Point nnU-Net at ``workdir`` and make the dataset, its preprocessed ``configurations`` and their maps exist."""
    from nnunet_losses.trainer_folder import trainers_path

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(workdir / name)
        (workdir / name).mkdir(parents=True, exist_ok=True)
    os.environ["nnUNet_extTrainer"] = str(trainers_path())
    if not any((workdir / "nnUNet_raw").glob(f"Dataset{dataset_id}_*")):
        from nnunet_losses.synthetic import write_raw_dataset

        write_raw_dataset("cardiac", workdir / "nnUNet_raw", dataset_id, cases, seed=dataset_id, shape=shape, spacing=spacing)
    env = {key: value for key, value in os.environ.items() if key != "nnUNet_n_proc_DA"}  # preprocessing needs its workers
    preprocessed = next(iter((workdir / "nnUNet_preprocessed").glob(f"Dataset{dataset_id}_*")), None)
    missing = [c for c in configurations if preprocessed is None or not (preprocessed / f"nnUNetPlans_{c}").is_dir()]
    if missing:
        subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", *missing, "-np", "2"], check=True, capture_output=True, env=env)
    for configuration in configurations:
        subprocess.run(["nnunet-losses", "setup-maps", "-d", str(dataset_id), "-c", configuration, "-np", "2", "--quiet"], check=True, env=env)

"""Shared fixtures: a real nnU-Net workspace with a small synthetic dataset, prepared once per session.

Tests marked ``nnunet`` use nnU-Net's real commands (planning, preprocessing, training,
prediction) on CPU with a small plans variant. The workspace lives in a temporary
folder; the nnU-Net environment variables point there for the whole session, so the
user's own nnU-Net folders are never touched.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnunet_losses.cli import trainers_path
from nnunet_losses.synthetic import write_raw_dataset

CARDIAC_ID = 201
SMALL_PLANS = "nnUNetSmallPlans"


@dataclass(frozen=True)
class NnUNetWorkspace:
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    def environment(self, **extra: str) -> dict[str, str]:
        """Environment for nnU-Net subprocesses: this workspace, one export process."""
        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.preprocessed),
            nnUNet_results=str(self.results),
            nnUNet_extTrainer=str(trainers_path()),
            nnUNet_def_n_proc="1",
            nnUNet_compile="false",
        )
        env.update(extra)
        return env

    def training_environment(self, epochs: int = 1, iterations: int = 2, **extra: str) -> dict[str, str]:
        """Environment for short CPU trainings: tiny budget, augmentation in the main process."""
        return self.environment(
            nnUNet_n_proc_DA="0",
            NNUNET_LOSSES_EPOCHS=str(epochs),
            NNUNET_LOSSES_ITERATIONS=str(iterations),
            NNUNET_LOSSES_VAL_ITERATIONS="1",
            **extra,
        )


def run_command(
    args: list[str], env: dict[str, str], timeout: float = 600, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with the end of its output."""
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise AssertionError(f"{' '.join(args)} failed with code {result.returncode}:\n{output}")
    return result


_ANNOUNCE_LOCK = threading.Lock()


def announce(config: pytest.Config, text: str) -> None:
    """Write a line to the terminal while pytest captures output, so that long fixtures say what they are doing.

    Safe from worker threads: one line at a time, with pytest's capture suspended while it is written.
    """
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with _ANNOUNCE_LOCK, capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(text)


@dataclass(frozen=True)
class PreparedDataset:
    workspace: NnUNetWorkspace
    dataset_id: int
    name: str
    plans: str

    @property
    def folder(self) -> Path:
        return self.workspace.preprocessed / self.name


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> NnUNetWorkspace:
    ws = NnUNetWorkspace(tmp_path_factory.mktemp("nnunet"))
    for folder in (ws.raw, ws.preprocessed, ws.results):
        folder.mkdir()
    env = ws.environment()
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_def_n_proc"):
        os.environ[key] = env[key]
    return ws


def prepare_cardiac(ws: NnUNetWorkspace, dataset_id: int, num_cases: int) -> PreparedDataset:
    """Raw synthetic cardiac data -> nnU-Net planning and preprocessing (2d, 3d_fullres) -> small plans -> maps."""
    from nnunet_losses.nnunet.configuration import load_configuration
    from nnunet_losses.nnunet.setup_maps import write_configuration_maps
    from nnunet_losses.nnunet.small_plans import make_small_plans

    folder = write_raw_dataset("cardiac", ws.raw, dataset_id, num_cases, seed=dataset_id, shape=(8, 64, 64))
    run_command(
        ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "2d", "3d_fullres", "-np", "2"], ws.environment()
    )
    make_small_plans(dataset_id, ("2d", "3d_fullres"), features=(8, 16, 32), batch_size=2)
    for configuration in ("2d", "3d_fullres"):
        write_configuration_maps(load_configuration(dataset_id, configuration, SMALL_PLANS), progress=False)
    return PreparedDataset(ws, dataset_id, folder.name, SMALL_PLANS)


@pytest.fixture(scope="session")
def cardiac(workspace, request) -> PreparedDataset:
    """Six 8x64x64 cardiac cases, preprocessed for 2d and 3d_fullres, small plans, maps written."""
    start = time.monotonic()
    announce(request.config, f"[fixture cardiac] nnU-Net test dataset {CARDIAC_ID}: 6 synthetic cases, planning and preprocessing (2d, 3d_fullres), small plans, maps ...")
    prepared = prepare_cardiac(workspace, CARDIAC_ID, 6)
    announce(request.config, f"[fixture cardiac] {prepared.name} ready ({time.monotonic() - start:.0f} s)")
    return prepared


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable

"""``nnunet-losses demo`` end to end, shrunk (5 cases, 1 seed, 1 epoch), in its own folders."""
from __future__ import annotations

import csv

import pytest

from conftest import run_command

pytestmark = pytest.mark.nnunet


def test_demo_runs_in_its_own_folders(workspace, tmp_path):
    users = {name: tmp_path / f"users_{name}" for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in users.values():
        folder.mkdir()
    env = workspace.environment(**{name: str(folder) for name, folder in users.items()})
    out = tmp_path / "demo"
    result = run_command(
        ["nnunet-losses", "demo", "--out", str(out), "--cases", "5", "--seeds", "1", "--epochs", "1", "--iterations", "2", "--device", "cpu"],
        env,
        timeout=900,
    )
    for number in range(1, 6):
        assert f"[{number}/5]" in result.stdout
    assert "Dice RV  Dice MYO   Dice LV" in result.stdout and "nnUNetTrainerRRW" in result.stdout
    assert (out / "cdf_study" / "cdf.png").is_file() and (out / "overlays.png").is_file()
    with open(out / "cdf_study" / "cdf_results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["trainer"] for row in rows} == {"nnUNetTrainerRWBoundary", "nnUNetTrainerRRW"}
    assert all(row["status"] == "done" for row in rows)
    assert all(not any(folder.iterdir()) for folder in users.values())  # the user's nnU-Net folders are untouched

"""``benchmarks/gpu_check.py --toy``: the GPU check's every step on the CPU at toy size, and the report it writes."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINERS = ("nnUNetTrainer", "nnUNetTrainerRRW", "nnUNetTrainerRWBoundary", "nnUNetTrainerRRWOnDevice", "nnUNetTrainerRWBoundaryOnDevice")
ON_DEVICE = {"nnUNetTrainerRRWOnDevice", "nnUNetTrainerRWBoundaryOnDevice"}


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """The rows (cells) of every table, under the last heading above it."""
    found: dict[str, list[list[str]]] = {}
    heading = ""
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not set(line) <= set("|-"):
            found.setdefault(heading, []).append([cell.strip() for cell in line.strip("|").split("|")])
    return {name: rows[1:] for name, rows in found.items()}  # without the header row


@pytest.mark.nnunet
def test_toy_run_writes_every_row_with_finite_losses(tmp_path: Path) -> None:
    output = tmp_path / "gpu_cpu_toy.md"
    command = [sys.executable, "benchmarks/gpu_check.py", "--toy", "--workdir", str(tmp_path / "work"), "--output", str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    report = tables(output.read_text())

    edt = next(rows for name, rows in report.items() if name.startswith("PyTorch EDT against SciPy"))
    assert sorted((row[0], row[1]) for row in edt) == sorted(
        (shape, min_plus) for shape in ("6x40x31", "4x17x24x13") for min_plus in ("fused", "chunked")
    )
    assert all(row[3] == "pass" and float(row[2]) < 1e-3 for row in edt), edt

    maps = next(rows for name, rows in report.items() if name.startswith("Device maps of one batch"))
    assert sorted((row[0], row[1]) for row in maps) == sorted(
        (batch, transform) for batch in ("2d 4x64x64", "3d_fullres 2x8x32x32") for transform in ("edt", "fused", "chunked")
    )
    assert all(float(row[2]) > 0 and math.isfinite(float(row[3])) for row in maps), maps

    for configuration in ("2d", "3d_fullres"):
        rows = {row[0]: row for row in report[configuration]}
        assert list(rows) == list(TRAINERS)
        assert rows["nnUNetTrainer"][2] == rows["nnUNetTrainer"][4] == "1.000x"
        for name, (_, iteration, versus, step, step_versus, maps_ms, share, peak, finite) in rows.items():
            assert float(iteration) > float(step) > 0 and versus.endswith("x") and step_versus.endswith("x")
            assert finite == "yes", (configuration, name, finite)
            assert peak == "-"  # no GPU memory on the CPU
            if name in ON_DEVICE:
                assert float(maps_ms) > 0
                assert re.fullmatch(r"\d+\.\d % \((meets|misses) <= 5 %\)", share), share
            else:
                assert maps_ms == share == "-"
    header = output.read_text().splitlines()[2]
    assert "AMP (nnU-Net's grad scaler): 2d off, 3d_fullres off" in header
    assert "nnU-Net's compile (`_do_i_compile`): 2d off, 3d_fullres off" in header

"""A finished run's result in one small file that can be committed: ``runs/<trainer>/<run>/result.json``.

nnU-Net's outputs of a run (checkpoints, predictions, ``summary.json``) are large and
stay out of version control; a study folder cloned elsewhere would then train every
finished run again. The result record keeps what the CDF reports read, so a run with
a record counts as finished (:func:`.runs.run_status`) wherever the record is::

    {"state": "done" | "diverged",
     "dice_mean": 0.97,                      # nnU-Net's foreground_mean Dice (0 for diverged)
     "dice_per_label": {"1": 0.98, ...},     # nnU-Net's mean.<label>.Dice (empty for diverged)
     "epochs": 40, "seconds": 181.2, "error": "", "recorded": "2026-12-02T06:10:00"}

It is written when an attempt ends with the run finished or diverged
(:meth:`.launch.ActiveRun.finish`, so also at the end of a Slurm job) and, for runs that
finished before records existed, when the reports are made. The git ignore rules of the
repository keep ``result.json`` and drop everything else of a run folder.

Per-case tables (``study compare``) need the validation predictions and therefore
nnU-Net's outputs; a run known only from its record is refused there with the reason.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from ..files import read_json, write_json
from .runs import RunPaths, divergence_summary, read_result


def completed_epochs(paths: RunPaths) -> int | None:
    """Epochs completed by a run, from its newest nnU-Net checkpoint (``current_epoch``)."""
    checkpoint = paths.checkpoint_final if paths.checkpoint_final.is_file() else paths.checkpoint_latest
    if not checkpoint.is_file():
        return None
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["current_epoch"])


def training_seconds(paths: RunPaths) -> float | None:
    """Wall-clock seconds of all attempts of a run (``attempts.json``)."""
    attempts = read_json(paths.attempts)
    if not isinstance(attempts, list) or not attempts:
        return None
    return round(sum(float(attempt.get("seconds", 0.0)) for attempt in attempts), 1)


def summary_dice(summary_file: Path) -> tuple[float, dict[str, float]]:
    """nnU-Net's ``summary.json``: ``foreground_mean.Dice`` and ``{label: mean.<label>.Dice}``."""
    summary = json.loads(Path(summary_file).read_text())
    per_label = {label: float(values["Dice"]) for label, values in summary.get("mean", {}).items() if "Dice" in values}
    return float(summary["foreground_mean"]["Dice"]), per_label


def result_from_outputs(paths: RunPaths) -> dict | None:
    """The record of a run from nnU-Net's outputs: ``summary.json`` when it finished, ``diverged.json`` when its
    loss became non-finite; ``None`` for any other run."""
    if paths.finished:
        dice_mean, per_label = summary_dice(paths.summary)
        state, epochs, error = "done", completed_epochs(paths), ""
    else:
        marker = read_json(paths.diverged_marker)
        if not isinstance(marker, dict):
            return None
        epoch = marker.get("epoch")
        state, dice_mean, per_label, error = "diverged", 0.0, {}, divergence_summary(marker)
        epochs = epoch if isinstance(epoch, int) else completed_epochs(paths)
    return {
        "state": state,
        "dice_mean": dice_mean,
        "dice_per_label": per_label,
        "epochs": epochs,
        "seconds": training_seconds(paths),
        "error": error,
        "recorded": datetime.now().isoformat(timespec="seconds"),
    }


def record_result(paths: RunPaths) -> dict | None:
    """Write the run's record from its nnU-Net outputs (if it finished or diverged); returns it."""
    record = result_from_outputs(paths)
    if record is not None:
        write_json(paths.result, record)
    return record


def run_result(paths: RunPaths) -> dict | None:
    """The record of a finished or diverged run: from nnU-Net's outputs where they are here (written to
    ``result.json`` if it is missing), else the committed record."""
    if paths.finished or paths.diverged_marker.is_file():
        return read_result(paths) or record_result(paths)
    return read_result(paths)


def dice_columns(record: Mapping, labels: Mapping[int, str]) -> dict[str, float]:
    """``dice_mean`` and ``dice_<name>`` per foreground class of a record (NaN where a class has no value;
    0 for every class of a diverged run)."""
    diverged = record["state"] == "diverged"
    per_label = record.get("dice_per_label", {})
    values = {"dice_mean": float(record["dice_mean"])}
    for label, name in labels.items():
        values[f"dice_{name}"] = 0.0 if diverged else float(per_label.get(str(label), math.nan))
    return values

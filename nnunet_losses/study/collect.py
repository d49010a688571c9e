"""Per-run results of a study, read from nnU-Net's own outputs, and the CSV files they go to.

The final validation Dice of a run is nnU-Net's: ``fold_X/validation/summary.json``,
written by ``perform_actual_validation`` (``nnunetv2.evaluation.evaluate_predictions``)
from the predicted validation cases and ``gt_segmentations``. ``foreground_mean.Dice``
is the mean over foreground classes of each class's mean Dice over the validation
cases, and ``mean.<label>.Dice`` is that class's mean — the per-model value of the
convergence CDF (region-wise loss paper §4.3-4.4).

Every run counts: a **diverged** run (its loss became non-finite, ``diverged.json``, see
:mod:`.runs`) is a model that did not converge and enters the results at Dice 0 — mean
and every class — flagged by ``status = diverged``. nnU-Net never validated it, and a
network with non-finite weights predicts nothing usable, so 0 is its score, not a
stand-in for a missing value. Failed runs (infrastructure) have no Dice and are left out.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..nnunet.configuration import ConfigurationError
from .runs import RunPaths, RunStatus, State, read_json

CDF_RESULTS = "cdf_results.csv"


def foreground_label_names(dataset_json: Mapping) -> dict[int, str]:
    """``{label value: name}`` of the foreground labels of a dataset.json (background and ignore excluded)."""
    labels = dataset_json["labels"]
    if any(isinstance(value, (list, tuple)) for value in labels.values()):
        raise ConfigurationError("region-based datasets (labels given as lists of values) are not supported by the studies")
    return {int(value): name for name, value in sorted(labels.items(), key=lambda item: int(item[1])) if int(value) != 0 and name != "ignore"}


def summary_dice(summary_file: Path, labels: Mapping[int, str]) -> dict[str, float]:
    """``dice_mean`` and ``dice_<name>`` per foreground class from nnU-Net's ``summary.json`` (NaN if absent)."""
    summary = json.loads(Path(summary_file).read_text())
    per_class = summary.get("mean", {})
    values = {"dice_mean": float(summary["foreground_mean"]["Dice"])}
    for label, name in labels.items():
        values[f"dice_{name}"] = float(per_class.get(str(label), {}).get("Dice", math.nan))
    return values


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


def cdf_rows(statuses: Iterable[RunStatus], labels: Mapping[int, str]) -> list[dict]:
    """One row per run: trainer, seed, fold, state, Dice, epochs, seconds, error.

    Dice: nnU-Net's for done runs, 0.0 (mean and each class) for diverged runs, empty
    otherwise. Epochs: from the newest checkpoint; for a diverged run, the epochs it
    completed before the one its loss diverged in. Error: the one-line reason of a
    failed or diverged run.
    """
    rows = []
    for status in statuses:
        epochs = completed_epochs(status.paths)
        if status.state is State.DONE:
            dice = summary_dice(status.paths.summary, labels)
        elif status.state is State.DIVERGED:
            dice = {"dice_mean": 0.0, **{f"dice_{name}": 0.0 for name in labels.values()}}
            marker = read_json(status.paths.diverged_marker)
            epochs = int(marker["epoch"]) if isinstance(marker, dict) and isinstance(marker.get("epoch"), int) else epochs
        else:
            dice = {"dice_mean": None, **{f"dice_{name}": None for name in labels.values()}}
        rows.append(
            {
                "trainer": status.run.trainer,
                "seed": status.run.seed,
                "fold": status.run.fold,
                "status": status.state.value,
                **dice,
                "epochs": epochs,
                "seconds": training_seconds(status.paths),
                "error": status.detail if status.state in (State.FAILED, State.DIVERGED) else "",
            }
        )
    return rows


def write_csv(rows: Sequence[Mapping], path: Path, columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (``None`` -> empty cell), atomically."""
    columns = list(columns or (rows[0].keys() if rows else []))
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    temporary.replace(path)
    return path

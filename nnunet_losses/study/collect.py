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
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..files import write_atomically
from ..nnunet.configuration import require_label_based
from .results import completed_epochs, dice_columns, run_result, training_seconds
from .runs import RunStatus, State

CDF_RESULTS = "cdf_results.csv"


def foreground_label_names(dataset_json: Mapping) -> dict[int, str]:
    """``{label value: name}`` of the foreground labels of a dataset.json (background and ignore excluded).

    Region-based datasets are refused (:func:`nnunet_losses.nnunet.configuration.require_label_based`);
    a label given as a one-value list, which nnU-Net reads as that value, is that value.
    """
    labels = dataset_json["labels"]
    require_label_based(labels, dataset_json.get("name", "this dataset"))
    values = {name: int(value[0] if isinstance(value, (list, tuple)) else value) for name, value in labels.items()}
    return {value: name for name, value in sorted(values.items(), key=lambda item: item[1]) if value != 0 and name != "ignore"}


def cdf_rows(statuses: Iterable[RunStatus], labels: Mapping[int, str]) -> list[dict]:
    """One row per run: trainer, seed, fold, state, Dice, epochs, seconds, error.

    Done and diverged runs come from their result record (:mod:`.results`; written from
    nnU-Net's outputs where it is missing): nnU-Net's Dice for done runs, 0.0 (mean and
    each class) for diverged runs, whose epochs are those completed before the one its
    loss diverged in. Other runs have empty Dice, the epochs of their newest checkpoint
    and, when failed, the one-line reason.
    """
    rows = []
    for status in statuses:
        record = run_result(status.paths) if status.state in (State.DONE, State.DIVERGED) else None
        if record is not None:
            dice, epochs, seconds, error = dice_columns(record, labels), record.get("epochs"), record.get("seconds"), record.get("error", "")
        else:
            dice = {"dice_mean": None, **{f"dice_{name}": None for name in labels.values()}}
            epochs, seconds = completed_epochs(status.paths), training_seconds(status.paths)
            error = status.detail if status.state is State.FAILED else ""
        rows.append(
            {
                "trainer": status.run.trainer,
                "seed": status.run.seed,
                "fold": status.run.fold,
                "status": status.state.value,
                **dice,
                "epochs": epochs,
                "seconds": seconds,
                "error": error,
            }
        )
    return rows


def write_csv(rows: Sequence[Mapping], path: Path, columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (``None`` -> empty cell), atomically."""
    columns = list(columns or (rows[0].keys() if rows else []))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    return write_atomically(path, text.getvalue().encode())

"""The result files of a study, written from the finished runs after every invocation.

CDF study: ``cdf_results.csv`` (one row per run, every state) and ``cdf.png``/``cdf.pdf``
(the done runs and the diverged ones at Dice 0; the legend says how many diverged per
trainer, the title how many failed or did not finish — those are not in the curves);
with panels, also ``cdf_panels.png``/``.pdf`` (one panel per group of trainers).
With a control trainer, also ``cdf_summary.csv`` and ``cdf_summary.md``: per trainer the
fraction of runs that converged, judged against the control's median (:mod:`.convergence`),
and the plot marks that threshold.

Comparison: ``compare_cases.csv`` (one row per trainer and validation case, with the
run's status and the ``missed_<class>`` flags), ``compare_summary.csv`` and
``compare.md`` (mean ± std per trainer and metric, how many cases took the worst-case
distance, paired tests against the baseline, see :mod:`.compare`) and
``compare_<metric>.png``. Diverged runs are in all of them, scored as predicting
background everywhere on their fold's validation cases (:mod:`.case_metrics`).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..files import write_atomically
from .case_metrics import diverged_case_metrics, metric_names, missed_names, validation_case_metrics
from .collect import CDF_RESULTS, cdf_rows, foreground_label_names, write_csv
from .compare import box_plots, markdown_table, summarise, summary_rows
from .convergence import DEFAULT_TOLERANCE, convergence_csv_rows, convergence_markdown, convergence_rows, convergence_threshold
from .plots import plot_cdf
from ..nnunet.configuration import ConfigurationError
from .runs import RunStatus, State
from .spec import StudySpec

COMPARE_CASES = "compare_cases.csv"
COMPARE_SUMMARY = "compare_summary.csv"
COMPARE_REPORT = "compare.md"
CDF_SUMMARY = "cdf_summary.csv"
CDF_SUMMARY_REPORT = "cdf_summary.md"


def _budget(spec: StudySpec) -> str:
    epochs = f"{spec.epochs} epoch{'s' if spec.epochs != 1 else ''}" if spec.epochs is not None else "nnU-Net's default epochs"
    extra = [f"{value} {name}" for value, name in ((spec.iterations, "iterations/epoch"), (spec.val_iterations, "val. iterations/epoch")) if value is not None]
    return ", ".join([epochs, *extra])


def write_cdf_report(
    spec: StudySpec,
    study_dir: Path,
    statuses: Sequence[RunStatus],
    dataset_folder: Path,
    control: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    panels: Mapping[str, Sequence[str]] | None = None,
) -> list[Path]:
    """``cdf_results.csv``, ``cdf.png`` and ``cdf.pdf``; with ``control`` (once it has a counted run) the convergence summary too.

    ``panels`` (panel title -> trainers): also ``cdf_panels.png``/``.pdf``, one panel per
    group, the control's curve first in each.
    """
    labels = foreground_label_names(json.loads((dataset_folder / "dataset.json").read_text()))
    rows = cdf_rows(statuses, labels)
    written = [write_csv(rows, study_dir / CDF_RESULTS)]
    counted = (State.DONE.value, State.DIVERGED.value)
    dice = {trainer: [row["dice_mean"] for row in rows if row["trainer"] == trainer and row["status"] in counted] for trainer in spec.trainers}
    diverged = Counter(row["trainer"] for row in rows if row["status"] == State.DIVERGED.value)
    failed = Counter(row["trainer"] for row in rows if row["status"] == State.FAILED.value)
    unfinished = sum(row["status"] not in (*counted, State.FAILED.value) for row in rows)
    folds = ", ".join(map(str, spec.folds))
    title = f"{spec.dataset} {spec.configuration}, fold {folds}\n{spec.seeds_description()}; {_budget(spec)}"
    threshold = None
    if control is not None and dice[control]:
        threshold = convergence_threshold(dice[control], tolerance)
        summary = convergence_rows(dice, diverged, threshold)
        written.append(write_csv(convergence_csv_rows(summary), study_dir / CDF_SUMMARY))
        report = study_dir / CDF_SUMMARY_REPORT
        write_atomically(report, f"# {spec.dataset} {spec.configuration}: convergence\n\n{spec.seeds_description()}; {_budget(spec)}.\n\n" + convergence_markdown(summary, control, threshold, tolerance))
        written.append(report)
    marker = None if threshold is None else (threshold, f"converged: Dice >= control median - {tolerance:g}")
    written += plot_cdf(dice, dict(diverged), dict(failed), study_dir / "cdf", title, unfinished, marker)
    if panels:
        with_control = {name: list(dict.fromkeys([*([control] if control else []), *trainers])) for name, trainers in panels.items()}
        written += plot_cdf(dice, dict(diverged), dict(failed), study_dir / "cdf_panels", title, unfinished, marker, with_control)
    return written


def write_compare_report(
    spec: StudySpec, study_dir: Path, statuses: Sequence[RunStatus], dataset_folder: Path, baseline: str, n_permutations: int = 10000
) -> list[Path]:
    """Per-case metrics of the done and diverged runs, their summary with paired tests and worst-case counts, and box plots.

    Refuses (``ConfigurationError``) a done run known only from its ``result.json``: its predictions are not here.
    """
    for status in statuses:
        if status.state is State.DONE and not status.paths.finished:
            raise ConfigurationError(
                f"{status.run} is known here only from its result.json; the compare tables need its validation predictions "
                f"(nnU-Net's outputs in {status.paths.output_folder}): copy them there, or delete result.json to train the run again"
            )
    dataset_json = json.loads((dataset_folder / "dataset.json").read_text())
    labels = foreground_label_names(dataset_json)
    ignore = dataset_json["labels"].get("ignore")
    metrics = metric_names(labels)
    splits = json.loads((dataset_folder / "splits_final.json").read_text())
    gt_folder = dataset_folder / "gt_segmentations"
    cases: dict[str, dict[str, dict[str, float]]] = {trainer: {} for trainer in spec.trainers}
    rows = []
    for status in statuses:
        if status.state is State.DONE:
            per_case = validation_case_metrics(status.paths.validation, gt_folder, dataset_json["file_ending"], labels, ignore)
        elif status.state is State.DIVERGED:
            per_case = diverged_case_metrics(gt_folder, dataset_json["file_ending"], splits[status.run.fold]["val"], labels, ignore)
        else:
            continue
        cases[status.run.trainer].update(per_case)
        rows += [{"trainer": status.run.trainer, "fold": status.run.fold, "status": status.state.value, "case": case, **values} for case, values in per_case.items()]
    written = [write_csv(rows, study_dir / COMPARE_CASES, ["trainer", "fold", "status", "case", *metrics, *missed_names(labels)])]
    summaries = summarise(cases, metrics, baseline, n_permutations)
    written.append(write_csv(summary_rows(summaries, baseline), study_dir / COMPARE_SUMMARY))
    counted = (State.DONE, State.DIVERGED)
    unfinished = [status for status in statuses if status.state not in counted]
    diverged = [status for status in statuses if status.state is State.DIVERGED]
    header = [
        f"# {spec.dataset} {spec.configuration}: {', '.join(spec.trainers)}",
        "",
        f"Folds {', '.join(map(str, spec.folds))}, seed {', '.join(map(str, spec.seeds))}, {_budget(spec)}; "
        f"{len(statuses) - len(unfinished)} of {len(statuses)} runs counted"
        + (f"; diverged, scored as predicting background everywhere: {', '.join(str(s.run) for s in diverged)}" if diverged else "")
        + (f" (not included: {', '.join(f'{s.run} [{s.state.value}]' for s in unfinished)})" if unfinished else "")
        + ".",
        "",
        "Validation cases of all folds pooled; mean ± sample std (n cases). HD95, ASSD and d3d (centroid distance d_3D) "
        "in mm; delta = |N_GT - N_pred| connected components of the foreground; `_mean` = mean over foreground classes. "
        "Where exactly one of prediction and reference contains a class, its HD95 and ASSD are the image diagonal in mm "
        "(worst case; `k worst case` = cases it applied to); where neither does, its Dice is left out and its distances are 0.",
        "",
        f"p_perm: paired two-sided sign-flip permutation test ({n_permutations} permutations); "
        f"p_t: one-tailed paired t-test, H1: the trainer is better than the baseline {baseline} "
        "(higher Dice, lower distances and delta); pairs by case id; * p < 0.05.",
        "",
    ]
    report = study_dir / COMPARE_REPORT
    write_atomically(report, "\n".join(header) + "\n" + markdown_table(summaries, spec.trainers, baseline) + "\n")
    written.append(report)
    return written + box_plots(cases, metrics, study_dir, f"{spec.dataset} {spec.configuration}, folds {', '.join(map(str, spec.folds))}")

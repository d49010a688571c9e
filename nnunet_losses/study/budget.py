"""Converged fraction against training budget: the same convergence protocol at several budgets.

A budget test (see ``docs/studies.md#budget-test``) trains the same trainers on the same
data, plans and optimiser at several budgets, one ``study cdf`` folder per budget. Each
folder is judged on its own: its threshold is **its own** control's median Dice minus the
tolerance (:mod:`.convergence`), since the plateau a loss known to work reaches rises with
the budget. Per budget and trainer: ``k / n`` converged runs with the exact
(Clopper-Pearson) 95 % interval. Per trainer, each budget is compared with the first one
(the smallest) by the two-sided Fisher exact test of the 2x2 table
``[[k_1, n_1 - k_1], [k_b, n_b - k_b]]``: the probability, under equal converged
fractions and the margins fixed, of a table at most as likely as the observed one
(hypergeometric law).

Reads only the committed ``study.json`` and ``cdf_results.csv`` of each folder, so it runs
on a fresh clone without the run folders.
"""
from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import fisher_exact

from ..files import write_atomically
from .collect import CDF_RESULTS, write_csv
from .convergence import DEFAULT_TOLERANCE, ConvergenceRow, convergence_rows, convergence_threshold
from .plots import plot_budget
from .spec import StudySpec, load_spec

BUDGET_SUMMARY = "budget_summary.csv"
BUDGET_REPORT = "budget_summary.md"
BUDGET_FIGURE = "budget"


@dataclass(frozen=True)
class BudgetStudy:
    """One budget's study: its folder, training iterations, threshold and one convergence row per trainer."""

    study_dir: Path
    spec: StudySpec
    iterations: int
    threshold: float
    rows: dict[str, ConvergenceRow]


@dataclass(frozen=True)
class BudgetComparison:
    """One trainer at one budget against the first budget: Fisher's exact test of the converged counts."""

    trainer: str
    iterations: int
    converged: int
    n: int
    base_converged: int
    base_n: int
    p_value: float


def training_iterations(spec: StudySpec) -> int:
    """Epochs x iterations per epoch; ``ValueError`` for a study without an explicit budget."""
    if spec.epochs is None or spec.iterations is None:
        raise ValueError(f"{spec.dataset} {spec.configuration}: the study does not fix epochs and iterations per epoch, so it has no budget to compare")
    return spec.epochs * spec.iterations


def counted_dice(study_dir: Path) -> tuple[dict[str, list[float]], Counter]:
    """Per trainer, the Dice of the counted runs (done; diverged at Dice 0) of ``cdf_results.csv``, and the diverged counts."""
    path = study_dir / CDF_RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the study (nnunet-losses study cdf ... --out {study_dir}) first")
    dice: dict[str, list[float]] = {}
    diverged: Counter = Counter()
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["status"] in ("done", "diverged"):
                dice.setdefault(row["trainer"], []).append(float(row["dice_mean"]))
                diverged[row["trainer"]] += row["status"] == "diverged"
    return dice, diverged


def budget_study(study_dir: Path, trainers: Sequence[str], control: str, tolerance: float = DEFAULT_TOLERANCE) -> BudgetStudy:
    """One folder judged against its own control; ``ValueError`` when a trainer has no counted run there."""
    dice, diverged = counted_dice(study_dir)
    missing = [trainer for trainer in (control, *trainers) if not dice.get(trainer)]
    if missing:
        raise ValueError(f"{study_dir}: no counted run of {', '.join(missing)} in {CDF_RESULTS}")
    threshold = convergence_threshold(dice[control], tolerance)
    ordered = {trainer: dice[trainer] for trainer in dict.fromkeys([control, *trainers])}
    rows = {row.trainer: row for row in convergence_rows(ordered, diverged, threshold)}
    spec = load_spec(study_dir)
    return BudgetStudy(study_dir, spec, training_iterations(spec), threshold, rows)


def budget_studies(study_dirs: Sequence[Path], trainers: Sequence[str], control: str, tolerance: float = DEFAULT_TOLERANCE) -> list[BudgetStudy]:
    """Every folder as a :class:`BudgetStudy`, sorted by budget.

    ``ValueError`` for two folders of one budget, or folders of different datasets,
    configurations or plans (a budget test changes the budget only).
    """
    studies = sorted((budget_study(Path(path), trainers, control, tolerance) for path in study_dirs), key=lambda study: study.iterations)
    settings = {(study.spec.dataset, study.spec.configuration, study.spec.plans) for study in studies}
    if len(settings) > 1:
        raise ValueError(f"the studies differ in more than their budget (dataset, configuration, plans): {sorted(settings)}")
    budgets = [study.iterations for study in studies]
    if len(set(budgets)) != len(budgets):
        raise ValueError(f"two studies have the same budget ({budgets} iterations): a budget test compares different budgets")
    return studies


def budget_comparisons(studies: Sequence[BudgetStudy]) -> list[BudgetComparison]:
    """For every trainer and every budget after the first, Fisher's two-sided exact test against the first budget."""
    base = studies[0]
    comparisons = []
    for study in studies[1:]:
        for trainer, row in study.rows.items():
            first = base.rows[trainer]
            table = [[first.converged, first.n - first.converged], [row.converged, row.n - row.converged]]
            p_value = float(fisher_exact(table, alternative="two-sided").pvalue)
            comparisons.append(BudgetComparison(trainer, study.iterations, row.converged, row.n, first.converged, first.n, p_value))
    return comparisons


def budget_markdown(studies: Sequence[BudgetStudy], comparisons: Sequence[BudgetComparison], control: str, tolerance: float) -> str:
    """The converged counts per budget with their intervals, then the Fisher tests against the first budget."""
    lines = [
        f"Each budget's threshold is its own control's ({control}) median Dice minus {tolerance:g}. "
        "95 % interval: exact (Clopper-Pearson) binomial. Fisher: two-sided exact test of the converged counts against "
        f"the first budget ({studies[0].iterations} iterations).",
        "",
        "| trainer | iterations | threshold | converged | 95 % interval | median Dice | Fisher p (vs first budget) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    tests = {(test.trainer, test.iterations): test for test in comparisons}
    for trainer in studies[0].rows:
        for study in studies:
            row = study.rows[trainer]
            test = tests.get((trainer, study.iterations))
            lines.append(
                f"| {trainer}{' (control)' if trainer == control else ''} | {study.iterations} | {study.threshold:.3f} | "
                f"{row.converged}/{row.n} = {row.converged_fraction:.2f} | {row.ci_low:.2f}-{row.ci_high:.2f} | {row.median:.3f} | "
                f"{'—' if test is None else f'{test.p_value:.2g}'} |"
            )
    return "\n".join(lines) + "\n"


def budget_csv_rows(studies: Sequence[BudgetStudy], comparisons: Sequence[BudgetComparison]) -> list[dict]:
    tests = {(test.trainer, test.iterations): test.p_value for test in comparisons}
    return [
        {"trainer": trainer, "iterations": study.iterations, "study": study.study_dir.name, "threshold": study.threshold,
         "n": row.n, "converged": row.converged, "converged_fraction": row.converged_fraction, "ci_low": row.ci_low,
         "ci_high": row.ci_high, "median": row.median, "fisher_p_vs_first": tests.get((trainer, study.iterations))}
        for study in studies for trainer, row in study.rows.items()
    ]  # fmt: skip


def write_budget_report(
    study_dirs: Sequence[Path], trainers: Sequence[str], control: str, out: Path, tolerance: float = DEFAULT_TOLERANCE
) -> list[Path]:
    """``budget_summary.csv``/``.md`` and ``budget.png``/``.pdf`` in ``out``, from the studies' committed result files."""
    studies = budget_studies(study_dirs, trainers, control, tolerance)
    if len(studies) < 2:
        raise ValueError("a budget test needs at least two studies of different budgets")
    comparisons = budget_comparisons(studies)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(budget_csv_rows(studies, comparisons), out / BUDGET_SUMMARY)]
    names = ", ".join(f"{study.study_dir.name} ({study.iterations})" for study in studies)
    write_atomically(out / BUDGET_REPORT, f"# Converged fraction against budget\n\nStudies (iterations): {names}.\n\n" + budget_markdown(studies, comparisons, control, tolerance))
    written.append(out / BUDGET_REPORT)
    title = f"converged fraction against budget (threshold: each budget's control median - {tolerance:g})"
    budgets = [study.iterations for study in studies]
    written += plot_budget(budgets, {trainer: [study.rows[trainer] for study in studies] for trainer in studies[0].rows}, out / BUDGET_FIGURE, title)
    return written

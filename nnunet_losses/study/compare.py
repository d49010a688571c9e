"""Cross-validation comparison of trainers: per-case metrics, paired tests against a baseline.

Each trainer is trained on each fold; every validation case is scored once per trainer
(:mod:`.case_metrics`), pooling the folds. For each trainer and metric the table gives
mean ± sample standard deviation (ddof = 1) over cases. Each non-baseline trainer is
compared with the baseline on the cases both have (paired by case id):

* ``p_permutation``: paired two-sided sign-flip permutation test on the absolute mean
  difference, 10000 permutations by default (region-wise loss paper §4.1;
  :func:`~nnunet_losses.metrics.paired_permutation_test`);
* ``p_t_test``: one-tailed paired t-test with H1 "the trainer is better than the
  baseline", i.e. mean(trainer - baseline) > 0 for Dice and < 0 for HD95, ASSD, d_3D and
  Delta (centroid-distance loss paper; :func:`~nnunet_losses.metrics.paired_t_test_one_tailed`).

p < 0.05 is marked with ``*``. Pairs where either value is undefined (NaN) are dropped
by the tests; with fewer than 2 pairs left no p-value is given.

``n_worst_case`` (HD95 and ASSD only): of a trainer's ``n`` cases, how many took the
worst-case distance, the image diagonal in mm, because exactly one of prediction and
reference contained the class (``_mean``: any class); see :mod:`.case_metrics` and
``docs/studies.md#comparison-study``.
"""
from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..metrics import paired_permutation_test, paired_t_test_one_tailed
from .case_metrics import higher_is_better, worst_case_applied
from .plots import plot_boxes

SIGNIFICANCE = 0.05
CaseTable = Mapping[str, Mapping[str, Mapping[str, float]]]
"""``{trainer: {case id: {metric: value}}}``."""


@dataclass(frozen=True)
class MetricSummary:
    """One trainer's statistics on one metric; the p-values are ``None`` for the baseline."""

    trainer: str
    metric: str
    n: int
    mean: float
    std: float
    n_pairs: int | None = None
    p_permutation: float | None = None
    p_t_test: float | None = None
    t_alternative: str | None = None
    n_worst_case: int | None = None


def _mean_std(values: np.ndarray) -> tuple[int, float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0, math.nan, math.nan
    return finite.size, float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else math.nan


def summarise(cases: CaseTable, metrics: Sequence[str], baseline: str, n_permutations: int = 10000, seed: int = 0) -> list[MetricSummary]:
    """Statistics of every trainer on every metric, with paired tests against ``baseline``."""
    if baseline not in cases:
        raise ValueError(f"baseline {baseline!r} has no cases; trainers with cases: {list(cases)}")
    summaries = []
    for metric in metrics:
        for trainer, by_case in cases.items():
            n, mean, std = _mean_std(np.array([values[metric] for values in by_case.values()], dtype=float))
            flags = [worst_case_applied(metric, values) for values in by_case.values()]
            worst = None if any(flag is None for flag in flags) else sum(flags)
            if trainer == baseline:
                summaries.append(MetricSummary(trainer, metric, n, mean, std, n_worst_case=worst))
                continue
            common = sorted(set(by_case) & set(cases[baseline]))
            a = np.array([by_case[case][metric] for case in common], dtype=float)
            b = np.array([cases[baseline][case][metric] for case in common], dtype=float)
            alternative = "greater" if higher_is_better(metric) else "less"
            try:
                permutation = paired_permutation_test(a, b, n_permutations=n_permutations, seed=seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # identical differences: t undefined
                    t_test = paired_t_test_one_tailed(a, b, alternative=alternative)
            except ValueError:  # fewer than 2 complete pairs
                pairs = int(np.sum(np.isfinite(a - b)))
                summaries.append(MetricSummary(trainer, metric, n, mean, std, pairs, None, None, alternative, worst))
                continue
            pairs = len(common) - permutation.n_dropped
            summaries.append(MetricSummary(trainer, metric, n, mean, std, pairs, permutation.p_value, t_test.p_value, alternative, worst))
    return summaries


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "nan"
    return f"{value:.3g}{'*' if value < SIGNIFICANCE else ''}"


def markdown_table(summaries: Sequence[MetricSummary], trainers: Sequence[str], baseline: str) -> str:
    """Rows = metrics, columns = trainers; cells ``mean ± std`` and, against the baseline, both p-values."""
    cell = {(s.metric, s.trainer): s for s in summaries}
    metrics = list(dict.fromkeys(s.metric for s in summaries))
    header = ["metric", *[f"{t} (baseline)" if t == baseline else t for t in trainers]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in metrics:
        row = [metric]
        for trainer in trainers:
            s = cell.get((metric, trainer))
            if s is None:
                row.append("")
                continue
            worst = f", {s.n_worst_case} worst case" if s.n_worst_case else ""
            text = f"{s.mean:.4g} ± {s.std:.3g} (n={s.n}{worst})"
            if trainer != baseline:
                text += f"; p_perm={_p(s.p_permutation)}, p_t={_p(s.p_t_test)} ({s.n_pairs} pairs)"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary_rows(summaries: Sequence[MetricSummary], baseline: str) -> list[dict]:
    return [{**asdict(s), "baseline": baseline} for s in summaries]


def box_plots(cases: CaseTable, metrics: Sequence[str], study_dir: Path, title: str) -> list[Path]:
    """``compare_<metric>.png`` for every metric, one box per trainer."""
    paths = []
    for metric in metrics:
        values = {trainer: [v[metric] for v in by_case.values()] for trainer, by_case in cases.items()}
        unit = "" if metric.startswith(("dice", "delta")) else " (mm)"
        safe = re.sub(r"[^\w.-]+", "_", metric)
        paths.append(plot_boxes(values, f"{metric}{unit}", study_dir / f"compare_{safe}.png", title))
    return paths

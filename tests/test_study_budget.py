"""``study budget``: converged fractions per budget, each against its own control, and Fisher's exact test.

Independent references: Fisher's two-sided p summed by hand from the hypergeometric law
(``math.comb``), the Clopper-Pearson bounds of a table with k = 0 and k = n in closed form.
"""
from __future__ import annotations

import csv
import json
from math import comb
from pathlib import Path

import numpy as np
import pytest

from nnunet_losses.study.budget import budget_comparisons, budget_studies, write_budget_report
from nnunet_losses.study.cli import main
from nnunet_losses.study.spec import STUDY_FILE, StudySpec

CONTROL, A, B = "Control", "LossA", "LossB"


def write_study(folder: Path, epochs: int, dice: dict[str, list[float]], diverged: dict[str, int] | None = None, plans: str = "P") -> Path:
    """A finished cdf study folder: study.json and cdf_results.csv with the given Dice (plus diverged runs at 0, one failed run)."""
    folder.mkdir(parents=True)
    spec = StudySpec("cdf", "Dataset001_X", "2d", plans, tuple(dice), (0,), (0,), epochs, 10, 2)
    (folder / STUDY_FILE).write_text(json.dumps(spec.to_json()))
    with open(folder / "cdf_results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["trainer", "seed", "fold", "status", "dice_mean"])
        writer.writeheader()
        for trainer, values in dice.items():
            for seed, value in enumerate(values):
                writer.writerow({"trainer": trainer, "seed": seed, "fold": 0, "status": "done", "dice_mean": value})
            for seed in range((diverged or {}).get(trainer, 0)):
                writer.writerow({"trainer": trainer, "seed": 100 + seed, "fold": 0, "status": "diverged", "dice_mean": 0.0})
            writer.writerow({"trainer": trainer, "seed": 999, "fold": 0, "status": "failed", "dice_mean": ""})
    return folder


def fisher_two_sided_by_hand(a: int, b: int, c: int, d: int) -> float:
    """Sum of the hypergeometric probabilities of the tables with the margins of [[a, b], [c, d]] no likelier than it."""
    row, column, total = a + b, a + c, a + b + c + d

    def probability(x: int) -> float:
        return comb(column, x) * comb(total - column, row - x) / comb(total, row)

    observed = probability(a)
    support = range(max(0, row + column - total), min(row, column) + 1)
    return sum(p for p in (probability(x) for x in support) if p <= observed * (1 + 1e-7))


@pytest.fixture
def two_budgets(tmp_path: Path) -> tuple[Path, Path]:
    # budget 1 (100 iterations): control median 0.90 -> threshold 0.85; A: 2 of 5 converge; B: 0 of 4 (+1 diverged).
    small = write_study(tmp_path / "small", 10, {CONTROL: [0.88, 0.90, 0.91], A: [0.86, 0.855, 0.84, 0.2, 0.5], B: [0.5, 0.6, 0.84, 0.1]}, {B: 1})
    # budget 3 (300 iterations): control median 0.95 -> threshold 0.90; A: 5 of 5 (0.86 of budget 1 would not count); B: 1 of 5.
    large = write_study(tmp_path / "large", 30, {CONTROL: [0.96, 0.95, 0.94], A: [0.905, 0.93, 0.95, 0.91, 0.97], B: [0.5, 0.91, 0.3, 0.2, 0.1]})
    return small, large


def test_each_budget_is_judged_against_its_own_control(two_budgets):
    studies = budget_studies(list(reversed(two_budgets)), [A, B], CONTROL)
    assert [study.iterations for study in studies] == [100, 300]  # sorted by budget, whatever the order given
    assert [study.threshold for study in studies] == pytest.approx([0.85, 0.90])
    small, large = studies
    assert list(small.rows) == [CONTROL, A, B]
    assert (small.rows[A].converged, small.rows[A].n) == (2, 5)
    assert (small.rows[B].converged, small.rows[B].n, small.rows[B].diverged) == (0, 5, 1)  # the diverged run counts, the failed one not
    assert (large.rows[A].converged, large.rows[B].converged, large.rows[CONTROL].converged) == (5, 1, 3)
    # Clopper-Pearson at k = 0 and k = n in closed form: [0, 1 - 0.025^(1/n)] and [0.025^(1/n), 1].
    assert small.rows[B].ci_low == 0 and small.rows[B].ci_high == pytest.approx(1 - 0.025 ** (1 / 5))
    assert large.rows[A].ci_low == pytest.approx(0.025 ** (1 / 5)) and large.rows[A].ci_high == 1


def test_fisher_exact_test_against_the_first_budget_equals_the_hypergeometric_sum(two_budgets):
    tests = {test.trainer: test for test in budget_comparisons(budget_studies(two_budgets, [A, B], CONTROL))}
    assert sorted(tests) == [CONTROL, A, B]
    assert (tests[A].base_converged, tests[A].base_n, tests[A].converged, tests[A].n) == (2, 5, 5, 5)
    assert tests[A].p_value == pytest.approx(fisher_two_sided_by_hand(2, 3, 5, 0), rel=1e-9)
    assert tests[A].p_value == pytest.approx(1 / 6, rel=1e-9)  # (C(7,2) C(3,3) + C(7,5) C(3,0)) / C(10,5) = 42 / 252
    assert tests[B].p_value == pytest.approx(fisher_two_sided_by_hand(0, 5, 1, 4), rel=1e-9) and tests[B].p_value == 1.0
    assert tests[CONTROL].p_value == 1.0


def test_budget_report_files_and_table(two_budgets, tmp_path):
    out = tmp_path / "report"
    written = write_budget_report(two_budgets, [A, B], CONTROL, out)
    assert sorted(path.name for path in written) == ["budget.pdf", "budget.png", "budget_summary.csv", "budget_summary.md"]
    assert (out / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "budget_summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["trainer"], row["iterations"], row["converged"], row["n"]) for row in rows] == [
        (CONTROL, "100", "3", "3"), (A, "100", "2", "5"), (B, "100", "0", "5"),
        (CONTROL, "300", "3", "3"), (A, "300", "5", "5"), (B, "300", "1", "5"),
    ]  # fmt: skip
    assert rows[1]["fisher_p_vs_first"] == "" and float(rows[4]["fisher_p_vs_first"]) == pytest.approx(1 / 6)
    table = (out / "budget_summary.md").read_text()
    assert "| LossA | 300 | 0.900 | 5/5 = 1.00 | 0.48-1.00 | 0.930 | 0.17 |" in table
    assert "| LossA | 100 | 0.850 | 2/5 = 0.40 | 0.05-0.85 | 0.840 | — |" in table


def test_budget_command_refuses_what_is_not_a_budget_test(two_budgets, tmp_path, capsys):
    small, large = two_budgets
    other_plans = write_study(tmp_path / "other_plans", 20, {CONTROL: [0.9], A: [0.9], B: [0.9]}, plans="Q")
    same_budget = write_study(tmp_path / "same_budget", 10, {CONTROL: [0.9], A: [0.9], B: [0.9]})
    no_control = write_study(tmp_path / "no_control", 50, {CONTROL: [], A: [0.9], B: [0.9]})
    cases = [
        ([small, other_plans], "differ in more than their budget"),
        ([small, same_budget], "same budget"),
        ([small, no_control], "no counted run of Control"),
        ([small, tmp_path / "missing"], "cdf_results.csv does not exist"),
        ([small], "at least two studies"),
    ]
    for folders, message in cases:
        code = main(["budget", *map(str, folders), "--control", CONTROL, "--trainers", A, B, "--out", str(tmp_path / "never")])
        assert code == 1 and message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    assert main(["budget", str(small), str(large), "--control", CONTROL, "--trainers", A, "--out", str(tmp_path / "ok")]) == 0
    assert "budget_summary.md" in capsys.readouterr().out
    assert np.array_equal(sorted(p.name for p in (tmp_path / "ok").iterdir()), ["budget.pdf", "budget.png", "budget_summary.csv", "budget_summary.md"])

"""Every command in the README is checked: it exists, its options are accepted, its files exist.

Each README command line is parsed and validated against the real argument parsers (ours,
and nnU-Net's help texts); the commands' effects are covered by the other tests
(setup_maps, trainers, studies, the demo). The CPU workflow is also run as written, from
planning to ``nnUNetv2_predict``'s output, on a small dataset, and every figure of the
convergence study is recomputed from the committed ``studies/*/cdf_results.csv``.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from nnunet_losses import cli, demo
from nnunet_losses.nnunet import setup_maps, small_plans
from nnunet_losses.nnunet.preflight import package_trainer_names
from nnunet_losses.nnunet.run_settings import BUDGET_VARIABLES, SEED_VARIABLE
from nnunet_losses.study import cli as study_cli
from nnunet_losses.trainers.losses_adam_1e3 import nnUNetTrainerRWBoundaryDiceGradualAdam1e3

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PARSERS = {
    "setup-maps": setup_maps.build_parser,
    "small-plans": small_plans.build_parser,
    "study": lambda: study_cli.build_parser("nnunet-losses study"),
    "demo": demo.build_parser,
}
KNOWN_VARIABLES = {SEED_VARIABLE, *BUDGET_VARIABLES.values(), "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"}


def readme_commands() -> list[str]:
    """Command lines of the README's bash blocks, split at '&&', without comments."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


@cache
def nnunet_help(program: str) -> str:
    return subprocess.run([program, "-h"], capture_output=True, text=True, timeout=120).stdout


def check_command(command: str) -> None:
    for inner in re.findall(r"\$\(([^)]*)\)", command):  # command substitutions are commands too
        check_command(inner)
    words = shlex.split(re.sub(r"\$\([^)]*\)", "SUBSTITUTED", command))
    if words[0] == "export" or "=" in words[0]:
        assignments = [w for w in words if "=" in w and not w.startswith("-")]
        for assignment in assignments:
            assert assignment.partition("=")[0] in KNOWN_VARIABLES, f"unknown variable in: {command}"
        words = [w for w in words if w != "export" and w not in assignments]
        if not words:
            return
    program, arguments = words[0], words[1:]
    if program == "nnunet-losses":
        subcommand, rest = arguments[0], arguments[1:]
        assert subcommand in cli.COMMANDS, command
        if subcommand == "trainers-path":
            assert not rest and cli.trainers_path().is_dir()
            return
        parsed = PARSERS[subcommand]().parse_args(rest)
        trainers = {entry.partition(":")[0] for entry in getattr(parsed, "trainers", None) or []}  # NAME:N = N seeds
        assert trainers <= set(package_trainer_names()) | {"nnUNetTrainer"}, trainers
    elif program.startswith("nnUNetv2_"):
        help_text = nnunet_help(program)
        assert help_text, f"{program} is not installed"
        for flag in (a for a in arguments if a.startswith("-")):
            assert re.search(rf"(^|[\s\[,]){re.escape(flag)}([\s\],]|$)", help_text, flags=re.M), f"{program} has no option {flag}"
        if "-tr" in arguments:
            assert arguments[arguments.index("-tr") + 1] in package_trainer_names()
    elif program == "python" and arguments[:2] == ["-m", "pytest"]:
        markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
        options = arguments[2:]
        if "-m" in options:
            marker = options[options.index("-m") + 1].split()[-1]
            assert any(m.startswith(f"{marker}:") for m in markers), marker
    elif program == "python" and arguments[:2] == ["-m", "venv"]:
        return
    elif program == "python" and arguments[0] == "setup_maps.py":
        setup_maps.build_parser().parse_args(arguments[1:])
    elif program in ("python", "bash"):
        assert (REPO / arguments[0]).is_file(), command
    elif program == "pip":
        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert arguments[0] == "install" and all(e in extras for e in re.findall(r"\[(\w+)\]", " ".join(arguments)))
    elif program == "source":
        return
    else:
        raise AssertionError(f"unchecked README command: {command}")


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_is_valid(command):
    check_command(command)


def test_readme_lists_every_trainer():
    for name in package_trainer_names():
        assert name in README or name.replace("Gradual", "").replace("Equal", "") in README, name


def test_readme_figures_exist():
    for path in re.findall(r"\]\(((?:studies|benchmarks)/[^)]+)\)", README):
        assert (REPO / path).is_file(), path


def test_readme_trainer_example_defines_a_working_trainer():
    """The README's 'new combination' example defines a trainer whose loss computes."""
    import types

    import numpy as np
    import torch

    from nnunet_losses.losses import CompositeLoss
    from nnunet_losses.maps import rrw_compact
    from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses

    (code,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    namespace: dict = {}
    exec(code, namespace)
    trainers = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, nnUNetTrainerLosses) and v is not nnUNetTrainerLosses]
    assert len(trainers) == 1
    fake_self = types.SimpleNamespace(num_epochs=10)
    terms = trainers[0].loss_terms(fake_self)
    loss = CompositeLoss(terms, trainers[0].loss_weights(fake_self, tuple(terms)))
    target = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (2, 1, 12, 12)))
    rrw = torch.from_numpy(np.stack([rrw_compact(t[0], 4) for t in target.numpy()]))
    value = loss(torch.randn(2, 4, 12, 12), target, rrw=rrw)
    assert torch.isfinite(value) and loss.required_maps == ("rrw",)


# --- the CPU workflow, run as written --------------------------------------------------------------------------


def readme_section(heading: str) -> str:
    """The README's text from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = README.index(f"\n{heading}\n")
    ends = [m.start() for m in re.finditer(rf"\n#{{1,{len(level)}}} ", README[start + 1 :])]
    return README[start : start + 1 + ends[0]] if ends else README[start:]


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each regex of ``replacements``; every one must occur, so that a changed README fails loudly."""
    for pattern, replacement in replacements.items():
        text, count = re.subn(pattern, replacement, text)
        assert count, f"the README's CPU workflow no longer contains {pattern!r}"
    return text


@pytest.mark.nnunet
def test_readme_cpu_workflow_runs_as_written_to_predictions(cardiac, tmp_path):
    """The bash block of 'On a CPU, end to end', with the test dataset's id and folders and a one-epoch budget."""
    import SimpleITK as sitk

    (block,) = re.findall(r"```bash\n(.*?)```", readme_section("### On a CPU, end to end"), flags=re.S)
    images = sorted((cardiac.workspace.raw / cardiac.name / "imagesTr").glob("*_0000.nii.gz"))[:2]
    (tmp_path / "imagesTs").mkdir()
    for image in images:
        shutil.copy(image, tmp_path / "imagesTs" / image.name)
    script = substitute(
        block,
        {
            r"/data/nnUNet_raw\b": str(cardiac.workspace.raw),  # read only: the raw dataset of the cardiac fixture
            r"/data/nnUNet_preprocessed\b": str(tmp_path / "nnUNet_preprocessed"),
            r"/data/nnUNet_results\b": str(tmp_path / "nnUNet_results"),
            r"(-d |nnUNetv2_train )27\b": rf"\g<1>{cardiac.dataset_id}",
            r"NNUNET_LOSSES_EPOCHS=\d+": "NNUNET_LOSSES_EPOCHS=1",
            r"-i imagesTs\b": f"-i {tmp_path / 'imagesTs'}",
            r"-o predictions\b": f"-o {tmp_path / 'predictions'}",
        },
    )
    assert script.count("\n") == 7 and "nnUNetv2_predict" in script.splitlines()[-1]
    env = cardiac.workspace.environment(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python, nnunet-losses, nnUNetv2_* of this environment
        NNUNET_LOSSES_ITERATIONS="1",
        NNUNET_LOSSES_VAL_ITERATIONS="1",
        nnUNet_n_proc_DA="1",  # one augmentation worker (0 would break nnUNetv2_plan_and_preprocess)
        nnUNet_npp="0",  # nnUNetv2_predict: no worker processes
        nnUNet_nps="0",
    )
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        env.pop(name)  # the block sets them
    (tmp_path / "nnUNet_preprocessed").mkdir()
    (tmp_path / "nnUNet_results").mkdir()
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    model = tmp_path / "nnUNet_results" / cardiac.name / "nnUNetTrainerRRW__nnUNetSmallPlans__2d" / "fold_0"
    assert (model / "checkpoint_final.pth").is_file()
    assert json.loads((model / "nnunet_losses_run.json").read_text())["runs"][-1]["num_epochs"] == 1
    predictions = sorted((tmp_path / "predictions").glob("*.nii.gz"))
    assert [p.name for p in predictions] == [image.name.replace("_0000", "") for image in images]
    for image, prediction in zip(images, predictions):
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction)))
        assert labels.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape
        assert set(np.unique(labels)) <= {0, 1, 2, 3}


# --- the convergence study's figures ----------------------------------------------------------------------------


PROTOCOL = REPO / "studies" / "convergence_protocol"
CONTROL, RRW, RWB = "nnUNetTrainerDiceCEAdam1e3", "nnUNetTrainerRRWAdam1e3", "nnUNetTrainerRWBoundaryAdam1e3"
ON_THE_FLY = "nnUNetTrainerRRWOnTheFlyAdam1e3"
CLASSES = ("RV", "MYO", "LV")


def study_results(studies: tuple[str, ...]) -> dict[str, list[dict]]:
    """The committed ``cdf_results.csv`` rows (done or diverged: the counted runs) of the given study folders, by trainer."""
    rows: dict[str, list[dict]] = {}
    for path in (REPO / "studies" / study / "cdf_results.csv" for study in studies):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["status"] in ("done", "diverged"):
                    rows.setdefault(row["trainer"], []).append(row)
    return rows


def convergence_section() -> str:
    return readme_section("## Convergence study: RW-Boundary vs RRW")


def test_readme_convergence_table_is_the_committed_summary():
    """The table is cdf_summary.md as the study wrote it, and cdf_summary.csv agrees with cdf_results.csv."""
    table = [line for line in (PROTOCOL / "cdf_summary.md").read_text().splitlines() if line.startswith("|")]
    assert "\n" + "\n".join(table) + "\n" in convergence_section()
    results = study_results(("convergence_protocol",))
    control = np.array([float(row["dice_mean"]) for row in results[CONTROL]])
    with open(PROTOCOL / "cdf_summary.csv", newline="") as handle:
        summary = {row["trainer"]: row for row in csv.DictReader(handle)}
    assert sorted(summary) == sorted(results)
    for trainer, rows in results.items():
        dice = np.array([float(row["dice_mean"]) for row in rows])
        assert int(summary[trainer]["n"]) == len(dice) and float(summary[trainer]["median"]) == pytest.approx(np.median(dice), abs=1e-12)
        assert int(summary[trainer]["converged"]) == np.sum(dice >= np.median(control) - 0.05)
    spec = json.loads((PROTOCOL / "study.json").read_text())
    assert (spec["epochs"], spec["iterations"]) == (40, 25) and f"**{spec['epochs']} epochs of {spec['iterations']} iterations**" in convergence_section()
    assert spec["seed_counts"][CONTROL] == 20 and spec["seed_counts"][RRW] == spec["seed_counts"][RWB] == 50 and spec["seed_counts"][ON_THE_FLY] == 20


def test_readme_convergence_text_figures_equal_the_committed_csvs():
    from scipy.stats import mannwhitneyu

    section = " ".join(convergence_section().split())  # line breaks as spaces
    results = study_results(("convergence_protocol",))

    def dice(trainer: str) -> np.ndarray:
        return np.array([float(row["dice_mean"]) for row in results[trainer]])

    def lost(trainer: str) -> np.ndarray:
        """Per run: how many classes ended below Dice 0.1."""
        return np.array([sum(float(row[f"dice_{c}"]) < 0.1 for c in CLASSES) for row in results[trainer]])

    rrw, rwb, control = dice(RRW), dice(RWB), dice(CONTROL)
    test = mannwhitneyu(rrw, rwb, alternative="two-sided")
    one_lost = [row for row, count in zip(results[RRW], lost(RRW)) if count == 1]
    kept = [float(row[f"dice_{c}"]) for row in one_lost for c in CLASSES if float(row[f"dice_{c}"]) >= 0.1]
    lost_dice = [float(row["dice_mean"]) for row in one_lost]
    assert rrw.min() > rwb.max() and lost(RRW).max() == 1 and lost(RWB).min() >= 1 and lost(CONTROL).max() == 0
    assert np.sum(rwb >= np.median(control) - 0.05) == 0
    old = {trainer: np.median(dice) for trainer, dice in
           ((t, np.array([float(r["dice_mean"]) for r in rows])) for t, rows in study_results(("convergence_cdf", "convergence_cdf_adam")).items())}
    expected = [
        f"Every RRW run ends above the best RW-Boundary run ({rrw.min():.3f} against {rwb.max():.3f}; "
        f"two-sided Mann-Whitney U = {test.statistic:.0f}, p = {test.pvalue:.0e})",
        f"RW-Boundary converges in none of its {len(rwb)} runs while RRW converges in {np.sum(rrw >= np.median(control) - 0.05)}",
        f"{len(one_lost)} of {len(rrw)} RRW runs lose exactly one class and keep the other two (Dice {min(kept):.2f}-{max(kept):.2f}), "
        f"which puts them at {min(lost_dice):.2f}-{max(lost_dice):.2f}",
        f"every RW-Boundary run loses at least one class, {np.sum(lost(RWB) == 2)} of them two",
        f"the RW-Boundary and RRW medians were {old['nnUNetTrainerRWBoundaryAdam']:.3f} and {old['nnUNetTrainerRRWAdam']:.3f}, "
        f"under SGD {old['nnUNetTrainerRWBoundary']:.3f} and {old['nnUNetTrainerRRW']:.3f}",
    ]
    for text in expected:
        assert text in section, text



def test_readme_normalisation_arm_figures_equal_the_committed_csvs():
    """Whole-case against patch RRW maps: counts, medians, Mann-Whitney and Fisher's exact test from cdf_results.csv."""
    from scipy.stats import fisher_exact, mannwhitneyu

    section = " ".join(convergence_section().split())
    results = study_results(("convergence_protocol",))
    dice = {t: np.array([float(row["dice_mean"]) for row in results[t]]) for t in (CONTROL, RRW, ON_THE_FLY)}
    threshold = np.median(dice[CONTROL]) - 0.05
    converged = {t: int(np.sum(dice[t] >= threshold)) for t in (RRW, ON_THE_FLY)}
    runs = {t: len(dice[t]) for t in (RRW, ON_THE_FLY)}
    test = mannwhitneyu(dice[RRW], dice[ON_THE_FLY], alternative="two-sided")
    exact = fisher_exact([[converged[t], runs[t] - converged[t]] for t in (ON_THE_FLY, RRW)])
    losing = sum(any(float(row[f"dice_{c}"]) < 0.1 for c in CLASSES) for row in results[ON_THE_FLY])
    assert runs == {RRW: 50, ON_THE_FLY: 20} and exact.pvalue > 0.05  # the text reads the difference as noise
    expected = (
        f"RRW converges in {converged[ON_THE_FLY]} of its {runs[ON_THE_FLY]} runs (median {np.median(dice[ON_THE_FLY]):.3f}) "
        f"against {converged[RRW]} of {runs[RRW]} with whole-case maps (median {np.median(dice[RRW]):.3f}); the difference is "
        f"within the noise of these counts (two-sided Mann-Whitney U = {test.statistic:.0f}, p = {test.pvalue:.2f}; Fisher exact "
        f"test of the converged counts, p = {exact.pvalue:.2f}), and the failures have the same shape: {losing} of the "
        f"{runs[ON_THE_FLY]} patch-map runs lose a class."
    )
    assert expected in section, expected


BUDGET_3X = REPO / "studies" / "convergence_budget_3x"


def test_readme_budget_test_equals_the_committed_csvs():
    """The budget test: the table is budget_summary.md, and every count, interval and Fisher p of the table and the text is
    recomputed here from the two studies' cdf_results.csv (thresholds from each budget's own control; Clopper-Pearson from
    the beta quantiles; Fisher's two-sided p as the hypergeometric sum over tables no likelier than the observed one)."""
    from math import comb

    from scipy.stats import beta

    section = " ".join(convergence_section().split())
    table = [line for line in (BUDGET_3X / "budget_summary.md").read_text().splitlines() if line.startswith("|")]
    assert "\n" + "\n".join(table[2:]) + "\n" in convergence_section()
    budgets = {1000: study_results(("convergence_protocol",)), 3000: study_results(("convergence_budget_3x",))}
    spec = json.loads((BUDGET_3X / "study.json").read_text())
    assert spec["epochs"] * spec["iterations"] == 3000 and spec["seeds"] == list(range(10))

    def dice(budget: int, trainer: str) -> np.ndarray:
        return np.array([float(row["dice_mean"]) for row in budgets[budget][trainer]])

    def fisher(a: int, n1: int, c: int, n2: int) -> float:
        column, total = a + c, n1 + n2
        law = {x: comb(column, x) * comb(total - column, n1 - x) / comb(total, n1) for x in range(max(0, n1 + column - total), min(n1, column) + 1)}
        return sum(p for p in law.values() if p <= law[a] * (1 + 1e-7))

    counts: dict[tuple[int, str], tuple[int, int]] = {}
    for budget in budgets:
        threshold = np.median(dice(budget, CONTROL)) - 0.05
        for trainer in (CONTROL, RRW, RWB):
            values = dice(budget, trainer)
            k, n = int(np.sum(values >= threshold)), len(values)
            counts[budget, trainer] = k, n
            low = beta.ppf(0.025, k, n - k + 1) if k else 0.0
            high = beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
            p = "—" if budget == 1000 else f"{fisher(*counts[1000, trainer], k, n):.2g}"
            row = (f"| {trainer}{' (control)' if trainer == CONTROL else ''} | {budget} | {threshold:.3f} | {k}/{n} = {k / n:.2f} | "
                   f"{low:.2f}-{high:.2f} | {np.median(values):.3f} | {p} |")
            assert row in table, row
    assert sum(len(rows) for rows in budgets[3000].values()) == 30 and all(row["status"] == "done" for rows in budgets[3000].values() for row in rows)
    lost = {budget: [sum(float(row[f"dice_{c}"]) < 0.1 for c in CLASSES) for row in budgets[budget][RWB]] for budget in budgets}
    rrw_lost_3x = [sum(float(row[f"dice_{c}"]) < 0.1 for c in CLASSES) for row in budgets[3000][RRW]]
    (k1, n1), (k3, n3) = counts[1000, RRW], counts[3000, RRW]
    (b1, m1), (b3, m3) = counts[1000, RWB], counts[3000, RWB]
    assert fisher(k1, n1, k3, n3) < 0.05 < fisher(b1, m1, b3, m3) and max(rrw_lost_3x) == 0  # what the text concludes
    expected = [
        f"the control's median rose from {np.median(dice(1000, CONTROL)):.3f} to {np.median(dice(3000, CONTROL)):.3f} "
        f"(threshold {np.median(dice(3000, CONTROL)) - 0.05:.3f})",
        f"RRW converged in {k3} of {n3} runs against {k1} of {n1} at 1000 iterations (two-sided Fisher exact test, "
        f"p = {fisher(k1, n1, k3, n3):.2g}), with no class lost in any run and a median equal to the control's "
        f"({np.median(dice(3000, RRW)):.3f} and {np.median(dice(3000, CONTROL)):.3f})",
        f"RW-Boundary converged in {b3} of {m3} against {b1} of {m1} (p = {fisher(b1, m1, b3, m3):.2g})",
        f"(median {np.median(dice(3000, RWB)):.3f})",
        f"(median {np.median(dice(1000, RWB)):.3f} at 1000 iterations; {sum(c > 0 for c in lost[3000])} of its {m3} runs lose a "
        f"class, one each, against {sum(c > 0 for c in lost[1000])} of {m1} at 1000 iterations, {lost[1000].count(2)} of them two)",
    ]
    assert max(lost[3000]) == 1
    for text in expected:
        assert text in section, text


def test_readme_fig_6c_reading_equals_the_committed_csvs():
    """Every figure of the Fig. 6c reading, recomputed from cdf_results.csv (all 180 runs done)."""
    from scipy.stats import mannwhitneyu

    section = " ".join(convergence_section().split())
    results = study_results(("convergence_protocol",))
    spec = json.loads((PROTOCOL / "study.json").read_text())
    with open(PROTOCOL / "cdf_results.csv", newline="") as handle:
        statuses = [row["status"] for row in csv.DictReader(handle)]
    assert statuses == ["done"] * 180 == ["done"] * sum(spec["seed_counts"].get(t, spec["seeds"]) for t in spec["trainers"])
    assert "All 180 runs finished; none diverged and none failed." in section

    def runs(map_name: str, strategies: tuple[str, ...] = ("Equal", "Gradual")) -> list[dict]:
        return [row for regional in ("Dice", "CE") for strategy in strategies for row in results[f"nnUNetTrainer{map_name}{regional}{strategy}Adam1e3"]]

    def dice(rows: list[dict]) -> np.ndarray:
        return np.array([float(row["dice_mean"]) for row in rows])

    def losing(rows: list[dict]) -> int:
        return sum(any(float(row[f"dice_{c}"]) < 0.1 for c in CLASSES) for row in rows)

    threshold = np.median(dice(results[CONTROL])) - 0.05
    rwb_alone, rwb_all = dice(results[RWB]), dice(runs("RWBoundary"))
    rwb_gradual, rwb_equal = runs("RWBoundary", ("Gradual",)), runs("RWBoundary", ("Equal",))
    rrw_gradual, rrw_equal = dice(runs("RRW", ("Gradual",))), dice(runs("RRW", ("Equal",)))
    lifted = mannwhitneyu(rwb_all, rwb_alone, alternative="two-sided")
    strategy = mannwhitneyu(dice(rwb_gradual), dice(rwb_equal), alternative="two-sided")
    rrw_strategy = mannwhitneyu(rrw_gradual, rrw_equal, alternative="two-sided")
    dice_gradual = dice(results["nnUNetTrainerRWBoundaryDiceGradualAdam1e3"])
    ce_gradual = dice(results["nnUNetTrainerRWBoundaryCEGradualAdam1e3"])
    assert np.all(dice_gradual >= threshold) and np.all(ce_gradual < threshold) and np.all(dice(rwb_equal) < threshold)
    expected = [
        f"RW-Boundary's {len(rwb_all)} combination runs have a median of {np.median(rwb_all):.3f} against {np.median(rwb_alone):.3f} alone, "
        f"and {np.sum(rwb_all > rwb_alone.max())} of them end above the best RW-Boundary run alone ({rwb_alone.max():.3f}; "
        f"U = {lifted.statistic:.0f}, p = {lifted.pvalue:.0e})",
        f"gradual beats equal (medians {np.median(dice(rwb_gradual)):.3f} and {np.median(dice(rwb_equal)):.3f} over {len(rwb_gradual)} runs each; "
        f"U = {strategy.statistic:.0f}, p = {strategy.pvalue:.3f})",
        f"(gradual and equal medians {np.median(rrw_gradual):.3f} and {np.median(rrw_equal):.3f}; U = {rrw_strategy.statistic:.0f}, p = {rrw_strategy.pvalue:.2f})",
        f"no RRW run loses a class ({losing(runs('RRW'))} of {len(runs('RRW'))}, against {losing(results[RRW])} of {len(results[RRW])} alone), "
        f"so {np.sum(dice(runs('RRW')) >= threshold)} of its 20 combination runs converge against {np.sum(dice(results[RRW]) >= threshold)} of {len(results[RRW])} alone",
        f"(median {np.median(ce_gradual):.3f}, best {ce_gradual.max():.3f}, against {threshold:.3f})",
        f"the two equal strategies converge in none, and {losing(rwb_equal)} of their {len(rwb_equal)} runs lose a class",
        f"1 of its {len(rwb_gradual)} runs loses a class",
    ]
    assert losing(runs("RRW")) == 0 and losing(rwb_gradual) == 1
    gradual = nnUNetTrainerRWBoundaryDiceGradualAdam1e3
    schedule = gradual.strategy(names=("dice", "rw"), num_epochs=spec["epochs"], unit=gradual.schedule_unit)
    alpha = {}
    for epoch in (0, spec["epochs"] // 2, spec["epochs"] - 1):
        schedule.begin_epoch(epoch)
        alpha[epoch] = schedule.weights["dice"]
    expected.append(f"(`alpha = {alpha[0]:g}`, {alpha[spec['epochs'] // 2]:g} at mid-training, {alpha[spec['epochs'] - 1]:g} in the last epoch)")
    for text in expected:
        assert text in section, text

def test_readme_learning_speed_table_equals_the_committed_csvs():
    """Each row: nnU-Net's pseudo Dice after 10, 20 and 40 epochs (curves.csv) and the final validation Dice."""
    folder = REPO / "studies" / "rrw_learning_speed"
    section = readme_section("### Why RRW learns slowly at CPU scale")
    quoted = {m.group(1): m.group(0) for m in re.finditer(r"^\| [^|]+ \| `(nnUNetTrainer\w+)` \|.*\|$", section, flags=re.M)}
    final = {trainer: rows for trainer, rows in study_results(("rrw_learning_speed",)).items()}
    with open(folder / "curves.csv", newline="") as handle:
        curves = {(row["trainer"], int(row["epoch"])): float(row["pseudo_dice"]) for row in csv.DictReader(handle)}
    assert sorted(quoted) == sorted(final)
    for trainer, (row,) in final.items():
        assert row["status"] == "done"
        after = " / ".join(f"{curves[(trainer, epochs - 1)]:.3f}" for epochs in (10, 20, 40))
        assert quoted[trainer].endswith(f"`{trainer}` | {after} | {float(row['dice_mean']):.3f} |"), quoted[trainer]


def test_readme_demo_table_is_seed_0_of_the_protocol_study():
    """The demo's rows quoted in the README: the protocol's seed-0 runs (same data, trainer, seed and budget), and its
    converged column follows the control's Dice."""
    block = README[README.index("```text\ntrainer ") :].split("```")[1]
    rows = {line.split()[0]: line.split() for line in block.splitlines() if line.startswith("nnUNetTrainer")}
    seed_0 = {trainer: runs[0] for trainer, runs in study_results(("convergence_protocol",)).items() if runs[0]["seed"] == "0"}
    assert sorted(rows) == sorted((CONTROL, RRW, RWB)) == sorted(demo.TRAINERS)
    for trainer, cells in rows.items():
        assert cells[1:3] == ["1", "4"]
        assert cells[4:7] == [f"{float(seed_0[trainer][f'dice_{c}']):.3f}" for c in CLASSES], trainer
        converged = float(seed_0[trainer]["dice_mean"]) >= float(seed_0[CONTROL]["dice_mean"]) - 0.05
        assert cells[3] == ("1/1" if converged else "0/1")


# --- the repository is self-contained: no pointer to documents outside it, every docs/ link resolves ---------------

SCANNED = ("nnunet_losses", "trainers", "benchmarks", "studies", "tests", "docs")
SCANNED_FILES = ("README.md", "setup_maps.py", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".txt", ".cfg", ".yml", ".yaml"}
PAPER_STEMS = ("region-wise-loss", "boundary-loss-breast-ultrasound", "temporal-loss-ultrasound", "centroid-distance-loss", "loss-analysis-spine-mri")
# built from parts so that this file does not match itself
OUTSIDE_REFERENCES = re.compile(r"\b" + "SP" + r"EC\b|\bpapers/|\b(?:" + "|".join(map(re.escape, PAPER_STEMS)) + r")\." + "txt")
DOCS_LINK = re.compile(r"\bdocs/([\w-]+\.md)(?:#([\w-]+))?")
RELATIVE_MD_LINK = re.compile(r"\]\(([\w-]+\.md)(?:#([\w-]+))?\)")


def repository_text_files() -> list[Path]:
    """The package, trainers, benchmarks, studies, tests, docs and the top-level files (run folders excluded)."""
    files = [REPO / name for name in SCANNED_FILES]
    for folder in SCANNED:
        files += [
            path for path in sorted((REPO / folder).rglob("*"))
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts and "runs" not in path.relative_to(REPO).parts
        ]  # fmt: skip
    return files


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def test_heading_anchors_follow_githubs_rule():
    assert heading_anchors("## Region-wise loss\n### Coefficient-of-variation weighting\n# Run states (`x`)\n") == {
        "region-wise-loss", "coefficient-of-variation-weighting", "run-states-x"
    }  # fmt: skip


def test_no_file_points_to_documents_outside_the_repository():
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in repository_text_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE_REFERENCES.search(line)
    ]
    assert not offenders, "cite papers by author and title and point to docs/ instead:\n" + "\n".join(offenders)


def test_every_docs_link_points_to_an_existing_file_and_heading():
    docs = REPO / "docs"
    expected = {"maps.md", "losses.md", "schedules.md", "metrics.md", "studies.md", "references.md", "bad_inputs.md"}
    assert expected <= {path.name for path in docs.glob("*.md")}
    anchors = {path.name: heading_anchors(path.read_text()) for path in docs.glob("*.md")}
    links = []
    for path in repository_text_files():
        text = path.read_text(errors="replace")
        links += [(path, *match.groups()) for match in DOCS_LINK.finditer(text)]
        if path.parent == docs:
            links += [(path, *match.groups()) for match in RELATIVE_MD_LINK.finditer(text)]
    assert any(path.name == "README.md" for path, _, _ in links), "the README links to docs/"
    broken = [
        f"{path.relative_to(REPO)} -> docs/{name}{'#' + anchor if anchor else ''}"
        for path, name, anchor in links
        if name not in anchors or (anchor is not None and anchor not in anchors[name])
    ]
    assert not broken, "links to missing docs files or headings:\n" + "\n".join(broken)

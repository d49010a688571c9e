"""``nnunet-losses demo`` end to end, shrunk (5 cases, 1 seed, 1 epoch), in its own folders; its options and pictures."""
from __future__ import annotations

import csv
import itertools
import subprocess
import sys

import pytest

from conftest import run_command
from nnunet_losses.demo import build_parser
from nnunet_losses.nnunet.progress_plot import loss_terms_figure

TRAINERS = ("nnUNetTrainerRRWAdam1e3", "nnUNetTrainerRWBoundaryAdam1e3", "nnUNetTrainerDiceCEAdam1e3")


@pytest.mark.nnunet
def test_demo_runs_in_its_own_folders(workspace, tmp_path):
    import SimpleITK as sitk
    from PIL import Image

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
    study = out / "cdf_study"
    for trainer in TRAINERS:  # the progress names each training's log ...
        assert f"started {trainer} seed 0 fold 0; log: {study}/runs/{trainer}/seed_0_fold_0/train.log\n" in result.stdout
    # ... and counts the epochs of all trainings (a line at start, every 30 s and at the end: the output is not a terminal)
    assert "cdf Dataset500_SyntheticCardiac: epochs 0/3 (0 %); runs: 0 done, 0 running, 0 failed, 3 waiting; 0:00 elapsed" in result.stdout
    assert "cdf Dataset500_SyntheticCardiac: epochs 3/3 (100 %); runs: 3 done, 0 running, 0 failed, 0 waiting;" in result.stdout
    table = result.stdout[result.stdout.index("trainer  ") :].splitlines()
    assert table[0].split()[:9] == ["trainer", "seeds", "cases", "converged", "Dice", "RV", "Dice", "MYO", "Dice"]
    with open(study / "cdf_summary.csv") as handle:
        converged = {row["trainer"]: f"{row['converged']}/1" for row in csv.DictReader(handle)}
    assert set(converged) == set(TRAINERS) and converged[TRAINERS[2]] == "1/1"  # the control's one run is its own median
    # 5 cases: fold 0 validates 1
    assert [line.split()[:4] for line in table[2:5]] == [[trainer, "1", "1", converged[trainer]] for trainer in TRAINERS]
    assert table[5].startswith("seeds: finished trainings; cases: fold 0's validation cases x seeds")
    # the worst-case column counts the (case, class) pairs where exactly one of prediction and reference has the class
    assert table[0].split()[-2:] == ["worst", "case"]
    gt_folder = out / "nnUNet_preprocessed" / "Dataset500_SyntheticCardiac" / "gt_segmentations"
    for trainer, line in zip(TRAINERS, table[2:5]):
        validation = next((study / "runs" / trainer / "seed_0_fold_0").glob("Dataset500_SyntheticCardiac/*/fold_0/validation"))
        (prediction,) = validation.glob("*.nii.gz")
        pred, gt = (sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for path in (prediction, gt_folder / prediction.name))
        assert int(line.split()[-1]) == sum((pred == c).any() != (gt == c).any() for c in (1, 2, 3)), line
    assert "HD95 = the image diagonal in mm, the worst case" in result.stdout and "never predicted" not in result.stdout
    # nnU-Net's planning output (the full plans) goes to a log, one line names it
    log = out / "plan_and_preprocess.log"
    assert "patch_size" in log.read_text() and "patch_size" not in result.stdout
    assert f"nnU-Net's plans and output: {log}" in result.stdout
    assert (study / "cdf.png").is_file() and (study / "cdf_summary.md").is_file() and (out / "overlays.png").is_file()
    with open(study / "cdf_results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["trainer"] for row in rows} == set(TRAINERS)
    assert all(row["status"] == "done" for row in rows)
    assert all(not any(folder.iterdir()) for folder in users.values())  # the user's nnU-Net folders are untouched
    fold = study / "runs" / TRAINERS[0] / "seed_0_fold_0" / "Dataset500_SyntheticCardiac" / f"{TRAINERS[0]}__nnUNetSmallPlans__2d" / "fold_0"
    # as nnU-Net's progress.png: 30 inches wide, 18 inches per panel, 100 dpi (two panels here, three there)
    assert Image.open(fold / "loss_terms.png").size == (3000, 3600) and Image.open(fold / "progress.png").size == (3000, 5400)


def _text_boxes(figure) -> list[tuple[str, object]]:
    """(what, window extent) of every visible text and legend of a drawn figure."""
    renderer = figure.canvas.get_renderer()
    boxes = []
    for index, ax in enumerate(figure.axes):
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        ticks = [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1] + [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
        texts = [*ticks, ax.xaxis.label, ax.yaxis.label]  # tick labels outside the limits are not drawn
        boxes += [(f"panel {index}: {text.get_text()!r}", text.get_window_extent(renderer)) for text in texts if text.get_visible() and text.get_text()]
        boxes.append((f"panel {index}: legend", ax.get_legend().get_window_extent(renderer)))
    return boxes


@pytest.mark.parametrize("nnunet_style_first", [False, True])
def test_loss_terms_figure_has_nothing_clipped_or_overlapping(nnunet_style_first):
    """Three terms with long names and large values, 40 epochs; also after nnU-Net's global ``sns.set(font_scale=2.5)``."""
    import matplotlib
    import seaborn as sns

    names = ("generalised_dice", "common_support_dice", "common_support_boundary")
    logging = {
        "loss_terms": [{name: -12345.678 * (k + 1) / (epoch + 1) for k, name in enumerate(names)} for epoch in range(40)],
        "loss_weights": [{name: 0.001 * (epoch + 1) * (k + 1) for k, name in enumerate(names)} for epoch in range(40)],
    }
    with matplotlib.rc_context():
        if nnunet_style_first:
            sns.set(font_scale=2.5)
        figure = loss_terms_figure(logging)
        figure.canvas.draw()
    assert tuple(figure.get_size_inches()) == (30.0, 36.0) and figure.dpi == 100 and len(figure.axes) == 2
    assert [ax.get_ylabel() for ax in figure.axes] == ["loss term (train mean)", "weight"]
    assert [len(ax.get_lines()) for ax in figure.axes] == [3, 3]
    assert figure.axes[0].yaxis.label.get_fontsize() == 12 * 2.5  # seaborn's notebook context at nnU-Net's font scale
    width, height = figure.bbox.width, figure.bbox.height
    boxes = _text_boxes(figure)
    for what, box in boxes:
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, f"{what} is clipped: {box}"
    for (what, box), (other, other_box) in itertools.combinations(boxes, 2):
        assert not box.overlaps(other_box), f"{what} overlaps {other}"
    for index, ax in enumerate(figure.axes):  # each legend sits above its panel
        assert ax.get_legend().get_window_extent().y0 >= ax.get_window_extent().y1, f"legend of panel {index} covers the curves"
    assert loss_terms_figure({"loss_terms": [], "loss_weights": []}) is None


def test_demo_options_have_help_and_defaults():
    help_text = " ".join(build_parser().format_help().split())
    for text in (
        "--cases CASES synthetic cases; nnU-Net's fold 0 validates on a fifth of them (default: 20)",
        "--seeds SEEDS trainings per trainer, seeds 0..N-1 (3 trainers, 2 at a time on the CPU: 5 seeds take about 25 minutes) (default: 1)",
        "--epochs EPOCHS epochs per training (the CPU protocol's) (default: 40)",
        "--iterations ITERATIONS training iterations per epoch (the CPU protocol's) (default: 25)",
        "--device {auto,cpu,cuda} training device; auto: cuda if available, else cpu (default: auto)",
    ):
        assert text in help_text, text


def test_trainers_path_help_prints_usage_and_exits_0():
    from nnunet_losses.cli import trainers_path

    for flag in ("--help", "-h"):
        result = subprocess.run([sys.executable, "-m", "nnunet_losses.cli", "trainers-path", flag], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stderr == ""
        assert result.stdout.startswith("usage: nnunet-losses trainers-path\n") and "export nnUNet_extTrainer=$(nnunet-losses trainers-path)" in result.stdout
    result = subprocess.run([sys.executable, "-m", "nnunet_losses.cli", "trainers-path"], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, f"{trainers_path()}\n")
    wrong = subprocess.run([sys.executable, "-m", "nnunet_losses.cli", "trainers-path", "--bogus"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "takes no arguments, got --bogus" in wrong.stderr

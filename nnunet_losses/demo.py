"""``nnunet-losses demo``: from nothing to trained RRW, RW-Boundary and Dice+CE models, a CDF plot and pictures.

Everything happens in ``--out`` (default ``./nnunet_losses_demo``), in nnU-Net folders of
its own; the user's ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` are never
read or written. Steps, each with its progress shown:

1. an ACDC-like synthetic cardiac dataset in nnU-Net's raw format;
2. nnU-Net planning and 2d preprocessing (``nnUNetv2_plan_and_preprocess``; the plans it
   prints go to ``plan_and_preprocess.log`` in ``--out``, one line names it);
3. a small plans variant for the CPU and the maps (``setup_maps``);
4. a small convergence study under the CPU-scale protocol (``studies/convergence_protocol``:
   Adam at lr 1e-3, the learning rate at which nnU-Net's Dice + CE reaches its plateau in a
   few hundred iterations): ``nnUNetTrainerRRWAdam1e3``, ``nnUNetTrainerRWBoundaryAdam1e3``
   and the control ``nnUNetTrainerDiceCEAdam1e3``, a few seeds each, through
   ``nnUNetv2_train`` (the same runner as ``nnunet-losses study cdf --control``), with
   nnU-Net's own validation predictions;
5. Dice and HD95 per class on the validation cases (a missed class counts with the worst-case
   HD95, the image diagonal; ``docs/metrics.md``), the CDF plot with the convergence
   threshold, overlay pictures.

The defaults are the protocol's first seed of each trainer on its data (20 cases of 10 x 64 x 64),
so the demo's three rows are three runs of that study; on a 2-core CPU they finish in under
10 minutes; on a GPU pass ``--device cuda``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .arguments import positive_int
from .trainer_folder import trainers_path
from .synthetic import write_raw_dataset

DATASET_ID = 500
CONTROL = "nnUNetTrainerDiceCEAdam1e3"
TRAINERS = ("nnUNetTrainerRRWAdam1e3", "nnUNetTrainerRWBoundaryAdam1e3", CONTROL)
CASE_SHAPE = (10, 64, 64)
PLANNING_LOG = "plan_and_preprocess.log"


def step(number: int, text: str) -> float:
    """Print the heading of step ``number``; returns the time it started."""
    print(f"\n[{number}/5] {text}", flush=True)
    return time.perf_counter()


def use_own_nnunet_folders(out: Path) -> dict[str, str]:
    """Point nnU-Net at folders inside ``out``, in this process and its children."""
    folders = {name: out / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    os.environ["nnUNet_extTrainer"] = str(trainers_path())
    return {name: str(folder) for name, folder in folders.items()}


def prepare_dataset(out: Path, cases: int) -> str:
    """Steps 1-3; returns the dataset name. Work already done is skipped."""
    from .nnunet.configuration import load_configuration
    from .nnunet.setup_maps import write_configuration_maps
    from .nnunet.small_plans import make_small_plans

    start = step(1, f"writing {cases} synthetic cardiac cases ({' x '.join(map(str, CASE_SHAPE))} voxels, 8 x 1.5 x 1.5 mm)")
    folder = write_raw_dataset("cardiac", out / "nnUNet_raw", DATASET_ID, cases, seed=0, shape=CASE_SHAPE)
    print(f"      {folder} ({time.perf_counter() - start:.0f} s)")

    start = step(2, "nnU-Net planning and 2d preprocessing (nnUNetv2_plan_and_preprocess)")
    log = out / PLANNING_LOG
    if not (out / "nnUNet_preprocessed" / folder.name / "nnUNetPlans_2d").is_dir():
        plan_and_preprocess(log)
    print(f"      done ({time.perf_counter() - start:.0f} s); nnU-Net's plans and output: {log}")

    start = step(3, "small plans for the CPU and the maps (setup_maps)")
    make_small_plans(DATASET_ID, ("2d",), features=(8, 16, 32, 64), batch_size=8)
    summary = write_configuration_maps(load_configuration(DATASET_ID, "2d", "nnUNetSmallPlans"))
    print(f"      {summary} ({time.perf_counter() - start:.0f} s)")
    return folder.name


def plan_and_preprocess(log: Path) -> None:
    """Run ``nnUNetv2_plan_and_preprocess`` with its output (the full plans it prints) in ``log``.

    Raises ``RuntimeError`` naming the log and quoting its last lines when nnU-Net fails.
    """
    command = ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "2"]
    with open(log, "w") as handle:
        returncode = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} failed with exit status {returncode}; its output is in {log}, ending:\n{tail}")


def train(out: Path, seeds: int, epochs: int, iterations: int, device: str, parallel: int) -> Path:
    """Step 4 through the study runner; returns the study folder."""
    from .study.cli import main as study_main

    study_dir = out / "cdf_study"
    at_a_time = f", {parallel} at a time" if device == "cpu" else ""
    start = step(4, f"training {', '.join(TRAINERS[:-1])} and the control {CONTROL}: {seeds} seeds each, {epochs} epochs of {iterations} iterations{at_a_time}")
    print(f"      each training's output goes to {study_dir}/runs/<trainer>/seed_<k>_fold_0/train.log")
    arguments = [
        "cdf", "-d", str(DATASET_ID), "-c", "2d", "-p", "nnUNetSmallPlans", "--trainers", *TRAINERS,
        "--seeds", str(seeds), "--epochs", str(epochs), "--iterations", str(iterations), "--val-iterations", "5",
        "--device", device, "--out", str(study_dir), "--control", CONTROL,
    ]
    if device == "cpu":
        arguments += ["--parallel", str(parallel)]
    code = study_main(arguments)
    print(f"      done ({time.perf_counter() - start:.0f} s)")
    if code != 0:
        print(f"      some runs failed; see: nnunet-losses study status {study_dir}")
    return study_dir


def evaluate(out: Path, dataset: str, study_dir: Path) -> list[Path]:
    """Step 5: the table, the overlay pictures; returns the picture paths."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from .study.case_metrics import MISSED, read_labels, validation_case_metrics
    from .study.collect import foreground_label_names
    from .study.runs import RunPaths
    from .study.spec import load_spec

    step(5, "evaluation of the validation predictions")
    spec = load_spec(study_dir)
    preprocessed = out / "nnUNet_preprocessed" / dataset
    labels = foreground_label_names(load_json(str(preprocessed / "dataset.json")))
    gt_folder = preprocessed / "gt_segmentations"
    rows, validation_folders = [], {}
    for trainer in TRAINERS:
        per_case, seeds = [], 0
        for run in (r for r in spec.runs() if r.trainer == trainer):
            paths = RunPaths.of(study_dir, spec, run)
            if paths.finished:
                seeds += 1
                validation_folders.setdefault(trainer, paths.validation)
                per_case += validation_case_metrics(paths.validation, gt_folder, ".nii.gz", labels).values()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from prediction and reference has no Dice (NaN)
            means = {key: float(np.nanmean([case[key] for case in per_case])) for key in (per_case[0] if per_case else {})}
        worst = sum(int(case[f"{MISSED}_{name}"]) for case in per_case for name in labels.values())
        rows.append((trainer, seeds, len(per_case), means, worst))
    names = list(labels.values())
    converged = converged_counts(study_dir)
    width = max(len(trainer) for trainer in TRAINERS) + 2
    header = f"{'trainer':<{width}}{'seeds':>6}{'cases':>6}{'converged':>11}" + "".join(f"{'Dice ' + n:>10}" for n in names)
    header += "".join(f"{'HD95 ' + n:>10}" for n in names) + f"{'worst case':>12}"
    print("\n" + header + "\n" + "-" * len(header))
    for trainer, seeds, count, means, worst in rows:
        dice = "".join(_cell(means.get(f"dice_{n}"), "{:>10.3f}") for n in names)
        hd95 = "".join(_cell(means.get(f"hd95_{n}"), "{:>10.1f}") for n in names)
        print(f"{trainer:<{width}}{seeds:>6}{count:>6}{converged.get(trainer, 'n/a'):>11}{dice}{hd95}{worst:>12}")
    print(
        "seeds: finished trainings; cases: fold 0's validation cases x seeds (each training predicts the same validation cases).\n"
        f"converged: trainings whose mean Dice is >= the median of the control {CONTROL} minus 0.05 (cdf_summary.md).\n"
        "Values: mean over those cases; HD95 in mm. A class missed in a case, or predicted where the reference has none, counts\n"
        "there with Dice 0 and HD95 = the image diagonal in mm, the worst case (docs/metrics.md); worst case: how many (case, class)\n"
        "pairs took it. n/a: no value (no finished training, or a class in neither reference nor prediction of any case)."
    )
    return [draw_overlays(out / "overlays.png", validation_folders, gt_folder, out / "nnUNet_raw" / dataset / "imagesTr", read_labels)]


def converged_counts(study_dir: Path) -> dict[str, str]:
    """``{trainer: "k/n"}`` from the study's ``cdf_summary.csv`` (empty before the control has a finished run)."""
    import csv

    path = study_dir / "cdf_summary.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {row["trainer"]: f"{row['converged']}/{row['n']}" for row in csv.DictReader(handle)}


def _cell(value: float | None, template: str) -> str:
    """A table cell: the formatted value, or n/a."""
    return f"{'n/a':>10}" if value is None or np.isnan(value) else template.format(value)


def draw_overlays(path: Path, validation_folders: dict[str, Path], gt_folder: Path, images: Path, read_labels) -> Path:
    """One row per validation case: image, ground truth and each trainer's prediction (middle slice)."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    cases = sorted(p.name[: -len(".nii.gz")] for p in next(iter(validation_folders.values())).glob("*.nii.gz"))[:3]
    columns = ["image", "ground truth", *validation_folders]
    figure, axes = plt.subplots(len(cases), len(columns), figsize=(3 * len(columns), 3 * len(cases)), squeeze=False)
    colours = matplotlib.colors.ListedColormap([(0, 0, 0, 0), (0.2, 0.6, 1.0, 0.55), (1.0, 0.3, 0.3, 0.55), (1.0, 0.9, 0.2, 0.55)])
    for row, case in enumerate(cases):
        image, _ = read_labels(images / f"{case}_0000.nii.gz")
        middle = image.shape[0] // 2
        layers = [None, read_labels(gt_folder / f"{case}.nii.gz")[0]] + [read_labels(folder / f"{case}.nii.gz")[0] for folder in validation_folders.values()]
        for column, (title, layer) in enumerate(zip(columns, layers)):
            ax = axes[row, column]
            ax.imshow(image[middle], cmap="gray")
            if layer is not None:
                ax.imshow(layer[middle], cmap=colours, vmin=0, vmax=3, interpolation="nearest")
            ax.set_title(f"{case}: {title}" if column == 0 else title.replace("nnUNetTrainer", ""), fontsize=9)
            ax.axis("off")
    figure.suptitle("validation cases, middle slice (blue RV, red MYO, yellow LV)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def build_parser(prog: str = "nnunet-losses demo") -> argparse.ArgumentParser:
    """The demo's options; every default is shown in ``--help``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Synthetic data -> nnU-Net -> RRW, RW-Boundary and Dice+CE control trainings, a CDF plot and pictures, in its own folders.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("nnunet_losses_demo"), help="working folder, with its own nnU-Net folders")
    parser.add_argument("--cases", type=positive_int, default=20, help="synthetic cases; nnU-Net's fold 0 validates on a fifth of them")
    parser.add_argument("--seeds", type=positive_int, default=1, help="trainings per trainer, seeds 0..N-1 (3 trainers, 2 at a time on the CPU: 5 seeds take about 25 minutes)")
    parser.add_argument("--epochs", type=positive_int, default=40, help="epochs per training (the CPU protocol's)")
    parser.add_argument("--iterations", type=positive_int, default=25, help="training iterations per epoch (the CPU protocol's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device; auto: cuda if available, else cpu")
    parser.add_argument("--parallel", type=positive_int, default=2, help="trainings at a time on the CPU")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "nnunet-losses demo") -> int:
    """Run the five steps; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out.resolve()
    began = time.perf_counter()
    use_own_nnunet_folders(out)
    dataset = prepare_dataset(out, args.cases)
    study_dir = train(out, args.seeds, args.epochs, args.iterations, device, args.parallel)
    pictures = evaluate(out, dataset, study_dir)
    print(f"\nCDF plot:  {study_dir / 'cdf.png'}")
    print(f"results:   {study_dir / 'cdf_results.csv'}")
    for picture in pictures:
        print(f"overlays:  {picture}")
    print(f"total time: {(time.perf_counter() - began) / 60:.1f} min. Next: the README's 'Your own dataset' section.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

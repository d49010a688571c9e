"""Per-epoch learning curves of the runs of a study folder: nnU-Net's pseudo Dice and train loss from each checkpoint.

nnU-Net logs, per epoch, the mean foreground pseudo Dice of its validation iterations
(``logging["mean_fg_dice"]`` in ``checkpoint_*.pth``) and the mean train loss. This writes
them for every run as ``curves.csv`` (trainer, seed, epoch, pseudo_dice, train_loss) and
draws ``curves.png``: one panel per optimiser setting, Dice+CE against RRW.

    python studies/rrw_learning_speed/curves.py STUDY_FOLDER
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

PANELS = {
    "nnU-Net's SGD, lr 0.01": ("nnUNetTrainerDiceCE", "nnUNetTrainerRRW"),
    "Adam, lr 1e-4 (RW paper)": ("nnUNetTrainerDiceCEAdam", "nnUNetTrainerRRWAdam"),
    "Adam, lr 1e-3": ("nnUNetTrainerDiceCEAdam1e3", "nnUNetTrainerRRWAdam1e3"),
}


def run_curves(study: Path) -> list[dict]:
    """One row per (run, epoch) from the newest checkpoint of every run of the study."""
    rows = []
    for run in sorted((study / "runs").glob("*/seed_*_fold_*")):
        checkpoints = sorted(run.rglob("checkpoint_final.pth")) or sorted(run.rglob("checkpoint_latest.pth"))
        if not checkpoints:
            continue
        logging = torch.load(checkpoints[0], map_location="cpu", weights_only=False)["logging"]
        seed = int(run.name.split("_")[1])
        for epoch, (dice, loss) in enumerate(zip(logging["mean_fg_dice"], logging["train_losses"])):
            rows.append({"trainer": run.parent.name, "seed": seed, "epoch": epoch, "pseudo_dice": float(dice), "train_loss": float(loss)})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 4.5), sharey=True, layout="constrained")
    for axis, (title, trainers) in zip(axes, PANELS.items()):
        for trainer, label in zip(trainers, ("Dice + CE (nnU-Net)", "RW loss, RRW maps")):
            points = [(r["epoch"], r["pseudo_dice"]) for r in rows if r["trainer"] == trainer]
            if points:
                axis.plot(*zip(*points), label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch (25 iterations)")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    axes[0].set_ylabel("pseudo Dice, mean foreground (validation)")
    figure.savefig(path, dpi=120)


def main(study: Path) -> None:
    rows = run_curves(study)
    with open(study / "curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["trainer", "seed", "epoch", "pseudo_dice", "train_loss"])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, study / "curves.png")
    print(f"{len(rows)} epochs of {len({r['trainer'] for r in rows})} trainers -> {study / 'curves.csv'}, {study / 'curves.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

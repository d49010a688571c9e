"""Seconds per batch of nnU-Net's augmentation (one process, one thread) for every map trainer kind.

What a GPU waits for is nnU-Net's CPU data pipeline: loading, cropping, spatial and
intensity augmentation, deep-supervision downsampling. This benchmark times exactly that
pipeline as each trainer builds it (``trainer.initialize()`` then ``get_dataloaders()``,
nnU-Net's own ``nnUNetDataLoader`` with the trainer's own ``get_training_transforms``),
with ``nnUNet_n_proc_DA=0`` (the batches are made in this process) and one torch thread,
and reports the mean seconds per ``next(dataloader_train)``. Trainers take turns batch by
batch with the same seeds, so every trainer times the same cases and augmentations; ratios are
of mean seconds per batch against nnUNetTrainer measured in the same run. The
device-mode trainer (``nnUNetTrainerRRWOnDevice``) adds only the recorded zoom to the
pipeline; its maps are computed later, on the training device, and are not timed here
(``benchmarks/device_maps.py`` times them).

Dataset: ACDC-like synthetic cardiac cases (default 12 of 20x256x256, 5 x 1.5 x 1.5 mm),
planned and preprocessed by nnU-Net with its default plans; the maps are written by
``setup_maps``. 2d uses nnU-Net's 2d pipeline; 3d_fullres uses its dummy-2D pipeline (the
patch is short along the first axis, as for ACDC).

    python benchmarks/data_loading.py [--batches 40] [--warmup 3] [--configurations 2d 3d_fullres] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

from workspace import prepare_workspace, time_interleaved

os.environ["nnUNet_n_proc_DA"] = "0"

TRAINERS = (
    "nnUNetTrainer",
    "nnUNetTrainerRRW",
    "nnUNetTrainerRWBoundary",
    "nnUNetTrainerBoundaryDiceRamp",
    "nnUNetTrainerRRWOnTheFly",
    "nnUNetTrainerRRWOnDevice",
)
DATASET_ID = 992


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS))
    parser.add_argument("--workdir", type=Path, default=None, help="keep the dataset here between runs (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        prepare_workspace(workdir, DATASET_ID, args.cases, (20, 256, 256), args.configurations, spacing=(5.0, 1.5, 1.5))
        import torch

        torch.set_num_threads(1)
        results = {
            configuration: time_interleaved(args.trainers, DATASET_ID, configuration, args.warmup, args.batches)
            for configuration in args.configurations
        }
    print(
        f"device: {platform.machine()} CPU, {os.cpu_count()} cores, 1 augmentation process (nnUNet_n_proc_DA=0), 1 torch thread; "
        f"nnU-Net default plans, {args.cases} cardiac cases of 20x256x256; {args.batches} batches per trainer, taking turns"
    )
    for configuration, times in results.items():
        baseline = sum(times["nnUNetTrainer"]) / len(times["nnUNetTrainer"]) if "nnUNetTrainer" in times else None
        print(f"\n{configuration:<30} {'mean s/batch':>12} {'vs nnUNetTrainer':>17}")
        for name, samples in times.items():
            mean = sum(samples) / len(samples)
            ratio = f"{mean / baseline:>16.3f}x" if baseline else ""
            print(f"{name:<30} {mean:>12.3f} {ratio}")


if __name__ == "__main__":
    main()

"""Time per training iteration: nnUNetTrainerRRW (precomputed and on-the-fly maps) against nnUNetTrainer.

Same dataset, plans and machine, measured in the same run: an ACDC-like synthetic
dataset is written, planned and preprocessed by nnU-Net (2d, default plans) and its
maps are written by setup_maps. Each trainer is built in-process exactly as
``nnUNetv2_train`` builds it, its data loaders start (nnU-Net's background
augmentation workers), and the wall time of ``train_step(next(dataloader))`` is
measured -- data waiting included -- after warm-up iterations. The trainers take
turns over several rounds and each reports its median; ratios are against
nnUNetTrainer.

    python benchmarks/train_step.py [--iterations 15] [--warmup 5] [--rounds 2] [--workdir DIR] [--device cpu]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

TRAINERS = ("nnUNetTrainer", "nnUNetTrainerRRW", "nnUNetTrainerRRWOnTheFly")
DATASET_ID = 990


def prepare(workdir: Path) -> None:
    from nnunet_losses.cli import trainers_path

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(workdir / name)
        (workdir / name).mkdir(parents=True, exist_ok=True)
    os.environ["nnUNet_extTrainer"] = str(trainers_path())
    if any((workdir / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*")):
        return
    from nnunet_losses.synthetic import write_raw_dataset

    write_raw_dataset("cardiac", workdir / "nnUNet_raw", DATASET_ID, 20, seed=0, shape=(10, 160, 160))
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "2"], check=True, capture_output=True)
    subprocess.run(["nnunet-losses", "setup-maps", "-d", str(DATASET_ID), "-c", "2d", "--quiet"], check=True)


def build_trainer(name: str, device: str):
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_losses.nnunet.preflight import find_trainer_class

    folder = Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(DATASET_ID)
    plans = load_json(str(folder / "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = find_trainer_class(name)(plans, "2d", 0, load_json(str(folder / "dataset.json")), torch.device(device))
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.on_train_start()
        trainer.on_train_epoch_start()
    return trainer


def time_iterations(name: str, device: str, warmup: int, iterations: int) -> list[float]:
    trainer = build_trainer(name, device)
    try:
        times = []
        for i in range(warmup + iterations):
            start = time.perf_counter()
            trainer.train_step(next(trainer.dataloader_train))
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return times
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the dataset here between runs (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        prepare(workdir)
        import torch

        if args.device == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)  # as nnUNetv2_train does on the CPU
        times: dict[str, list[float]] = {name: [] for name in TRAINERS}
        for _ in range(args.rounds):
            for name in TRAINERS:
                times[name] += time_iterations(name, args.device, args.warmup, args.iterations)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    print(f"device: {device}; nnU-Net 2d default plans, 20 cases of 10x160x160; {args.rounds} rounds x {args.iterations} iterations")
    baseline = statistics.median(times["nnUNetTrainer"])
    print(f"\n{'trainer':<28} {'median s/iter':>13} {'vs nnUNetTrainer':>17}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<28} {median:>13.3f} {median / baseline:>16.3f}x")


if __name__ == "__main__":
    main()

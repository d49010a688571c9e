"""Time per training iteration of map trainers against nnUNetTrainer, data waiting included.

Same dataset, plans and machine, measured in the same run: an ACDC-like synthetic
dataset is written, planned and preprocessed by nnU-Net (default plans) and its maps
are written by setup_maps. Each trainer is built in-process exactly as
``nnUNetv2_train`` builds it (on CUDA: AMP, nnU-Net's default number of augmentation
processes, ``nnUNet_n_proc_DA`` if set), its data loaders start (nnU-Net's background
augmentation workers), and the wall time of ``train_step(next(dataloader))`` is
measured after warm-up iterations. The trainers take turns over several rounds and
each reports its median; ratios are against nnUNetTrainer.

    python benchmarks/train_step.py [--iterations 15] [--warmup 5] [--rounds 2] [--workdir DIR]
                                    [--device cpu|cuda] [--configurations 2d 3d_fullres] [--trainers ...]

On a GPU machine (the command whose output goes to ``benchmarks/results/``)::

    python benchmarks/train_step.py --device cuda --configurations 2d 3d_fullres \
        --trainers nnUNetTrainer nnUNetTrainerRRW nnUNetTrainerRWBoundary --iterations 30 --warmup 10
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from workspace import prepare_workspace

TRAINERS = ("nnUNetTrainer", "nnUNetTrainerRRW", "nnUNetTrainerRRWOnTheFly")
DATASET_ID = 990


def build_trainer(name: str, configuration: str, device: str):
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_losses.nnunet.preflight import find_trainer_class

    folder = Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(DATASET_ID)
    plans = load_json(str(folder / "nnUNetPlans.json"))
    plans["continue_training"] = False
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = find_trainer_class(name)(plans, configuration, 0, load_json(str(folder / "dataset.json")), torch.device(device))
        trainer.on_train_start()
        trainer.on_train_epoch_start()
    return trainer


def time_iterations(name: str, configuration: str, device: str, warmup: int, iterations: int) -> list[float]:
    import torch

    trainer = build_trainer(name, configuration, device)
    try:
        times = []
        for i in range(warmup + iterations):
            start = time.perf_counter()
            trainer.train_step(next(trainer.dataloader_train))
            if device == "cuda":
                torch.cuda.synchronize()
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
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configurations", nargs="+", default=["2d"])
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS))
    parser.add_argument("--workdir", type=Path, default=None, help="keep the dataset here between runs (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        prepare_workspace(workdir, DATASET_ID, 20, (10, 160, 160), args.configurations)
        import torch

        if args.device == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)  # as nnUNetv2_train does on the CPU
        results = {}
        for configuration in args.configurations:
            times: dict[str, list[float]] = {name: [] for name in args.trainers}
            for _ in range(args.rounds):
                for name in args.trainers:
                    times[name] += time_iterations(name, configuration, args.device, args.warmup, args.iterations)
            results[configuration] = times
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    processes = os.environ.get("nnUNet_n_proc_DA", "nnU-Net's default")
    print(f"device: {device}; augmentation processes: {processes}; nnU-Net default plans, 20 cases of 10x160x160; "
          f"{args.rounds} rounds x {args.iterations} iterations after {args.warmup} warm-up")
    for configuration, times in results.items():
        baseline = statistics.median(times["nnUNetTrainer"]) if "nnUNetTrainer" in times else None
        print(f"\n{configuration:<28} {'median s/iter':>13} {'vs nnUNetTrainer':>17}")
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"{name:<28} {median:>13.3f} {f'{median / baseline:>16.3f}x' if baseline else ''}")


if __name__ == "__main__":
    main()

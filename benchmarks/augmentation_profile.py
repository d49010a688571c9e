"""Where a trainer's augmentation time goes: seconds per batch of each transform of nnU-Net's pipeline, timed in place.

For each trainer, nnU-Net's training data loader exactly as the trainer builds it
(``initialize()``, ``get_dataloaders()``, ``nnUNet_n_proc_DA=0``, one torch thread); every
transform of its ``ComposeTransforms`` is wrapped by a timer, so the pipeline runs
unchanged. Printed per trainer: seconds per batch, the share spent in the transforms (each
above 5 ms listed), and the rest: loading, decoding and cropping the case
(``nnUNetDataLoader.generate_train_batch`` around the transforms). With ``--profile``, the
functions that took the most time (cProfile, own time).

The dataset must be preprocessed and mapped already, e.g. the workdir that
``benchmarks/data_loading.py --workdir DIR`` (dataset 992) or ``benchmarks/real_size.py
--workdir DIR`` (datasets 981, 982; fold ``all``) leaves:

    python benchmarks/augmentation_profile.py --workdir DIR -d 981 -c 3d_fullres --fold all \\
        --trainers nnUNetTrainer nnUNetTrainerRWBoundary [--batches 2] [--profile]

Glibc returns arrays above 32 MB to the system when they are freed, so each new array of
that size is paged in afresh; to see what that costs, run the same command with
``MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=8000000000
MALLOC_TOP_PAD_=1000000000`` in its environment.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections import Counter
from pathlib import Path

os.environ["nnUNet_n_proc_DA"] = "0"

from workspace import build_loader, point_nnunet_at  # noqa: E402


class TimedTransform:
    """A transform of the pipeline, called as before, its seconds added to ``totals[name]``."""

    def __init__(self, transform, name: str, totals: Counter) -> None:
        self.transform, self.name, self.totals = transform, name, totals

    def __call__(self, **data_dict):
        start = time.perf_counter()
        result = self.transform(**data_dict)
        self.totals[self.name] += time.perf_counter() - start
        return result


def profile_trainer(name: str, args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    loader = build_loader(name, args.dataset, args.configuration, args.fold)
    compose = loader.data_loader.transforms  # nnU-Net's SingleThreadedAugmenter around its nnUNetDataLoader
    totals: Counter = Counter()
    compose.transforms = [TimedTransform(t, f"{i:02d} {type(t).__name__}", totals) for i, t in enumerate(compose.transforms)]
    np.random.seed(0)
    torch.manual_seed(0)
    for _ in range(args.warmup):
        next(loader)
    totals.clear()
    profiler = cProfile.Profile() if args.profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    for _ in range(args.batches):
        next(loader)
    if profiler:
        profiler.disable()
    per_batch = (time.perf_counter() - start) / args.batches
    in_transforms = sum(totals.values()) / args.batches
    print(f"\n{name}: {per_batch:.3f} s/batch; transforms {in_transforms:.3f}, loading and cropping {per_batch - in_transforms:.3f}")
    for transform, seconds in sorted(totals.items()):
        if seconds / args.batches > 0.005:
            print(f"   {transform:<45} {seconds / args.batches:.3f}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="holds nnUNet_raw, nnUNet_preprocessed and nnUNet_results")
    parser.add_argument("-d", "--dataset", type=int, required=True)
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--fold", default="0", help="fold of the data loader (an integer, or all)")
    parser.add_argument("--trainers", nargs="+", default=["nnUNetTrainer", "nnUNetTrainerRRW", "nnUNetTrainerRWBoundary"])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also print the functions with the most own time (cProfile)")
    args = parser.parse_args()
    args.fold = args.fold if args.fold == "all" else int(args.fold)
    point_nnunet_at(args.workdir)
    import torch

    torch.set_num_threads(1)
    for name in args.trainers:
        profile_trainer(name, args)


if __name__ == "__main__":
    main()

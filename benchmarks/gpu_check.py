"""One run that answers the open GPU questions of the package, written to ``benchmarks/results/gpu_<device>.md``.

On one GPU (at most 8 minutes on an H200, data included)::

    python benchmarks/gpu_check.py [--workdir DIR] [--output FILE]

1. **The PyTorch EDT on the device against SciPy**: ``distance_to_feature`` (both min-plus
   forms) of random 2D and 3D masks with per-mask anisotropic spacing, device tensors,
   against ``scipy.ndimage.distance_transform_edt(sampling=...)`` (rtol 1e-4).
2. **The device maps of ``benchmarks/device_maps.py``'s batches** (2d: 12 x 256 x 256 at 6
   deep-supervision scales; 3d_fullres: 2 x 128^3 at 5), each transform checked against
   ``compute_map_stack`` per sample, then milliseconds per batch and peak memory.
3. **Training steps**: an ACDC-like synthetic dataset made by the package's generator
   (12 cases of 20 x 256 x 256), planned and preprocessed by nnU-Net (default plans, 2d
   and 3d_fullres), maps written by ``setup_maps``; for each configuration the trainers
   ``nnUNetTrainer``, ``nnUNetTrainerRRW``, ``nnUNetTrainerRWBoundary``,
   ``nnUNetTrainerRRWOnDevice`` and ``nnUNetTrainerRWBoundaryOnDevice`` are built in-process
   as ``nnUNetv2_train`` builds them (AMP on CUDA, nnU-Net's own compile rule
   ``_do_i_compile``, nnU-Net's default augmentation processes), and each reports, after
   warm-up iterations (compilation): seconds per iteration (``next(dataloader)`` +
   ``train_step``) and per step (``train_step`` alone), both against ``nnUNetTrainer``; for
   the device-mode trainers the milliseconds of their maps per step (the trainer's own map
   transport on a batch already on the device) and their share of the step (goal
   <= 5 %); the peak GPU memory; whether every loss was finite.

``--toy`` runs the same steps on the CPU at toy size (6 cases of 8 x 64 x 64, nnU-Net's
plans shrunk by ``small_plans``, 1 + 2 iterations, small map batches, augmentation in the
main process): the test suite runs it so that the script cannot rot.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from device_maps import CONFIGURATIONS as MAP_BATCHES
from device_maps import Batch, measure
from workspace import prepare_workspace

TRAINERS = (
    "nnUNetTrainer",
    "nnUNetTrainerRRW",
    "nnUNetTrainerRWBoundary",
    "nnUNetTrainerRRWOnDevice",
    "nnUNetTrainerRWBoundaryOnDevice",
)
CONFIGURATIONS = ("2d", "3d_fullres")
DATASET_ID = 994
MAP_SHARE_GOAL = 0.05
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Size:
    """How big a check is: its dataset, plans, iterations and map batches."""

    cases: int
    shape: tuple[int, int, int]
    plans: str
    warmup: int
    iterations: int
    map_repeats: int
    map_batches: dict[str, Batch]
    edt_shapes: tuple[tuple[int, ...], ...]


FULL = Size(12, (20, 256, 256), "nnUNetPlans", 5, 10, 5, MAP_BATCHES, ((12, 256, 256), (4, 64, 96, 80)))
TOY = Size(
    6, (8, 64, 64), "nnUNetSmallPlans", 1, 2, 1,
    {"2d": Batch((4, 64, 64), 3, (1.5, 1.5)), "3d_fullres": Batch((2, 8, 32, 32), 2, (5.0, 1.5, 1.5))},
    ((6, 40, 31), (4, 17, 24, 13)),
)


@dataclass
class TrainerResult:
    compiled: bool  # nnU-Net's _do_i_compile() for this trainer
    amp: bool  # nnU-Net's grad scaler is on
    iteration_seconds: float
    step_seconds: float
    map_seconds: float | None
    peak_bytes: int | None
    losses: list[float]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def edt_against_scipy(device: torch.device, shapes: Sequence[tuple[int, ...]]) -> list[tuple[str, str, float, bool]]:
    """(masks, min_plus, largest error in mm, within rtol 1e-4) of ``distance_to_feature`` on ``device`` against SciPy."""
    from nnunet_losses.maps import distance_to_feature

    rng = np.random.default_rng(0)
    rows = []
    for shape in shapes:
        density = rng.choice([0.001, 0.01, 0.1, 0.5], size=shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
        feature = rng.random(shape) < density
        feature[0] = False  # no feature voxel: inf everywhere
        spacing = rng.uniform(0.3, 5.0, size=(shape[0], len(shape) - 1))
        expected = np.full(shape, np.inf)
        for m in range(1, shape[0]):
            expected[m] = distance_transform_edt(~feature[m], sampling=spacing[m])
        finite = np.isfinite(expected)
        for min_plus in ("fused", "chunked"):
            result = distance_to_feature(torch.from_numpy(feature).to(device), torch.from_numpy(spacing).to(device), min_plus).cpu().numpy()
            error = float(np.abs(result[finite] - expected[finite]).max())
            close = bool(np.allclose(result, expected, rtol=1e-4, atol=0) and np.isinf(result[~finite]).all())
            rows.append(("x".join(map(str, shape)), min_plus, error, close))
    return rows


def device_map_rows(device: torch.device, size: Size) -> list[tuple[str, str, float, float]]:
    """(configuration, transform, ms per batch, peak MiB) of ``device_map_stack`` on ``device`` (each checked first)."""
    transforms = ("edt", "fused", "chunked") if device.type == "cpu" else ("fused", "chunked")
    rows = []
    for configuration, batch in size.map_batches.items():
        for transform in transforms:
            result = measure(batch, transform, device, size.map_repeats)
            rows.append((configuration, transform, 1000 * result["seconds"], result["peak_bytes"] / 2**20))
    return rows


def build_trainer(name: str, configuration: str, plans_name: str, device: torch.device):
    """A trainer as ``nnUNetv2_train`` builds it, through ``on_train_start`` (network, compile, loss, data loaders)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_losses.nnunet.preflight import find_trainer_class

    folder = Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(DATASET_ID)
    plans = load_json(str(folder / f"{plans_name}.json"))
    plans["continue_training"] = False
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = find_trainer_class(name)(plans, configuration, 0, load_json(str(folder / "dataset.json")), device)
        trainer.on_train_start()
        trainer.on_train_epoch_start()
    return trainer


def map_seconds_per_step(trainer, device: torch.device, repeats: int) -> float | None:
    """Median seconds of the device-mode trainer's map transport on one batch already on the device; ``None`` otherwise."""
    if getattr(trainer, "map_mode", None) != "device":
        return None
    batch = next(trainer.dataloader_train)
    target = [t.to(device) for t in batch["target"]] if isinstance(batch["target"], list) else batch["target"].to(device)
    times = []
    for _ in range(repeats + 1):  # the first call is not timed
        synchronize(device)
        start = time.perf_counter()
        trainer.map_transport.take({"target": target}, device)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def run_trainer(name: str, configuration: str, size: Size, device: torch.device) -> TrainerResult:
    """Warm-up then timed iterations of one trainer; its maps per step; peak GPU memory; every loss."""
    trainer = build_trainer(name, configuration, size.plans, device)
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        iterations, steps, losses = [], [], []
        for i in range(size.warmup + size.iterations):
            start = time.perf_counter()
            batch = next(trainer.dataloader_train)
            loaded = time.perf_counter()
            losses.append(float(trainer.train_step(batch)["loss"]))
            synchronize(device)
            if i >= size.warmup:
                iterations.append(time.perf_counter() - start)
                steps.append(time.perf_counter() - loaded)
        maps = map_seconds_per_step(trainer, device, size.map_repeats)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        return TrainerResult(bool(trainer._do_i_compile()), trainer.grad_scaler is not None, statistics.median(iterations),
                             statistics.median(steps), maps, peak, losses)
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()
        del trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def training_table(configuration: str, results: dict[str, TrainerResult]) -> list[str]:
    """Markdown rows of one configuration's trainers, ratios against nnUNetTrainer."""
    baseline = results["nnUNetTrainer"]
    lines = [
        f"### {configuration}",
        "",
        "| trainer | s/iteration | vs nnUNetTrainer | s/step | vs nnUNetTrainer | maps ms/step | maps share of step | peak GPU MiB | losses finite |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        if result.map_seconds is None:
            maps, share = "-", "-"
        else:
            fraction = result.map_seconds / result.step_seconds
            maps = f"{1000 * result.map_seconds:.2f}"
            share = f"{100 * fraction:.1f} % ({'meets' if fraction <= MAP_SHARE_GOAL else 'misses'} <= {100 * MAP_SHARE_GOAL:.0f} %)"
        peak = "-" if result.peak_bytes is None else f"{result.peak_bytes / 2**20:.0f}"
        finite = "yes" if all(np.isfinite(result.losses)) else f"NO: {result.losses}"
        lines.append(
            f"| {name} | {result.iteration_seconds:.4f} | {result.iteration_seconds / baseline.iteration_seconds:.3f}x "
            f"| {result.step_seconds:.4f} | {result.step_seconds / baseline.step_seconds:.3f}x | {maps} | {share} | {peak} | {finite} |"
        )
    return lines + [""]


def report(device_name: str, size: Size, toy: bool, edt_rows, map_rows, training, seconds: float) -> str:
    """The markdown of one check."""
    from importlib.metadata import version

    def on(flags: set[bool]) -> str:
        return "/".join("on" if flag else "off" for flag in sorted(flags, reverse=True))

    compiled = {c: on({r.compiled for r in results.values()}) for c, results in training.items()}
    amp = {c: on({r.amp for r in results.values()}) for c, results in training.items()}
    command = "python benchmarks/gpu_check.py" + (" --toy" if toy else "")
    lines = [
        f"# GPU check: {device_name}{' (toy size, CPU)' if toy else ''}",
        "",
        f"`{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {seconds:.0f} s in all; {platform.machine()}, "
        f"{os.cpu_count()} cores; torch {torch.__version__}, CUDA {torch.version.cuda}, nnU-Net {version('nnunetv2')}; "
        "AMP (nnU-Net's grad scaler): " + ", ".join(f"{c} {flag}" for c, flag in amp.items())
        + "; nnU-Net's compile (`_do_i_compile`): " + ", ".join(f"{c} {flag}" for c, flag in compiled.items()) + ".",
        "",
        "## PyTorch EDT against SciPy (`distance_to_feature` on the device, per-mask anisotropic spacing)",
        "",
        "| masks | min_plus | largest error (mm) | within rtol 1e-4 |",
        "|---|---|---|---|",
        *(f"| {shape} | {min_plus} | {error:.2e} | {'pass' if close else 'FAIL'} |" for shape, min_plus, error, close in edt_rows),
        "",
        "## Device maps of one batch at every deep-supervision scale (`device_map_stack`, rrw + 4-class signed distance)",
        "",
        "Each transform's maps were checked against `compute_map_stack` per sample (rtol 1e-4) before timing. "
        f"Median of {size.map_repeats} after an untimed call; peak: CUDA allocator above what it held before (on a CPU, the resident set).",
        "",
        "| batch | transform | ms per batch | peak MiB |",
        "|---|---|---|---|",
        *(f"| {configuration} {'x'.join(map(str, size.map_batches[configuration].shape))} | {transform} | {ms:.2f} | {peak:.1f} |"
          for configuration, transform, ms, peak in map_rows),
        "",
        f"## Training iterations ({size.cases} synthetic cases of {'x'.join(map(str, size.shape))}, {size.plans}, "
        f"median of {size.iterations} after {size.warmup} warm-up)",
        "",
    ]
    for configuration, results in training.items():
        lines += training_table(configuration, results)
    return "\n".join(lines)


def output_path(device_name: str, toy: bool) -> Path:
    return RESULTS / f"gpu_{re.sub(r'[^A-Za-z0-9]+', '_', device_name).strip('_')}{'_toy' if toy else ''}.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="the same steps on the CPU at toy size (what the test suite runs)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the dataset here between runs (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=None, help="markdown file (default: benchmarks/results/gpu_<device>.md)")
    args = parser.parse_args()
    if args.toy:
        device, size = torch.device("cpu"), TOY
        os.environ["nnUNet_n_proc_DA"] = "0"
    elif torch.cuda.is_available():
        device, size = torch.device("cuda"), FULL
    else:
        parser.error("no CUDA device: this check needs a GPU (--toy runs it at toy size on the CPU)")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    start = time.perf_counter()

    def progress(step: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {step}", file=sys.stderr, flush=True)

    progress("EDT against SciPy")
    edt_rows = edt_against_scipy(device, size.edt_shapes)
    progress("device maps of the benchmark batches")
    map_rows = device_map_rows(device, size)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        progress("synthetic data, nnU-Net planning and preprocessing, maps")
        prepare_workspace(workdir, DATASET_ID, size.cases, size.shape, CONFIGURATIONS)
        if size.plans != "nnUNetPlans":
            from nnunet_losses.nnunet.small_plans import make_small_plans

            make_small_plans(DATASET_ID, CONFIGURATIONS, features=(8, 16, 32), batch_size=2, target_plans=size.plans)
        training = {}
        for configuration in CONFIGURATIONS:
            training[configuration] = {}
            for name in TRAINERS:
                progress(f"{configuration} {name}")
                training[configuration][name] = run_trainer(name, configuration, size, device)
    progress("done")
    text = report(device_name, size, args.toy, edt_rows, map_rows, training, time.perf_counter() - start)
    output = args.output or output_path(device_name, args.toy)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    print(text)
    print(f"written: {output}", file=sys.stderr)


if __name__ == "__main__":
    main()

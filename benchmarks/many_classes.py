"""How the precomputed maps' storage and time grow with the number of classes, and what device maps cost instead.

Dataset: for each class count (``--classes``, background included), ``--cases`` CT-like
phantoms (:func:`nnunet_losses.synthetic.many_organs.many_organs_case`: organs of
different sizes, vessels and thin walls in a body, anisotropic spacing, noise) written as
an nnU-Net raw dataset (ids 993, 994, 995), planned and preprocessed by
``nnUNetv2_plan_and_preprocess``. Then, for each configuration, in this process and
single-threaded, ``setup_maps`` writes every case's ``rrw`` (1 channel) and
``signed_distance`` (one channel per class) map, and this measures on disk:

* maps bytes/voxel: the map files of all cases over the voxels of the preprocessed cases;
* nnU-Net bytes/voxel: nnU-Net's own preprocessed files (image ``<case>.b2nd`` and
  ``<case>_seg.b2nd``) over the same voxels, the reference;
* setup_maps seconds per case (computing and writing both kinds);
* the same, extrapolated linearly by voxel count to a 200x256x256 case (approximately:
  compression ratios depend on the anatomy; the distance transforms are linear in the voxels).

Last, when ``nnunet_losses.maps.device_map_stack`` is importable, the time to compute
the same maps with the device path for one training batch: 2 patches of the
configuration's patch size, cut from the preprocessed segmentations, at every
deep-supervision scale of its plans, with PyTorch on the CPU (``--device``), with the
number of EDTs it runs (one per sample and present class, the cost driver). Otherwise
that column says it was skipped.

The table is printed and written to ``benchmarks/results/many_classes.md``.

    python benchmarks/many_classes.py [--classes 4 16 64] [--cases 5] [--shape 64 160 160] [--spacing 2.5 1 1]
                                      [--configurations 3d_fullres 2d] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from workspace import point_nnunet_at

DATASET_IDS = (993, 994, 995)
REFERENCE_SHAPE = (200, 256, 256)
RESULTS = Path(__file__).resolve().parent / "results" / "many_classes.md"


@dataclass
class Row:
    """What was measured for one class count and configuration."""

    classes: int
    configuration: str
    cases: int
    voxels_per_case: float
    map_channels: int
    map_bytes_per_voxel: float
    nnunet_bytes_per_voxel: float
    setup_maps_seconds_per_case: float
    patch_size: tuple[int, ...]
    device_seconds_per_batch: float | None
    device_edts: int
    device_note: str

    @property
    def extrapolated_gb(self) -> float:
        return self.map_bytes_per_voxel * float(np.prod(REFERENCE_SHAPE)) / 1e9

    @property
    def extrapolated_seconds(self) -> float:
        return self.setup_maps_seconds_per_case * float(np.prod(REFERENCE_SHAPE)) / self.voxels_per_case


def prepare_dataset(workdir: Path, dataset_id: int, classes: int, args: argparse.Namespace, env: dict[str, str]) -> float:
    """Write the raw dataset and preprocess the configurations that are missing; returns nnU-Net's seconds (0 if none ran)."""
    from nnunet_losses.synthetic.many_organs import write_many_organs_dataset

    write_many_organs_dataset(workdir / "nnUNet_raw", dataset_id, args.cases, classes, seed=dataset_id, shape=args.shape, spacing=args.spacing)
    preprocessed = next(iter((workdir / "nnUNet_preprocessed").glob(f"Dataset{dataset_id}_*")), None)
    missing = [c for c in args.configurations if preprocessed is None or not (preprocessed / f"nnUNetPlans_{c}").is_dir()]
    if not missing:
        return 0.0
    start = time.perf_counter()
    command = ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", *missing, "-np", str(args.processes)]
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def file_bytes(paths: Sequence[Path]) -> int:
    return sum(path.stat().st_size for path in paths)


def measure_configuration(dataset_id: int, classes: int, configuration: str, args: argparse.Namespace) -> Row:
    """Write the maps of one configuration in this process (one process, one thread) and measure them on disk."""
    import blosc2

    from nnunet_losses.nnunet.configuration import load_configuration
    from nnunet_losses.nnunet.map_store import MapStore
    from nnunet_losses.nnunet.setup_maps import write_configuration_maps

    blosc2.set_nthreads(1)
    config = load_configuration(str(dataset_id), configuration)
    cases = config.case_identifiers()
    summary = write_configuration_maps(config, processes=1, overwrite=True, progress=False)
    store = MapStore(config)
    voxels = sum(int(np.prod(blosc2.open(str(store.seg_file(case)), mode="r").shape[1:])) for case in cases)
    map_bytes = file_bytes(sorted(store.folder.glob("*.b2nd")))
    nnunet_bytes = file_bytes([config.data_folder / f"{case}{suffix}.b2nd" for case in cases for suffix in ("", "_seg")])
    seconds, edts, note = device_batch_seconds(config, args)
    return Row(
        classes=classes,
        configuration=configuration,
        cases=len(cases),
        voxels_per_case=voxels / len(cases),
        map_channels=1 + config.num_classes,
        map_bytes_per_voxel=map_bytes / voxels,
        nnunet_bytes_per_voxel=nnunet_bytes / voxels,
        setup_maps_seconds_per_case=summary.seconds / len(cases),
        patch_size=tuple(int(p) for p in config.configuration_manager.patch_size),
        device_seconds_per_batch=seconds,
        device_edts=edts,
        device_note=note,
    )


def find_device_map_stack() -> Callable | None:
    """``device_map_stack`` of the package, or ``None`` where this version has none."""
    for module_name in ("nnunet_losses.maps", "nnunet_losses.maps.device"):
        try:
            function = getattr(importlib.import_module(module_name), "device_map_stack", None)
        except ImportError:
            function = None
        if function is not None:
            return function
    return None


def training_batch(config, batch_size: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[tuple[float, ...]]]:
    """Segmentation patches of one batch at every deep-supervision scale, and the spacing at each scale.

    Each patch of the configuration's patch size is cut from a random preprocessed case
    around a random labelled voxel (as nnU-Net's foreground oversampling does; padded
    with background where a case is smaller), so it holds many classes; the deep-supervision scales
    are nnU-Net's (``1 / cumprod(pool_op_kernel_sizes)`` without the last), each target
    taken from the full-resolution one by nearest-neighbour striding, as nnU-Net does.
    """
    import blosc2

    patch = tuple(int(p) for p in config.configuration_manager.patch_size)
    cases = config.case_identifiers()
    patches = []
    for _ in range(batch_size):
        case = cases[int(rng.integers(len(cases)))]
        seg = blosc2.open(str(config.data_folder / f"{case}_seg.b2nd"), mode="r")[:][0]
        seg = np.where(seg < 0, 0, seg)
        foreground = np.argwhere(seg > 0)
        centre = foreground[int(rng.integers(len(foreground)))]
        if len(patch) == 2:  # a 2d configuration trains on slices
            seg, centre = seg[centre[0]], centre[1:]
        padded = np.zeros([max(s, p) for s, p in zip(seg.shape, patch)], dtype=np.int16)
        padded[tuple(slice(0, s) for s in seg.shape)] = seg
        start = [int(np.clip(c - p // 2, 0, n - p)) for c, n, p in zip(centre, padded.shape, patch)]
        patches.append(padded[tuple(slice(a, a + p) for a, p in zip(start, patch))])
    full = np.stack(patches)[:, None]  # (B, 1, *patch)
    spacing = tuple(float(s) for s in config.configuration_manager.spacing)
    pools = np.cumprod(np.vstack(config.configuration_manager.pool_op_kernel_sizes), axis=0)[:-1]
    targets, spacings = [], []
    for factors in pools:
        step = [int(round(f)) for f in factors]
        targets.append(np.ascontiguousarray(full[(slice(None), slice(None), *(slice(None, None, s) for s in step))]))
        spacings.append(tuple(s * f for s, f in zip(spacing, step)))
    return targets, spacings


def edt_count(targets: Sequence[np.ndarray]) -> int:
    """The EDTs ``device_map_stack`` runs for these targets: one per (sample, present class) of a sample holding several classes."""
    count = 0
    for target in targets:
        for sample in target:
            present = len(np.unique(sample))
            count += present if present > 1 else 0
    return count


def device_batch_seconds(config, args: argparse.Namespace) -> tuple[float | None, int, str]:
    """Seconds to compute one batch's maps (both kinds, every deep-supervision scale) with ``device_map_stack``,
    the number of EDTs that takes, and a note on the batch."""
    function = find_device_map_stack()
    if function is None:
        return None, 0, "skipped: nnunet_losses.maps.device_map_stack is not importable in this version"
    import torch

    from nnunet_losses.nnunet.setup_maps import DEFAULT_KINDS

    targets, spacings = training_batch(config, args.batch_size, np.random.default_rng(0))
    tensors = [torch.from_numpy(t.astype(np.int64)).to(args.device) for t in targets]

    def call(target, spacing: tuple[float, ...]) -> dict:
        per_sample = torch.tensor([spacing] * target.shape[0], dtype=torch.float32, device=target.device)
        return function(target, DEFAULT_KINDS, config.num_classes, config.ignore_label, per_sample)

    warm = min(1, len(tensors) - 1)
    call(tensors[warm], spacings[warm])  # warm-up (allocations, lazy initialisation), untimed, on the second scale
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    times: list[float] = []
    while len(times) < args.device_repeats and sum(times) < 20.0:  # a median of cheap batches; one costly batch once
        start = time.perf_counter()
        for tensor, spacing in zip(tensors, spacings):
            call(tensor, spacing)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    scales = ", ".join("x".join(str(n) for n in t.shape[2:]) for t in targets)
    batch = config.configuration_manager.batch_size
    note = f"{args.batch_size} patches (the plans' batch: {batch}) at {len(targets)} scales ({scales}), torch on {args.device}"
    return seconds, edt_count(targets), note


def markdown_table(rows: Sequence[Row]) -> str:
    header = (
        "| classes | configuration | map channels | maps bytes/voxel | nnU-Net image+seg bytes/voxel | maps / nnU-Net "
        "| setup_maps s/case (measured) | maps GB per 200x256x256 case* | setup_maps s per 200x256x256 case* "
        "| device maps s/batch (EDTs) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        device = "skipped" if r.device_seconds_per_batch is None else f"{r.device_seconds_per_batch:.2f} ({r.device_edts})"
        lines.append(
            f"| {r.classes} | {r.configuration} | {r.map_channels} | {r.map_bytes_per_voxel:.2f} | {r.nnunet_bytes_per_voxel:.2f} "
            f"| {r.map_bytes_per_voxel / r.nnunet_bytes_per_voxel:.1f}x | {r.setup_maps_seconds_per_case:.2f} "
            f"| {r.extrapolated_gb:.2f} | {r.extrapolated_seconds:.1f} | {device} |"
        )
    return header + "\n".join(lines) + "\n"


def preprocessing_note(preprocessing: dict[int, float], processes: int) -> str:
    """A sentence on nnU-Net's own preprocessing times ('' when every dataset was reused)."""
    ran = [f"{seconds:.0f} s for {classes} classes" for classes, seconds in preprocessing.items() if seconds]
    return f" nnU-Net's own planning and preprocessing (-np {processes}) took {', '.join(ran)}." if ran else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 16, 64], help="class counts, background included (at most 3)")
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 160, 160], help="z y x voxels of a raw case")
    parser.add_argument("--spacing", type=float, nargs=3, default=[2.5, 1.0, 1.0], help="z y x mm")
    parser.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d"])
    parser.add_argument("-np", "--processes", type=int, default=2, help="processes of nnU-Net's preprocessing")
    parser.add_argument("--batch-size", type=int, default=2, help="patches of the device-maps batch")
    parser.add_argument("--device", default="cpu", help="torch device of the device maps")
    parser.add_argument("--device-repeats", type=int, default=5, help="timed device batches (median), fewer once 20 s are spent")
    parser.add_argument("--workdir", type=Path, help="keep the nnU-Net folders here (reused); default: a temporary folder")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if len(args.classes) > len(DATASET_IDS):
        parser.error(f"at most {len(DATASET_IDS)} class counts (dataset ids {DATASET_IDS})")

    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[Row] = []
    preprocessing: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="many_classes_") as scratch:
        workdir = args.workdir or Path(scratch)
        env = point_nnunet_at(workdir)
        for dataset_id, classes in zip(DATASET_IDS, args.classes):
            preprocessing[classes] = prepare_dataset(workdir, dataset_id, classes, args, env)
            for configuration in args.configurations:
                row = measure_configuration(dataset_id, classes, configuration, args)
                rows.append(row)
                print(f"{classes} classes, {configuration}: {row.map_bytes_per_voxel:.1f} maps bytes/voxel, "
                      f"{row.setup_maps_seconds_per_case:.2f} s/case; device maps: {row.device_note}", flush=True)
    load_after = os.getloadavg()

    table = markdown_table(rows)
    notes = list(dict.fromkeys(f"{r.configuration}: {r.device_note}" for r in rows))
    shape = "x".join(map(str, args.shape))
    spacing = "x".join(f"{s:g}" for s in args.spacing)
    command = "python benchmarks/many_classes.py " + " ".join(sys.argv[1:])
    report = (
        f"# Map storage with many classes\n\n"
        f"`{command.strip()}` on {datetime.date.today().isoformat()}: {platform.machine()} CPU, {os.cpu_count()} cores, "
        f"shared with other jobs (load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"{time.perf_counter() - started:.0f} s in all). {args.cases} CT-like phantoms per class count, {shape} voxels "
        f"at {spacing} mm (z y x) before nnU-Net's preprocessing; classes include the background.\n\n"
        f"{table}\n"
        f"\\* extrapolated linearly by voxel count from the measured cases. "
        f"Maps: `rrw` (1 channel) + `signed_distance` (one channel per class), as `setup_maps` stores them (map format 3: "
        f"8-bit RRW and float16 distances, compressed; docs/maps.md, Stored format); setup_maps time: one process, one thread, "
        f"computing and writing both kinds."
        + preprocessing_note(preprocessing, args.processes)
        + f"\n\nDevice maps (`device_map_stack`, both kinds, median over up to {args.device_repeats} timed batches "
        "after an untimed call, fewer once 20 s are spent; EDTs: one per (sample, present class) pair of a sample "
        "holding several classes, summed over the scales): " + "; ".join(notes) + ".\n"
    )
    print("\n" + report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)


if __name__ == "__main__":
    main()

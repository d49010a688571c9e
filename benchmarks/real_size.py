"""The maps at real dataset size: setup_maps against nnU-Net's preprocessing, disk, and the augmentation per batch.

Two CT-like phantoms (:func:`nnunet_losses.synthetic.many_organs.many_organs_case`: organs
of different sizes, vessels and thin walls, anisotropic spacing, noise), each written as an
nnU-Net raw dataset and planned with nnU-Net's default plans:

* ``abdomen``: 14 classes, one case of 200x512x512 voxels at 1.5x0.8x0.8 mm (an abdominal CT);
* ``total``: 117 classes (TotalSegmentator's label count), two cases of 300x300x300 at 1.5 mm.

For each, in 3d_fullres, it measures

* ``nnUNetv2_preprocess -np 2`` and ``setup_maps -np 2``: wall seconds per case and the peak
  resident memory of the largest process (a worker; from ``getrusage`` of the command's
  process tree, so every worker is included);
* bytes per voxel: the map files, and nnU-Net's own ``<case>.b2nd`` + ``<case>_seg.b2nd``;
* seconds per batch of nnU-Net's augmentation (one process, one thread; the trainers' own
  data loaders at the default 3d_fullres patch, fold ``all``) for ``nnUNetTrainer``,
  ``nnUNetTrainerRRW``, ``nnUNetTrainerRWBoundary`` and ``nnUNetTrainerRRWOnDevice``, as
  ratios to ``nnUNetTrainer`` measured in the same run (the device trainer's maps are
  computed in the training step, not here: ``benchmarks/device_maps.py``).

The table is printed and written to ``benchmarks/results/real_size.md``.

    python benchmarks/real_size.py [--only abdomen total] [--batches 8] [--warmup 1] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ["nnUNet_n_proc_DA"] = "0"

from workspace import point_nnunet_at, time_interleaved  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "real_size.md"
TRAINERS = ("nnUNetTrainer", "nnUNetTrainerRRW", "nnUNetTrainerRWBoundary", "nnUNetTrainerRRWOnDevice")
MEASURED = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode:
    sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
print(json.dumps({"seconds": time.perf_counter() - start, "peak_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""
"""Runs a command; prints its wall seconds and the largest peak resident set of its process tree."""


@dataclass(frozen=True)
class Phantom:
    name: str
    dataset_id: int
    classes: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    cases: int


PHANTOMS = {
    "abdomen": Phantom("abdomen", 981, 14, (200, 512, 512), (1.5, 0.8, 0.8), 1),
    "total": Phantom("total", 982, 117, (300, 300, 300), (1.5, 1.5, 1.5), 2),
}


def measured(command: list[str], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", MEASURED, *command], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(phantom: Phantom, workdir: Path, args: argparse.Namespace) -> dict:
    import blosc2

    from nnunet_losses.nnunet.configuration import load_configuration
    from nnunet_losses.nnunet.map_store import MapStore
    from nnunet_losses.synthetic.many_organs import write_many_organs_dataset

    env = point_nnunet_at(workdir)
    print(f"[{phantom.name}] writing {phantom.cases} phantom(s) of {phantom.shape}, {phantom.classes} classes", flush=True)
    write_many_organs_dataset(workdir / "nnUNet_raw", phantom.dataset_id, phantom.cases, phantom.classes, seed=phantom.dataset_id,
                              shape=phantom.shape, spacing=phantom.spacing)  # fmt: skip
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(phantom.dataset_id), "--no_pp"], check=True, capture_output=True, env=env)
    print(f"[{phantom.name}] nnUNetv2_preprocess", flush=True)
    preprocess = measured(["nnUNetv2_preprocess", "-d", str(phantom.dataset_id), "-c", "3d_fullres", "-np", "2"], env)
    print(f"[{phantom.name}] setup_maps", flush=True)
    maps = measured(["nnunet-losses", "setup-maps", "-d", str(phantom.dataset_id), "-c", "3d_fullres", "-np", "2", "--overwrite", "--quiet"], env)
    config = load_configuration(str(phantom.dataset_id), "3d_fullres")
    store = MapStore(config)
    cases = config.case_identifiers()
    voxels = sum(math.prod(blosc2.open(str(store.seg_file(case)), mode="r").shape[1:]) for case in cases)
    map_bytes = {kind: sum(store.path(case, kind).stat().st_size for case in cases) for kind in ("rrw", "signed_distance")}
    nnunet_bytes = sum((config.data_folder / f"{case}{suffix}.b2nd").stat().st_size for case in cases for suffix in ("", "_seg"))
    import torch

    torch.set_num_threads(1)
    print(f"[{phantom.name}] augmentation, {', '.join(TRAINERS)}, taking turns", flush=True)
    times = time_interleaved(TRAINERS, phantom.dataset_id, "3d_fullres", args.warmup, args.batches, fold="all")
    return {
        "phantom": phantom,
        "voxels_per_case": voxels / len(cases),
        "patch": tuple(int(p) for p in config.configuration_manager.patch_size),
        "batch_size": int(config.configuration_manager.batch_size),
        "preprocess": {key: value / (len(cases) if key == "seconds" else 1) for key, value in preprocess.items()},
        "maps": {key: value / (len(cases) if key == "seconds" else 1) for key, value in maps.items()},
        "map_bytes_per_voxel": {kind: size / voxels for kind, size in map_bytes.items()},
        "nnunet_bytes_per_voxel": nnunet_bytes / voxels,
        "seconds_per_batch": {name: sum(samples) / len(samples) for name, samples in times.items()},
    }


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"# Maps at real dataset size ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. `python benchmarks/real_size.py`; nnU-Net default plans, "
        f"3d_fullres. Augmentation: one process, one thread, mean of {args.batches} batches per trainer (taking turns, the same draws) after "
        f"{args.warmup} warm-up batch(es), ratios to nnUNetTrainer in the same run.",
        "",
        "| phantom | classes | case (voxels) | nnUNetv2_preprocess s/case, peak | setup_maps s/case, peak | maps bytes/voxel (rrw + signed distance) | "
        "nnU-Net bytes/voxel | patch x batch | s/batch nnUNetTrainer | RRW | RW-Boundary | RRWOnDevice |",
        "|---|---:|---|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        p, t = r["phantom"], r["seconds_per_batch"]
        base = t["nnUNetTrainer"]
        rrw, sd = r["map_bytes_per_voxel"]["rrw"], r["map_bytes_per_voxel"]["signed_distance"]
        lines.append(
            f"| {p.name} | {p.classes} | {'x'.join(map(str, p.shape))} at {'x'.join(map(str, p.spacing))} mm, {r['voxels_per_case'] / 1e6:.1f} M after preprocessing | "
            f"{r['preprocess']['seconds']:.1f} s, {r['preprocess']['peak_bytes'] / 2**30:.2f} GiB | "
            f"{r['maps']['seconds']:.1f} s, {r['maps']['peak_bytes'] / 2**30:.2f} GiB | "
            f"{rrw + sd:.2f} ({rrw:.2f} + {sd:.2f}; {sd / p.classes:.3f} per class) | {r['nnunet_bytes_per_voxel']:.2f} | "
            f"{'x'.join(map(str, r['patch']))} x {r['batch_size']} | {base:.2f} | "
            + " | ".join(f"{t[name] / base:.2f}x" for name in TRAINERS[1:])
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(PHANTOMS), default=list(PHANTOMS))
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the datasets here between runs (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        results = [measure(PHANTOMS[name], workdir, args) for name in args.only]
    table = markdown(results, args)
    print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(table)
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()

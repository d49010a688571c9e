"""Wall time of ``setup_maps.py`` against ``nnUNetv2_preprocess`` for the same configuration, same run.

Dataset: ACDC-like synthetic cardiac cases with ACDC-like varying voxel spacing
(slice distance 5-10 mm, in-plane 1.3-1.7 mm), so nnU-Net resamples them as it does
real data. nnU-Net plans once; then, for each configuration and round, the two
commands run as subprocesses with the same number of processes, alternately:
``nnUNetv2_preprocess -c C -np N`` and ``python setup_maps.py -c C -np N --overwrite``.
Both include their start-up (Python, PyTorch and nnU-Net imports: about 2-3 s each
here); a third column times a second ``setup_maps.py`` run that finds every map valid,
i.e. that fixed start-up plus the checks. Each reports the median over the rounds; the
ratio is setup_maps / nnUNetv2_preprocess (goal: <= 0.25). Last, the per-case cost of the
maps is split, in this process and single-threaded, into computing them and writing them.

    python benchmarks/setup_maps.py [--cases 20] [--rounds 2] [-np 2] [--configurations 2d 3d_fullres]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

DATASET_ID = 991
REPO = Path(__file__).resolve().parents[1]


def write_dataset(raw: Path, cases: int) -> None:
    from nnunet_losses.synthetic import write_raw_dataset

    folder = write_raw_dataset("cardiac", raw, DATASET_ID, cases, seed=1, shape=(12, 224, 224))
    rng = np.random.default_rng(0)
    for image_file in sorted((folder / "imagesTr").glob("*.nii.gz")):
        spacing = (float(rng.uniform(1.3, 1.7)),) * 2 + (float(rng.choice([5.0, 6.5, 8.0, 10.0])),)  # SimpleITK order x, y, z
        label_file = folder / "labelsTr" / image_file.name.replace("_0000", "")
        for path in (image_file, label_file):
            image = sitk.ReadImage(str(path))
            image.SetSpacing(spacing)
            sitk.WriteImage(image, str(path))


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def per_case_split(configuration: str) -> tuple[float, float]:
    """Mean seconds per case spent computing all maps and writing them (one process)."""
    from nnunet_losses.nnunet.configuration import load_configuration
    from nnunet_losses.nnunet.map_layout import compute_map_stack
    from nnunet_losses.nnunet.map_store import MapStore, read_segmentation
    from nnunet_losses.nnunet.setup_maps import DEFAULT_KINDS

    config = load_configuration(str(DATASET_ID), configuration)
    store = MapStore(config)
    compute = write = 0.0
    cases = config.case_identifiers()
    for case in cases:
        content, fingerprint = read_segmentation(store.seg_file(case))
        spacing = config.case_spacing(config.load_properties(case))
        start = time.perf_counter()
        maps = compute_map_stack(content[0], DEFAULT_KINDS, config.num_classes, config.ignore_label, spacing)
        middle = time.perf_counter()
        for kind, values in maps.items():
            store.write(case, kind, values, False, spacing, fingerprint)
        compute, write = compute + middle - start, write + time.perf_counter() - middle
    return compute / len(cases), write / len(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-np", "--processes", type=int, default=2)
    parser.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            os.environ[name] = str(root / name)
            (root / name).mkdir()
        write_dataset(root / "nnUNet_raw", args.cases)
        subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "--no_pp", "-np", str(args.processes)], check=True, capture_output=True)
        print(f"machine: {platform.machine()} CPU, {os.cpu_count()} cores; {args.cases} cases of 12x224x224 before resampling; -np {args.processes}")
        print(f"\n{'configuration':<14} {'nnUNetv2_preprocess s':>22} {'setup_maps.py s':>16} {'ratio':>7} {'re-run, all valid s':>20}")
        for configuration in args.configurations:
            preprocess, maps, noop = [], [], []
            setup_maps = [sys.executable, str(REPO / "setup_maps.py"), "-d", str(DATASET_ID), "-c", configuration, "-np", str(args.processes), "--quiet"]
            for _ in range(args.rounds):
                preprocess.append(timed(["nnUNetv2_preprocess", "-d", str(DATASET_ID), "-c", configuration, "-np", str(args.processes)]))
                maps.append(timed([*setup_maps, "--overwrite"]))
                noop.append(timed(setup_maps))
            p, m = statistics.median(preprocess), statistics.median(maps)
            print(f"{configuration:<14} {p:>22.1f} {m:>16.1f} {m / p:>6.2f}x {statistics.median(noop):>20.1f}")
        print("\nper case, one process, one thread:")
        for configuration in args.configurations:
            compute, write = per_case_split(configuration)
            print(f"  {configuration:<12} computing the maps {compute * 1000:.0f} ms, writing them {write * 1000:.0f} ms")


if __name__ == "__main__":
    main()

"""Map computation speed: nnunet_losses.maps against the SciPy per-class reference.

Case: an ACDC-like synthetic cardiac volume (20 x 256 x 256 voxels, 4 classes,
spacing 5 x 1.5 x 1.5 mm). References, timed in the same run:

* RRW: for each class, ``scipy.ndimage.distance_transform_edt`` of the class mask and
  the per-class normalisation (what the RW reference code does per class);
* RW-Boundary: for each class, the EDT of the mask and of its complement, as
  boundary-loss's ``one_hot2dist`` does.

Ours: one multi-label EDT of the ``edt`` package for all classes (+ one binary EDT
per class for RW-Boundary), single-threaded and with 2 threads. "RRW stored" is the
one-channel form that ``setup_maps.py`` writes and the on-the-fly mode computes
(:func:`~nnunet_losses.maps.rrw_compact`); "RRW" is the full C-channel array. Timings alternate
between methods and report the median of ``--repeats`` runs; the ratio is
reference time / our time. Outputs are checked to agree within 1e-4 first. "EDT" compares
the building blocks: one SciPy EDT of one class mask against one multi-label EDT of all
classes (:func:`~nnunet_losses.maps.own_class_distance`).

    python benchmarks/maps.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
from scipy.ndimage import distance_transform_edt
from nnunet_losses.maps import own_class_distance, rrw_compact, rrw_map, signed_distance_map
from nnunet_losses.maps.reference import scipy_rrw_map, scipy_signed_distance_map
from nnunet_losses.synthetic import cardiac_case

SHAPE = (20, 256, 256)
SPACING = (5.0, 1.5, 1.5)
NUM_CLASSES = 4


def median_times(functions: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    _, labels, _ = cardiac_case(seed=0, shape=SHAPE, spacing=SPACING)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; case {SHAPE}, {NUM_CLASSES} classes, spacing {SPACING} mm")
    print(f"class voxel counts: {np.bincount(labels.ravel(), minlength=NUM_CLASSES).tolist()}")

    np.testing.assert_allclose(rrw_map(labels, NUM_CLASSES, SPACING), scipy_rrw_map(labels, NUM_CLASSES, SPACING), atol=1e-4)
    np.testing.assert_allclose(signed_distance_map(labels, NUM_CLASSES, SPACING), scipy_signed_distance_map(labels, NUM_CLASSES, SPACING), atol=1e-4)

    groups = {
        "RRW": {
            "reference": lambda: scipy_rrw_map(labels, NUM_CLASSES, SPACING),
            "ours, 1 thread": lambda: rrw_map(labels, NUM_CLASSES, SPACING, threads=1),
            "ours, 2 threads": lambda: rrw_map(labels, NUM_CLASSES, SPACING, threads=2),
            "stored, 1 thread": lambda: rrw_compact(labels, NUM_CLASSES, SPACING, threads=1),
            "stored, 2 threads": lambda: rrw_compact(labels, NUM_CLASSES, SPACING, threads=2),
        },
        "RW-Boundary": {
            "reference": lambda: scipy_signed_distance_map(labels, NUM_CLASSES, SPACING),
            "ours, 1 thread": lambda: signed_distance_map(labels, NUM_CLASSES, SPACING, threads=1),
            "ours, 2 threads": lambda: signed_distance_map(labels, NUM_CLASSES, SPACING, threads=2),
        },
        "EDT": {
            "reference": lambda: distance_transform_edt(labels == 1, sampling=SPACING),
            "all classes, 1 thread": lambda: own_class_distance(labels, SPACING, threads=1),
        },
    }
    print(f"\n{'map':<12} {'method':<21} {'median s':>9} {'speed-up':>9}")
    for group, functions in groups.items():
        times = median_times(functions, args.repeats)
        for name, seconds in times.items():
            print(f"{group:<12} {name:<21} {seconds:>9.4f} {times['reference'] / seconds:>8.1f}x")


if __name__ == "__main__":
    main()

"""Stored map format: bytes per voxel and patch-box read time, compact format against the old float32 one.

Case: the package's CT-like phantom (``nnunet_losses.synthetic.many_organs``), full-resolution
slices of 512x512 at 1.5 x 0.8 x 0.8 mm, with 4 and 14 classes (background included). Both
stored kinds (``rrw``, ``signed_distance``) are written twice, in the same run:

* baseline: map format 2, as the package wrote it before (float32, uncompressed blosc2,
  chunks holding all channels, one-plane blocks);
* compact: the current format (:data:`nnunet_losses.nnunet.map_store.ENCODINGS`, written by
  :func:`~nnunet_losses.nnunet.map_store.create_map_file`).

Reads: what a training data loader does per sample, one thread: a patch box of every map
decoded into a preallocated float32 buffer (compact: :meth:`StoredMap.read_into`, which
dequantises; baseline: blosc2 straight into the buffer). 3d_fullres: 128x128x128 boxes; 2d:
one 512x512 slice (files chunked for that patch). Box positions are random (fixed seed), the
two formats alternate, and the median is reported; the files are in the page cache, as in
training after the first epoch. Ratios are compact / baseline.

    python benchmarks/map_format.py [--depth 128] [--classes 4 14] [--reads 30]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import blosc2
import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

from nnunet_losses.maps import compute_maps
from nnunet_losses.nnunet.map_store import ENCODINGS, StoredMap, create_map_file
from nnunet_losses.synthetic.many_organs import many_organs_case

SPACING = (1.5, 0.8, 0.8)
KINDS = ("rrw", "signed_distance")
PATCHES = {"3d_fullres": (128, 128, 128), "2d": (512, 512)}


def write_format_2(path: Path, values: np.ndarray, patch: tuple[int, ...]) -> None:
    """A map file as format 2 wrote it: float32, uncompressed, chunks of all channels, evened out."""
    _, chunks = comp_blosc2_params((1, *values.shape[1:]), patch, bytes_per_pixel=4)
    even = tuple(-(-n // -(-n // c)) for n, c in zip(values.shape[1:], chunks[1:]))
    blosc2.asarray(
        values, urlpath=str(path), mode="w", chunks=(values.shape[0], *even), blocks=(1, 1, *even[1:]),
        cparams={"codec": blosc2.Codec.LZ4, "clevel": 0, "nthreads": 1},
    )


def read_baseline(array: blosc2.NDArray, out: np.ndarray, starts: tuple[int, ...]) -> None:
    stops = tuple(s + n for s, n in zip(starts, out.shape[1:]))
    array.get_slice_numpy(out, ((0, *starts), (array.shape[0], *stops)))


def read_compact(stored: StoredMap, out: np.ndarray, starts: tuple[int, ...]) -> None:
    stored.read_into(out, [(s, s + n) for s, n in zip(starts, out.shape[1:])])


def measure(classes: int, depth: int, reads: int, folder: Path) -> None:
    _, labels, spacing = many_organs_case(0, classes, (depth, 512, 512), SPACING)
    start = time.perf_counter()
    maps = compute_maps(KINDS, labels, classes, spacing)
    print(f"\n{classes} classes, case {labels.shape} at {spacing} mm ({time.perf_counter() - start:.0f} s to compute the maps)")
    voxels = labels.size
    rng = np.random.default_rng(0)
    for configuration, patch in PATCHES.items():
        box = (1, *patch) if len(patch) == 2 else patch
        if any(b > n for b, n in zip(box, labels.shape)):
            print(f"  {configuration}: case smaller than the box {box}, skipped")
            continue
        sizes: dict[str, list[int]] = {"baseline": [], "compact": []}
        old, new = [], []
        for kind in KINDS:
            values = maps[kind]
            old_path, new_path = folder / f"{kind}_old.b2nd", folder / f"{kind}_new.b2nd"
            write_format_2(old_path, values, patch)
            stored, _ = create_map_file(new_path, kind, iter(values), values.shape, patch)
            del stored
            sizes["baseline"].append(old_path.stat().st_size)
            sizes["compact"].append(new_path.stat().st_size)
            old.append(blosc2.open(str(old_path), mode="r", mmap_mode="r", dparams={"nthreads": 1}))
            new.append(StoredMap(blosc2.open(str(new_path), mode="r", mmap_mode="r", dparams={"nthreads": 1}), ENCODINGS[kind], "benchmark", kind))
        channels = sum(m.shape[0] for m in maps.values())
        out = np.empty((channels, *box), dtype=np.float32)
        times: dict[str, list[float]] = {"baseline": [], "compact": []}
        for _ in range(reads):
            starts = tuple(int(rng.integers(0, n - b + 1)) for n, b in zip(labels.shape, box))
            for name, arrays, reader in (("baseline", old, read_baseline), ("compact", new, read_compact)):
                begin = time.perf_counter()
                first = 0
                for array in arrays:
                    reader(array, out[first : first + array.shape[0]], starts)
                    first += array.shape[0]
                times[name].append(time.perf_counter() - begin)
        baseline, compact = (statistics.median(times[n]) for n in ("baseline", "compact"))
        rrw_old, sd_old = (b / voxels for b in sizes["baseline"])
        rrw_new, sd_new = (b / voxels for b in sizes["compact"])
        print(
            f"  {configuration} (chunks for a {patch} patch): bytes/voxel rrw {rrw_old:.2f} -> {rrw_new:.3f}, "
            f"signed_distance {sd_old:.2f} -> {sd_new:.3f} ({sd_new / classes:.3f} per class channel), "
            f"both {rrw_old + sd_old:.2f} -> {rrw_new + sd_new:.3f} (ratio {(rrw_new + sd_new) / (rrw_old + sd_old):.3f})"
        )
        print(
            f"  {configuration} read of a {'x'.join(map(str, box))} box of all {channels} channels: baseline {baseline * 1e3:.1f} ms, "
            f"compact {compact * 1e3:.1f} ms (ratio {compact / baseline:.2f}; compact decodes "
            f"{out.nbytes / compact / 1e9:.2f} GB/s of float32 output)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=128, help="slices of the case (512x512 each)")
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 14])
    parser.add_argument("--reads", type=int, default=30)
    args = parser.parse_args()
    blosc2.set_nthreads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as scratch:
        for classes in args.classes:
            measure(classes, args.depth, args.reads, Path(scratch))


if __name__ == "__main__":
    main()

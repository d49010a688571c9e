"""What reading one patch's maps costs in the augmentation workers, piece by piece, one thread.

On the maps ``benchmarks/data_loading.py --workdir DIR`` leaves (12 ACDC-like 4-class cases
of 20x256x256; run that first), this times, with ratios measured in the same run:

* decoding the signed distance as stored (LZ4HC level 6, byte shuffle, byte delta) against
  the same values rewritten with ZSTD level 3 (the codec before): a whole 4-channel case of
  the 3d_fullres files and one 4-channel slice of the 2d files; bytes per voxel and channel;
* resampling a 4-channel, 20-slice dummy-2D patch (80 merged channels, 256x256, a rotated
  and zoomed grid) with ``grid_sample`` on the channels-first buffer against the
  channels-last one the package uses (and whether both give the same values, bit for bit).

    python benchmarks/patch_reading.py --workdir DIR [--repeats 20]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import blosc2
import numpy as np
import torch

DATASET = "Dataset992_SyntheticCardiac"


def median_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def codecs(path: Path, box: tuple[tuple[int, ...], tuple[int, ...]], repeats: int) -> tuple[float, float, float, float]:
    """(LZ4HC ms, ZSTD ms, LZ4HC bytes/voxel/channel, ZSTD bytes/voxel/channel) of reading ``box`` of the map file."""
    stored = blosc2.open(str(path), mode="r", dparams={"nthreads": 1})
    values = stored[:]
    cparams = stored.schunk.cparams
    zstd = blosc2.asarray(
        values, chunks=stored.chunks, blocks=stored.blocks, dparams={"nthreads": 1},
        cparams={"codec": blosc2.Codec.ZSTD, "clevel": 3, "filters": list(cparams.filters[:2]), "filters_meta": [0, 0], "nthreads": 1},
    )
    out = np.empty(tuple(b - a for a, b in zip(*box)), dtype=values.dtype)
    times = [median_ms(lambda array=array: array.get_slice_numpy(out, box), repeats) for array in (stored, zstd)]
    sizes = [array.schunk.cbytes / values.size for array in (stored, zstd)]
    return times[0], times[1], sizes[0], sizes[1]


def resampling(repeats: int) -> tuple[float, float, bool]:
    """(channels-first ms, channels-last ms, equal) of grid_sample over 80 merged channels of 256x256."""
    generator = torch.Generator().manual_seed(0)
    values = torch.randn((80, 300, 300), generator=generator) * 30
    angle, zoom = 0.3, 0.9
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, 256), torch.linspace(-1, 1, 256), indexing="ij")
    grid = torch.stack([zoom * (math.cos(angle) * cols - math.sin(angle) * rows), zoom * (math.sin(angle) * cols + math.cos(angle) * rows)], -1)
    last = values.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    sample = lambda source: torch.nn.functional.grid_sample(source[None], grid[None], align_corners=False)  # noqa: E731
    equal = torch.equal(sample(values), sample(last))
    return median_ms(lambda: sample(values), repeats), median_ms(lambda: sample(last), repeats), equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    maps = args.workdir / "nnUNet_preprocessed" / DATASET / "nnunet_losses_maps"
    whole = next((maps / "nnUNetPlans_3d_fullres").glob("*__signed_distance.b2nd"))
    sliced = next((maps / "nnUNetPlans_2d").glob("*__signed_distance.b2nd"))
    shape = blosc2.open(str(whole), mode="r").shape
    print("signed distance, one thread         LZ4HC ms   ZSTD ms   ratio   LZ4HC B/voxel/ch   ZSTD B/voxel/ch")
    for label, path, box in (
        (f"whole case {shape}", whole, ((0,) * 4, shape)),
        ("one slice of the 2d files", sliced, ((0, 10, 0, 0), (shape[0], 11, *shape[2:]))),
    ):
        lz4, zstd, lz4_size, zstd_size = codecs(path, box, args.repeats)
        print(f"{label:<36} {lz4:8.2f} {zstd:9.2f} {zstd / lz4:6.2f}x {lz4_size:18.3f} {zstd_size:17.3f}")
    first, last, equal = resampling(args.repeats)
    print(f"\ngrid_sample, 80 channels, 256x256: channels-first {first:.1f} ms, channels-last {last:.1f} ms "
          f"({first / last:.2f}x as fast), same values: {equal}")


if __name__ == "__main__":
    main()

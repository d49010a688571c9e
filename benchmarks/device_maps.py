"""Time and peak memory of the training maps of one batch: ``device_map_stack`` by transform, against ``compute_map_stack`` per sample.

Maps: kinds ``rrw`` + ``signed_distance``, 4 classes, at every deep-supervision scale of
nnU-Net's default plans (what a trainer computing its maps from the augmented target
needs per iteration):

* 2d: a batch of 12 x 256 x 256 (slices of ACDC-like synthetic cases), pool ops
  (1,1) + 6 x (2,2), so 6 scales: 1, 1/2, ..., 1/32 per axis;
* 3d_fullres: a batch of 2 x 128 x 128 x 128, pool ops (1,1,1) + 5 x (2,2,2), so 5 scales:
  1, 1/2, ..., 1/16 per axis.

Lower scales are the nearest-neighbour downsampled target, as nnU-Net's
``DownsampleSegForDSTransform``; the spacing of a scale is the sample's spacing divided
by the scale; every sample has its own spacing (zoom augmentation).

Each ``device_map_stack`` transform (``edt``: the ``edt`` package on the host, what CPU
tensors get; ``fused``: the PyTorch EDT with the compiled min-plus, what other devices
get; ``chunked``: the eager min-plus over ``(lines, n, n)`` chunks, the form before the
fused one) runs in a fresh process: its output is first checked against
``compute_map_stack`` of every sample (rtol 1e-4), then it runs once untimed (compilation,
allocator), then the median of ``--repeats`` timed calls and the peak memory of one more
call above what the process held before it (CPU: the resident set's high-water mark,
reset through ``/proc/self/clear_refs``, with glibc mapping every block of 64 KiB or more
on its own so that freed tensors leave the resident set; CUDA:
``torch.cuda.max_memory_allocated``). The baseline,
timed in the same run, is the ``edt``-based ``compute_map_stack`` applied to each sample
and scale single-threaded (as in a data-augmentation worker); ratios are baseline time /
transform time and transform time / the ``chunked`` time.

With ``--device cuda`` the transforms run on the GPU (synchronised before the clock
stops; ``edt`` is then left out), and nnU-Net's GPU train step of a 2d default batch (the default 2d
PlainConvUNet, Dice + CE with deep supervision, SGD, AMP, gradient clipping: what
``nnUNetTrainer.train_step`` does) is timed as the reference: the goal is maps <= 5 % of it.

    python benchmarks/device_maps.py [--device cpu|cuda] [--repeats 3] [--configurations 2d 3d_fullres]
                                     [--transforms edt fused chunked]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from nnunet_losses.maps import device_map_stack
from nnunet_losses.nnunet.map_layout import compute_map_stack
from nnunet_losses.synthetic import cardiac_case

KINDS = ("rrw", "signed_distance")
NUM_CLASSES = 4


class Batch(NamedTuple):
    """A benchmark batch: (B, *spatial) shape, number of deep-supervision scales, base spacing in mm."""

    shape: tuple[int, ...]
    scales: int
    spacing: tuple[float, ...]


CONFIGURATIONS = {
    "2d": Batch((12, 256, 256), 6, (1.5, 1.5)),
    "3d_fullres": Batch((2, 128, 128, 128), 5, (1.5, 1.5, 1.5)),
}
TRANSFORMS = ("edt", "fused", "chunked")


def synthetic_batch(batch: Batch, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, *spatial) float target with cardiac-like labels and (B, ndim) per-sample spacing."""
    shape, _, base = batch
    rng = np.random.default_rng(seed)
    if len(shape) == 3:
        volume = cardiac_case(seed=seed, shape=(shape[0],) + shape[1:], spacing=(5.0,) + base)[1]
        labels = volume[rng.permutation(shape[0])]
    else:
        labels = np.stack([cardiac_case(seed=seed + b, shape=shape[1:], spacing=base)[1] for b in range(shape[0])])
    zoom = rng.uniform(0.7, 1.4, size=(shape[0], 1))
    spacing = torch.from_numpy(np.asarray(base)[None] / zoom).float()
    return torch.from_numpy(labels[:, None].astype(np.float32)), spacing


def deep_supervision_targets(target: torch.Tensor, spacing: torch.Tensor, scales: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(target, spacing) per scale 1, 1/2, ...: nearest-neighbour downsampling, spacing times 2 per halving."""
    out = []
    for level in range(scales):
        size = [n // 2**level for n in target.shape[2:]]
        out.append((F.interpolate(target, size=size, mode="nearest-exact"), spacing * 2**level))
    return out


def baseline_maps(targets: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    """compute_map_stack of every sample at every scale (numpy, ``edt``, one thread)."""
    maps = []
    for target, spacing in targets:
        labels = target.numpy()[:, 0].astype(np.int16)
        maps.extend(compute_map_stack(s, KINDS, NUM_CLASSES, None, sp.tolist()) for s, sp in zip(labels, spacing))
    return maps


def torch_maps(targets: list[tuple[torch.Tensor, torch.Tensor]], transform: str) -> list[dict[str, torch.Tensor]]:
    """device_map_stack with ``transform`` at every scale, on the targets' device (synchronised)."""
    maps = [device_map_stack(target, KINDS, NUM_CLASSES, None, spacing, transform) for target, spacing in targets]
    if targets[0][0].device.type == "cuda":
        torch.cuda.synchronize(targets[0][0].device)
    return maps


def check_agreement(baseline: list[dict[str, np.ndarray]], ours: list[dict[str, torch.Tensor]]) -> None:
    flat = [{kind: maps[kind][b].cpu().numpy() for kind in KINDS} for maps in ours for b in range(maps[KINDS[0]].shape[0])]
    for expected, result in zip(baseline, flat, strict=True):
        for kind in KINDS:
            np.testing.assert_allclose(result[kind], expected[kind], rtol=1e-4, atol=1e-5)


def _process_memory(key: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process, bytes (Linux)."""
    with open("/proc/self/status") as status:
        return 1024 * int(re.search(rf"{key}:\s+(\d+) kB", status.read()).group(1))


def peak_memory(function: Callable[[], object], device: torch.device) -> int:
    """Bytes above what the process (CPU) or the device's allocator (CUDA) held before, at the peak of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        function()
        return torch.cuda.max_memory_allocated(device) - before
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the high-water mark to the current resident set
    before = _process_memory("VmRSS")
    function()
    return _process_memory("VmHWM") - before


def measure(batch: Batch, transform: str, device: torch.device, repeats: int) -> dict[str, float]:
    """Check ``transform`` against the baseline, then its median seconds per batch and peak extra bytes (after an untimed call)."""
    target, spacing = synthetic_batch(batch)
    targets = deep_supervision_targets(target, spacing, batch.scales)
    on_device = [(t.to(device), s.to(device)) for t, s in targets]
    check_agreement(baseline_maps(targets), torch_maps(on_device, transform))

    def run() -> None:
        torch_maps(on_device, transform)
    return {"seconds": median_time(run, repeats), "peak_bytes": peak_memory(run, device)}


def measure_in_fresh_process(configuration: str, transform: str, device: str, repeats: int) -> dict[str, float]:
    """:func:`measure` in a new Python process, so that its peak memory is its own."""
    command = [sys.executable, __file__, "--measure", configuration, transform, "--device", device, "--repeats", str(repeats)]
    # a fixed mmap threshold: glibc maps every block >= 8 MiB on its own and unmaps it when freed, so that the
    # resident set follows the live tensors instead of keeping what an earlier call freed
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 23), "MALLOC_TRIM_THRESHOLD_": str(1 << 23)}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
    return json.loads(output.strip().splitlines()[-1])


def median_time(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_time_2d(device: torch.device, repeats: int) -> float:
    """Median time of nnU-Net's train step for a default 2d batch (12 x 1 x 256 x 256, 4 classes) on CUDA."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    stages, scales = 7, CONFIGURATIONS["2d"].scales
    network = PlainConvUNet(
        1, stages, [min(32 * 2**i, 512) for i in range(stages)], torch.nn.Conv2d, 3, [1] + [2] * (stages - 1), 2,
        NUM_CLASSES, 2, conv_bias=True, norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True,
    ).to(device)
    weights = np.array([1 / 2**i for i in range(scales)])
    weights[-1] = 0
    loss = DeepSupervisionWrapper(
        DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1, weight_dice=1,
                       dice_class=MemoryEfficientSoftDiceLoss),
        weights / weights.sum(),
    )
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    scaler = torch.amp.GradScaler("cuda")
    target, _ = synthetic_batch(CONFIGURATIONS["2d"])
    targets = [t.to(device) for t, _ in deep_supervision_targets(target, torch.ones(12, 2), scales)]
    data = torch.randn(target.shape, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=True):
            value = loss(network(data), targets)
        scaler.scale(value).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()
        torch.cuda.synchronize(device)

    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        step()
    return median_time(step, max(repeats, 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS))
    parser.add_argument("--transforms", nargs="+", default=list(TRANSFORMS), choices=list(TRANSFORMS))
    parser.add_argument("--measure", nargs=2, metavar=("CONFIGURATION", "TRANSFORM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.measure:
        configuration, transform = args.measure
        print(json.dumps(measure(CONFIGURATIONS[configuration], transform, device, args.repeats)))
        return
    transforms = [t for t in args.transforms if device.type == "cpu" or t != "edt"]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}"
    print(f"machine: {name}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"kinds {'+'.join(KINDS)}, {NUM_CLASSES} classes; each transform in its own process, median of {args.repeats}")
    map_times = {}
    for configuration in args.configurations:
        target, spacing = synthetic_batch(CONFIGURATIONS[configuration])
        targets = deep_supervision_targets(target, spacing, CONFIGURATIONS[configuration].scales)
        baseline = median_time(lambda targets=targets: baseline_maps(targets), args.repeats)
        results = {t: measure_in_fresh_process(configuration, t, args.device, args.repeats) for t in transforms}
        shapes = ", ".join("x".join(map(str, t.shape[2:])) for t, _ in targets)
        print(f"{configuration}: batch {tuple(target.shape)}, scales {shapes}")
        print(f"  {'edt compute_map_stack per sample, 1 thread':<48} {baseline:8.3f} s")
        for transform, result in results.items():
            versus_chunked = f"   {result['seconds'] / results['chunked']['seconds']:6.3f}x the chunked time" if "chunked" in results else ""
            print(f"  {f'device_map_stack {transform!r} on {device.type}':<48} {result['seconds']:8.3f} s   "
                  f"peak +{result['peak_bytes'] / 2**20:7.1f} MiB   baseline / this = {baseline / result['seconds']:6.2f}{versus_chunked}")
        map_times[configuration] = results
    if device.type == "cuda" and "2d" in map_times:
        step = train_step_time_2d(device, args.repeats)
        shares = ", ".join(f"{t} {100 * r['seconds'] / step:.1f} %" for t, r in map_times["2d"].items())
        print(f"nnU-Net 2d train step (12x1x256x256, AMP): {step:.3f} s; 2d maps: {shares} of it")


if __name__ == "__main__":
    main()

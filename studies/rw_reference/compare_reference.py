#!/usr/bin/env python
"""Compare the package's RRW loss with the RW paper's reference code on identical batches.

Study script (not part of the package or its tests). The reference is loaded at run time
from a checkout of jmlipman/RegionWiseLoss given on the command line; nothing of it is
copied here. Its ``nnUNet/`` folder holds nnU-Net v1 modules imported as ``nnunet.*``: a
temporary folder with a symlink ``nnunet -> <checkout>/nnUNet`` is put on ``sys.path``.

    python studies/rw_reference/compare_reference.py --reference /tmp/rw_reference \
        > studies/rw_reference/results.txt

Inputs: 2D 64x64 patches cropped from slices of the synthetic cardiac phantom (4 classes),
seeded random logits per deep-supervision scale, targets downsampled per scale with
nnU-Net v2's own ``DownsampleSegForDSTransform`` (nearest-exact) and nnU-Net's
deep-supervision weights (1/2^i, last 0, normalised).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import (
    DownsampleSegForDSTransform,
)
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

from nnunet_losses.losses import CompositeLoss, RegionWiseLoss
from nnunet_losses.losses.region_wise import region_wise_loss, rrw_from_compact
from nnunet_losses.maps import rrw_compact
from nnunet_losses.nnunet.loss_adapter import NnUNetLoss
from nnunet_losses.nnunet.map_layout import MapLayout, compute_map_stack
from nnunet_losses.nnunet.map_transport import downsample_like_segmentation
from nnunet_losses.nnunet.transforms import ComputeMapsOnPatch
from nnunet_losses.synthetic.cardiac import cardiac_case

NUM_CLASSES = 4
PATCH = 64
CASE_SPACING = (8.0, 1.5, 1.5)  # the phantom's spacing (z, y, x), mm


# --------------------------------------------------------------------------------------------
# the reference, loaded from the checkout


def load_reference(checkout: Path):
    """Import the reference ``RWLoss`` and ``MultipleOutputLoss2`` from a checkout; report what was imported."""
    package = checkout / "nnUNet"
    if not (package / "training" / "loss_functions" / "rwexp_loss.py").is_file():
        raise SystemExit(f"{checkout} is not a checkout of jmlipman/RegionWiseLoss (no nnUNet/training/loss_functions/rwexp_loss.py)")
    shim = Path(tempfile.mkdtemp(prefix="rw_reference_path_"))
    (shim / "nnunet").symlink_to(package.resolve(), target_is_directory=True)
    sys.path.insert(0, str(shim))
    before = set(sys.modules)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # nnU-Net v1's __init__ prints a citation request
        from nnunet.training.loss_functions.deep_supervision import MultipleOutputLoss2
        from nnunet.training.loss_functions.rwexp_loss import RWLoss
    loaded = sorted(m for m in set(sys.modules) - before if m == "nnunet" or m.startswith("nnunet."))
    return RWLoss, MultipleOutputLoss2, loaded, printed.getvalue().strip()


class EpochArgumentIgnored(torch.nn.Module):
    """``RWLoss`` under ``MultipleOutputLoss2``, which calls ``loss(x, y, e)`` while ``RWLoss.forward`` takes ``(x, y)``."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, x, y, e):
        return self.loss(x, y)


# --------------------------------------------------------------------------------------------
# inputs


def ds_weights(num_scales: int) -> np.ndarray:
    """nnU-Net's deep-supervision weights: 1/2^i, last 0, normalised (v2 ``_build_loss``, v1 ``nnUNetTrainerV2``)."""
    w = np.array([1 / (2**i) for i in range(num_scales)])
    w[-1] = 0
    return w / w.sum()


def crop_box(labels2d: np.ndarray, rng: np.random.Generator) -> tuple[slice, slice]:
    """A 64x64 box containing the foreground centre, at a random offset."""
    fg = np.argwhere(labels2d > 0)
    centre = fg.mean(0).round().astype(int) if len(fg) else np.array(labels2d.shape) // 2
    box = []
    for axis in range(2):
        start = int(np.clip(centre[axis] - PATCH // 2 + rng.integers(-12, 13), 0, labels2d.shape[axis] - PATCH))
        box.append(slice(start, start + PATCH))
    return tuple(box)


def make_batch(items, seed: int):
    """``items``: (case seed, slice) pairs -> labels (B, 64, 64), cases, slices, boxes."""
    rng = np.random.default_rng(seed)
    labels, cases, boxes = [], {}, []
    for case_seed, z in items:
        if case_seed not in cases:
            cases[case_seed] = cardiac_case(case_seed)[1]
        box = crop_box(cases[case_seed][z], rng)
        boxes.append(box)
        labels.append(cases[case_seed][z][box].astype(np.int64))
    return np.stack(labels), cases, boxes


def pyramid(labels: np.ndarray, scales) -> list[torch.Tensor]:
    """Targets per scale, (B, 1, h, w), with nnU-Net v2's own DS downsampling transform."""
    transform = DownsampleSegForDSTransform(scales)
    per_item = [transform(segmentation=torch.from_numpy(l[None]).to(torch.int16))["segmentation"] for l in labels]
    return [torch.stack([item[s] for item in per_item]).long() for s in range(len(scales))]


def random_logits(batch: int, sizes, seed: int, bg_offset: float = 0.0, std: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for size in sizes:
        x = std * torch.randn((batch, NUM_CLASSES, size, size), generator=g, dtype=torch.float32)
        x[:, 0] += bg_offset
        out.append(x)
    return out


# --------------------------------------------------------------------------------------------
# losses and gradients


def with_grad(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    return [x.clone().requires_grad_(True) for x in logits]


def reference_loss(RWLoss, MultipleOutputLoss2, weights, logits, targets, epoch: int = 0):
    xs = with_grad(logits)
    loss = MultipleOutputLoss2(EpochArgumentIgnored(RWLoss()), list(weights))(xs, [t.float() for t in targets], epoch)
    loss.backward()
    return loss.detach(), [x.grad if x.grad is not None else torch.zeros_like(x) for x in xs]


def reference_per_scale(RWLoss, logits, targets):
    values, grads = [], []
    for x, t in zip(logits, targets):
        x = x.clone().requires_grad_(True)
        v = RWLoss()(x, t.float())
        v.backward()
        values.append(v.detach())
        grads.append(x.grad)
    return values, grads


def reference_maps(RWLoss, logits, targets):
    """The reference's RRW map at every scale, recovered by autograd from its own forward.

    ``RWLoss`` computes ``mean(z * softmax(x))``, linear in ``s = softmax(x)``: with ``s``
    made a leaf (``torch.nn.functional.softmax``, which its ``softmax_helper`` calls, is
    patched for the call), ``dL/ds = z / (B C N)``. ``B C N`` is a power of two here, so
    the map comes back bit for bit.
    """
    import torch.nn.functional as F

    maps = []
    original = F.softmax
    for x, t in zip(logits, targets):
        captured = {}

        def softmax_leaf(inp, dim=None, *a, _captured=captured, **k):
            s = original(inp, dim, *a, **k).detach().requires_grad_(True)
            _captured["s"] = s
            return s

        F.softmax = softmax_leaf
        try:
            loss = RWLoss()(x.clone(), t.float())
        finally:
            F.softmax = original
        loss.backward()
        maps.append(captured["s"].grad * captured["s"].numel())
    return maps


def ours_ds(weights, logits, targets, compact_maps):
    """Our loss as the trainer builds it: NnUNetLoss(CompositeLoss({'rrw': RegionWiseLoss('rrw')})) with DS weights."""
    layout = MapLayout(("rrw",), NUM_CLASSES)
    loss = NnUNetLoss(CompositeLoss({"rrw": RegionWiseLoss("rrw")}, {"rrw": 1.0}), list(weights), None, layout)
    xs = with_grad(logits)
    with loss.carrying(compact_maps):
        value = loss(xs, targets)
    value.backward()
    return value.detach(), [x.grad if x.grad is not None else torch.zeros_like(x) for x in xs]


def on_the_fly_maps(labels_per_scale, scales, spacing) -> list[torch.Tensor]:
    """Compact RRW per scale exactly as the trainer's on-the-fly mode (``ComputeMapsOnPatch``) computes it."""
    transform = ComputeMapsOnPatch(MapLayout(("rrw",), NUM_CLASSES), spacing, None, scales)
    items = []
    for b in range(labels_per_scale[0].shape[0]):
        segs = [t[b].to(torch.int16) for t in labels_per_scale]
        items.append(transform(segmentation=segs)["segmentation"][len(scales):])
    return [torch.stack([item[s] for item in items]).float() for s in range(len(scales))]


def precomputed_maps(cases, items, boxes, scales, per_slice: bool) -> list[torch.Tensor]:
    """Compact RRW of the whole case (3D, mm; or per slice), cropped to the patch, then downsampled as ``MapsToTarget`` does."""
    cache, out = {}, []
    for (case_seed, z), box in zip(items, boxes):
        if case_seed not in cache:
            cache[case_seed] = compute_map_stack(cases[case_seed], ("rrw",), NUM_CLASSES, None, CASE_SPACING, per_slice=per_slice)["rrw"]
        patch = torch.from_numpy(np.ascontiguousarray(cache[case_seed][:, z][(slice(None), *box)]))
        out.append([downsample_like_segmentation(patch, s) for s in scales])
    return [torch.stack([o[s] for o in out]).float() for s in range(len(scales))]


def full_maps(compact: list[torch.Tensor], targets: list[torch.Tensor]) -> list[torch.Tensor]:
    return [rrw_from_compact(c, torch.zeros(c.shape[0], NUM_CLASSES, *c.shape[2:]).scatter_(1, t, 1.0)) for c, t in zip(compact, targets)]


def diff(a: torch.Tensor, b: torch.Tensor) -> str:
    d = (a.double() - b.double()).abs()
    scale = b.double().abs().max().item()
    rel = (a.double() - b.double()).norm().item() / max(b.double().norm().item(), 1e-300)
    return f"max|d|={d.max().item():.3e}  max|d|/max|ref|={d.max().item() / max(scale, 1e-300):.3e}  ||d||/||ref||={rel:.3e}"


def grad_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> str:
    return diff(torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b]))


# --------------------------------------------------------------------------------------------
# gradient shares


def nnunet_dice_ce(weights, batch_dice: bool):
    loss = DC_and_CE_loss(
        {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1, weight_dice=1,
        ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss,
    )
    return DeepSupervisionWrapper(loss, list(weights))


def gradient_of(loss_fn, logits, targets):
    xs = with_grad(logits)
    value = loss_fn(xs, targets)
    value.backward()
    return value.detach(), [x.grad if x.grad is not None else torch.zeros_like(x) for x in xs]


def share_row(name, value, grads, logits, targets) -> str:
    """Full-resolution gradient: mean over voxels of sum_k |dL/dx_k|, foreground vs background voxels."""
    g, t = grads[0], targets[0][:, 0]
    per_voxel = g.abs().sum(1)
    fg, bg = t > 0, t == 0
    true_class = g.gather(1, t[:, None])[:, 0]
    p_true = torch.softmax(logits[0], 1).gather(1, t[:, None])[:, 0]
    fg_mean, bg_mean = per_voxel[fg].mean().item(), per_voxel[bg].mean().item()
    fg_share = per_voxel[fg].sum().item() / per_voxel.sum().item()
    return (
        f"  {name:<24} loss={value.item():9.5f}  |g| fg={fg_mean:.3e} bg={bg_mean:.3e} fg/bg={fg_mean / bg_mean:7.3f}  "
        f"fg share of sum|g|={fg_share:6.3f}  dL/dx_true(fg)={true_class[fg].mean().item():+.3e}  "
        f"||g||={torch.cat([x.flatten() for x in grads]).norm().item():.3e}  p_true(fg)={p_true[fg].mean().item():.4f}"
    )


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="checkout of jmlipman/RegionWiseLoss")
    parser.add_argument("--stages", type=int, default=4, help="network stages (small plans: 4 -> 3 DS outputs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    RWLoss, MultipleOutputLoss2, loaded, printed = load_reference(args.reference)
    print("== reference")
    print(f"checkout: {args.reference}")
    print(f"nnU-Net v1 modules imported: {', '.join(loaded)}")
    print("third-party packages they need: torch, numpy, scipy (and nibabel, imported inside RWLoss.forward but unused)")
    print(f"printed on import: {printed.splitlines()[0][:60] if printed else '(nothing)'}...")
    try:
        MultipleOutputLoss2(RWLoss(), [1.0])([torch.zeros(1, 2, 4, 4)], [torch.zeros(1, 1, 4, 4)], 0)
        print("MultipleOutputLoss2(RWLoss(), w)(x, y, e): runs")
    except TypeError as error:
        print(f"MultipleOutputLoss2(RWLoss(), w)(x, y, e) as committed raises TypeError: {error}")
        print("  -> run here with a wrapper that drops the epoch argument (the commented-out 2-argument call in that file)")

    num_scales = args.stages - 1
    scales = [[1.0, 1.0]] + [[0.5**i, 0.5**i] for i in range(1, num_scales)]
    sizes = [int(PATCH * s[0]) for s in scales]
    weights = ds_weights(num_scales)
    print(f"\n== inputs\nDS scales {sizes}, DS weights {np.round(weights, 6).tolist()} (v1 nnUNetTrainerV2 and v2 _build_loss give the same)")

    # items: (case seed, slice). Slice 6 of case 0 has no RV (absent class); the rest hold all 4 classes.
    items = [(0, 2), (1, 4), (2, 1), (0, 6)]
    labels, cases, boxes = make_batch(items, args.seed)
    targets = pyramid(labels, scales)
    logits = random_logits(len(items), sizes, args.seed)
    for s, t in enumerate(targets):
        counts = [np.bincount(t[b, 0].numpy().ravel(), minlength=NUM_CLASSES).tolist() for b in range(len(items))]
        print(f"scale {sizes[s]}: voxels per class per item {counts}")

    # ---- maps
    ref_maps = reference_maps(RWLoss, logits, targets)
    variants = {
        "on-the-fly, unit spacing": on_the_fly_maps(targets, scales, (1.0, 1.0)),
        "on-the-fly, config spacing 1.5x1.5 mm": on_the_fly_maps(targets, scales, CASE_SPACING[1:]),
        "on-the-fly, anisotropic 1.5x1.0 mm": on_the_fly_maps(targets, scales, (1.5, 1.0)),
        "precomputed per case (3D, 8x1.5x1.5 mm)": precomputed_maps(cases, items, boxes, scales, per_slice=False),
        "precomputed per slice (2D, whole 96x96 slice)": precomputed_maps(cases, items, boxes, scales, per_slice=True),
    }
    print("\n== RRW map: ours vs reference, per scale (full map, all classes)")
    for name, compact in variants.items():
        z = full_maps(compact, targets)
        print(f"{name}:")
        for s in range(num_scales):
            print(f"  scale {sizes[s]:>2}: {diff(z[s], ref_maps[s])}")

    # ---- loss and gradient
    print("\n== loss and gradient w.r.t. logits: ours (NnUNetLoss + RegionWiseLoss('rrw')) vs MultipleOutputLoss2(RWLoss)")
    ref_value, ref_grads = reference_loss(RWLoss, MultipleOutputLoss2, weights, logits, targets)
    ref_scale_values, ref_scale_grads = reference_per_scale(RWLoss, logits, targets)
    print(f"reference total {ref_value.item():.9f}; per scale {[round(v.item(), 9) for v in ref_scale_values]}")
    for name, compact in variants.items():
        value, grads = ours_ds(weights, logits, targets, compact)
        z = full_maps(compact, targets)
        per_scale = []
        for s in range(num_scales):
            x = logits[s].clone().requires_grad_(True)
            v = region_wise_loss(x, z[s])
            v.backward()
            per_scale.append(f"scale {sizes[s]}: value {v.item():.9f} (ref {ref_scale_values[s].item():.9f}) grad {diff(x.grad, ref_scale_grads[s])}")
        print(f"{name}:\n  total {value.item():.9f}  |d|={abs(value.item() - ref_value.item()):.3e}  rel={abs(value.item() - ref_value.item()) / abs(ref_value.item()):.3e}")
        print(f"  DS gradient: {grad_diff(grads, ref_grads)}")
        for line in per_scale:
            print(f"  {line}")

    # ---- float64: how much of the on-the-fly difference is float32 rounding
    logits64 = [x.double() for x in logits]
    v64, g64 = ours_ds(weights, logits64, targets, [m.double() for m in variants["on-the-fly, unit spacing"]])
    r64, rg64 = reference_loss(RWLoss, MultipleOutputLoss2, weights, logits64, targets)
    print(f"\nfloat64 logits, on-the-fly unit spacing: total |d|={abs(v64.item() - r64.item()):.3e}; DS gradient {grad_diff(g64, rg64)}")
    print("  (the reference casts its map to float32 with torch.Tensor; the product is then float64)")

    edge_cases(RWLoss, weights, scales, sizes, args.seed)
    three_d(RWLoss, args.seed)
    gradient_shares(RWLoss, MultipleOutputLoss2, weights, targets, sizes, args.seed)
    parameter_gradients(weights, targets, sizes, args.seed, variants["on-the-fly, unit spacing"], RWLoss, MultipleOutputLoss2)


def edge_cases(RWLoss, weights, scales, sizes, seed: int) -> None:
    print("\n== edge cases (single scale, 64x64, unit spacing)")
    g = torch.Generator().manual_seed(seed + 1)
    cases = {
        "background fills the patch": torch.zeros(1, 1, PATCH, PATCH, dtype=torch.long),
        "class 2 fills the patch": torch.full((1, 1, PATCH, PATCH), 2, dtype=torch.long),
        "classes 1 and 3 absent": (torch.arange(PATCH)[None, None, :, None].expand(1, 1, PATCH, PATCH) >= 40).long() * 2,
        "single-voxel class": torch.zeros(1, 1, PATCH, PATCH, dtype=torch.long).index_put_((torch.tensor([0]), torch.tensor([0]), torch.tensor([30]), torch.tensor([30])), torch.tensor(1)),
    }
    for name, t in cases.items():
        x = torch.randn(1, NUM_CLASSES, PATCH, PATCH, generator=g)
        ref_z = reference_maps(RWLoss, [x], [t])[0]
        ours_z = full_maps(on_the_fly_maps([t], [[1.0, 1.0]], (1.0, 1.0)), [t])[0]
        xr = x.clone().requires_grad_(True)
        vr = RWLoss()(xr, t.float())
        vr.backward()
        xo = x.clone().requires_grad_(True)
        vo = region_wise_loss(xo, ours_z)
        vo.backward()
        c = int(t[0, 0, 0, 0]) if "fills" in name else int(t.max())
        print(f"{name}: map {diff(ours_z, ref_z)}")
        print(f"  map of class {c}: reference min {ref_z[0, c].min().item():.4f} max {ref_z[0, c].max().item():.4f}; "
              f"ours min {ours_z[0, c].min().item():.4f} max {ours_z[0, c].max().item():.4f}")
        print(f"  loss ours {vo.item():.6f} ref {vr.item():.6f}; gradient {diff(xo.grad, xr.grad)}")


def three_d(RWLoss, seed: int) -> None:
    """A 3D patch: the reference measures distances in voxels; ours in mm with the configuration's spacing."""
    print("\n== 3D patch (whole phantom case 10x64x64 crop, single scale): voxel vs mm distances")
    _, labels, spacing = cardiac_case(3)
    box = crop_box(labels[2], np.random.default_rng(seed))
    t = torch.from_numpy(labels[:, box[0], box[1]].astype(np.int64))[None, None]
    x = torch.randn(1, NUM_CLASSES, *t.shape[2:], generator=torch.Generator().manual_seed(seed + 2))
    ref_z = reference_maps(RWLoss, [x], [t])[0]
    xr = x.clone().requires_grad_(True)
    vr = RWLoss()(xr, t.float())
    vr.backward()
    for name, sp in (("unit spacing", (1.0, 1.0, 1.0)), (f"mm spacing {spacing}", spacing)):
        compact = torch.from_numpy(rrw_compact(t[0, 0].numpy(), NUM_CLASSES, sp))[None].float()
        z = full_maps([compact], [t])[0]
        xo = x.clone().requires_grad_(True)
        vo = region_wise_loss(xo, z)
        vo.backward()
        print(f"{name}: map {diff(z, ref_z)}\n  loss ours {vo.item():.6f} ref {vr.item():.6f}; gradient {diff(xo.grad, xr.grad)}")


def gradient_shares(RWLoss, MultipleOutputLoss2, weights, targets, sizes, seed: int) -> None:
    print("\n== gradient on foreground vs background voxels (full-resolution output; DS on as in training)")
    print("|g| = sum_k |dL/dx_k| per voxel; dL/dx_true(fg) < 0 pushes the true class up at foreground voxels")
    ours_maps = on_the_fly_maps(targets, [[0.5**i, 0.5**i] for i in range(len(sizes))], (1.0, 1.0))
    layout = MapLayout(("rrw",), NUM_CLASSES)
    for p_bg in (0.25, 0.5, 0.8, 0.95, 0.99):
        offset = float(np.log(p_bg * (NUM_CLASSES - 1) / (1 - p_bg))) if p_bg != 0.25 else 0.0
        logits = random_logits(targets[0].shape[0], sizes, seed + 3, bg_offset=offset, std=0.3)
        print(f"p_background = {p_bg} (background logit offset {offset:.3f}, noise std 0.3):")
        ours = NnUNetLoss(CompositeLoss({"rrw": RegionWiseLoss("rrw")}, {"rrw": 1.0}), list(weights), None, layout)

        def ours_fn(xs, ts, ours=ours):
            with ours.carrying(ours_maps):
                return ours(xs, ts)

        ref = MultipleOutputLoss2(EpochArgumentIgnored(RWLoss()), list(weights))
        rows = [
            ("RRW ours", ours_fn),
            ("RRW reference", lambda xs, ts, ref=ref: ref(xs, [t.float() for t in ts], 0)),
            ("Dice+CE batch_dice=F", nnunet_dice_ce(weights, False)),
            ("Dice+CE batch_dice=T", nnunet_dice_ce(weights, True)),
            ("CE", DeepSupervisionWrapper(RobustCrossEntropyLoss(), list(weights))),
            ("Dice (batch_dice=F)", DeepSupervisionWrapper(MemoryEfficientSoftDiceLoss(apply_nonlin=lambda x: torch.softmax(x, 1), batch_dice=False, smooth=1e-5, do_bg=False, ddp=False), list(weights))),
        ]
        for name, fn in rows:
            value, grads = gradient_of(fn, logits, targets)
            print(share_row(name, value, grads, logits, targets))


def parameter_gradients(weights, targets, sizes, seed: int, maps, RWLoss, MultipleOutputLoss2) -> None:
    """Loss scale vs weight decay: parameter-gradient RMS of a small-plans 2D U-Net, and Adam's coupled L2 term 3e-5 * w."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    print("\n== parameter gradients of a small-plans 2D U-Net (features 8,16,32,64; random init; batch above)")
    torch.manual_seed(seed)
    net = PlainConvUNet(1, len(sizes) + 1, (8, 16, 32, 64), torch.nn.Conv2d, 3, (1, 2, 2, 2), 2, NUM_CLASSES, 2, conv_bias=True,
                        norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    image = torch.randn(targets[0].shape[0], 1, PATCH, PATCH, generator=torch.Generator().manual_seed(seed + 4))
    layout = MapLayout(("rrw",), NUM_CLASSES)
    ours = NnUNetLoss(CompositeLoss({"rrw": RegionWiseLoss("rrw")}, {"rrw": 1.0}), list(weights), None, layout)

    def ours_fn(xs, ts):
        with ours.carrying(maps):
            return ours(xs, ts)

    out = net(image)
    nnunet_dice_ce(weights, False)(list(out), targets).backward()
    params = [p for p in net.parameters() if p.ndim > 1 and p.grad is not None]  # the weight-0 head gets no gradient
    decay = torch.cat([(3e-5 * p.detach()).flatten() for p in params])
    print(f"Adam's coupled L2 term 3e-5*w over conv weights: RMS {decay.pow(2).mean().sqrt().item():.3e}")
    losses = (("RRW ours", ours_fn), ("Dice+CE batch_dice=F", nnunet_dice_ce(weights, False)), ("CE", DeepSupervisionWrapper(RobustCrossEntropyLoss(), list(weights))))
    for offset in (0.0, float(np.log(0.95 * (NUM_CLASSES - 1) / 0.05))):
        with torch.no_grad():
            for layer in net.decoder.seg_layers:
                layer.bias[0] += offset
        with torch.no_grad():
            p_bg = torch.softmax(net(image)[0], 1)[:, 0].mean().item()
        print(f"background bias of the output heads +{offset:.3f} (mean p_background {p_bg:.3f}):")
        for name, fn in losses:
            net.zero_grad()
            fn(list(net(image)), targets).backward()
            g = torch.cat([p.grad.flatten() for p in params])
            rms = g.pow(2).mean().sqrt().item()
            print(f"  {name:<22} conv-weight gradient RMS {rms:.3e}  (ratio to the L2 term's RMS {rms / decay.pow(2).mean().sqrt().item():7.2f})")
        with torch.no_grad():
            for layer in net.decoder.seg_layers:
                layer.bias[0] -= offset

if __name__ == "__main__":
    main()

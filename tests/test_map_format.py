"""The stored map format: encodings and their error bounds, the bounds on every loss that reads the maps
(measured on a full-resolution CT-like case against float32 maps), old-format files, the values hash."""
from __future__ import annotations

import hashlib

import blosc2
import numpy as np
import pytest
import torch
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

from nnunet_losses.losses import BoundaryLoss, CommonSupportBoundaryLoss, OneSidedHausdorffLoss, RegionWiseLoss, RRWWeightedCrossEntropyLoss
from nnunet_losses.maps import compute_maps
from nnunet_losses.nnunet.configuration import load_configuration
from nnunet_losses.nnunet.map_store import ENCODINGS, MAP_FORMAT_VERSION, METADATA_KEY, MapStore, OlderMapFormatError, StaleMapsError
from nnunet_losses.nnunet.setup_maps import write_configuration_maps
from nnunet_losses.synthetic.many_organs import many_organs_case

from preprocessed_case import write_preprocessed_case

RRW_STEP_ERROR = 1.0 / 510.0 + 2.0**-22  # half a step of 1/255, plus the float32 rounding of the decoded value
FLOAT16_RELATIVE_ERROR = 2.0**-11
TOLERANCE = 1e-5
"""Relative slack for float32 rounding in the losses (the bounds are 2^-11 = 4.9e-4 and 1/510 = 2.0e-3)."""
ROUNDING = 1e-6
"""float32 rounding of a gradient, relative to the magnitude of the terms it sums (a few units of 2^-24)."""


def roundtrip(kind: str, values: np.ndarray) -> np.ndarray:
    encoding = ENCODINGS[kind]
    return encoding.decode(encoding.encode(values))


def test_encodings_meet_their_per_voxel_bounds_and_refuse_values_outside_them():
    rng = np.random.default_rng(0)
    rrw = -rng.random(100_000, dtype=np.float32)
    rrw[:3] = (-1.0, 0.0, -1.0 / 510.0)
    decoded = roundtrip("rrw", rrw)
    assert np.abs(decoded - rrw).max() <= RRW_STEP_ERROR
    assert decoded[0] == -1.0 and decoded[1] == 0.0
    assert np.array_equal(np.unique(np.rint(-decoded * 255)), np.arange(256))  # all 256 levels used, nothing else
    distance = (rng.choice([-1.0, 1.0], 100_000) * rng.uniform(1, 6, 100_000) * 10.0 ** rng.uniform(-4, 4, 100_000)).astype(np.float32)
    distance[:2] = (0.0, 65504.0)
    decoded = roundtrip("signed_distance", distance)
    assert decoded[0] == 0.0 and decoded[1] == 65504.0
    assert (np.abs(decoded - distance) <= FLOAT16_RELATIVE_ERROR * np.abs(distance)).all()
    with pytest.raises(ValueError, match=r"in \[-1.0, 0.0\]"):
        ENCODINGS["rrw"].encode(np.array([0.5], dtype=np.float32))
    with pytest.raises(ValueError, match="float16"):
        ENCODINGS["signed_distance"].encode(np.array([1e5], dtype=np.float32))
    with pytest.raises(ValueError, match="at least 6.1"):
        ENCODINGS["signed_distance"].encode(np.array([1e-6], dtype=np.float32))


# --- the change of every loss that reads the maps, on a real-size case -------------------------------------------------


@pytest.fixture(scope="module")
def real_size_batch():
    """Two full-resolution 512x512 slices of a 14-class CT-like case as a batch of 2D samples, with float32 maps
    (computed on the 3D case) and the maps as stored; logits of a half-trained network (true class raised, noise).
    The losses are computed in float32 as in training; their rounding is far below the bounds (``TOLERANCE``)."""
    classes = 14
    _, labels, spacing = many_organs_case(3, classes, (8, 512, 512), (1.5, 0.8, 0.8))
    maps = compute_maps(("rrw", "signed_distance"), labels, classes, spacing)
    rows = slice(3, 5)
    exact = {kind: torch.from_numpy(values[:, rows].transpose(1, 0, 2, 3).copy()) for kind, values in maps.items()}
    stored = {kind: torch.from_numpy(roundtrip(kind, values)[:, rows].transpose(1, 0, 2, 3).copy()) for kind, values in maps.items()}
    target = torch.from_numpy(labels[rows].astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    onehot = torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).float()
    logits = 2.0 * onehot + torch.randn(onehot.shape, generator=generator)
    return logits, target, exact, stored


def value_and_gradient(loss, logits, target, maps):
    x = logits.clone().requires_grad_(True)
    value = loss(x, target, **maps)
    value.backward()
    return value.item(), x.grad


def linear_gradient_bound(probs: torch.Tensor, multiplier: torch.Tensor, relative: float, count: int) -> torch.Tensor:
    """Bound on the change of d/dx_j of ``sum(m * s) / count`` when each ``|m_k|`` changes by at most ``relative |m_k|``:
    ``relative * s_j (|m_j| + sum_k s_k |m_k|) / count``."""
    m = multiplier.abs()
    return relative * probs * (m + (probs * m).sum(1, keepdim=True)) / count


def test_rrw_losses_change_within_their_bounds(real_size_batch):
    logits, target, exact, stored = real_size_batch
    classes = logits.shape[1]
    weights = [1.0 + 0.1 * k for k in range(classes)]
    for loss, top in (
        (RegionWiseLoss("rrw"), 1.0 / classes),
        (RegionWiseLoss("class_emphasis_rrw", class_weights=weights), torch.tensor(weights)[target].mean().item() / classes),
    ):
        before, grad_before = value_and_gradient(loss, logits, target, {"rrw": exact["rrw"]})
        after, grad_after = value_and_gradient(loss, logits, target, {"rrw": stored["rrw"]})
        # value: |dL| <= delta (L0 - L), L0 the loss with no probability on the true class; gradient: relative <= delta
        assert 0 < abs(after - before) <= RRW_STEP_ERROR * (1 + TOLERANCE) * (top - before)
        relative = ((grad_after - grad_before).abs() / grad_before.abs()).max().item()
        assert 0 < relative <= RRW_STEP_ERROR * (1 + TOLERANCE)
    loss = RRWWeightedCrossEntropyLoss()
    before, grad_before = value_and_gradient(loss, logits, target, {"rrw": exact["rrw"]})
    after, grad_after = value_and_gradient(loss, logits, target, {"rrw": stored["rrw"]})
    assert 0 < abs(after - before) <= RRW_STEP_ERROR * (1 + TOLERANCE) * before
    nonzero = grad_before.abs() > 1e-12
    assert ((grad_after - grad_before).abs()[nonzero] / grad_before.abs()[nonzero]).max().item() <= RRW_STEP_ERROR * (1 + TOLERANCE)


def test_maps_travelling_as_float16_stay_within_the_stated_bounds(real_size_batch):
    """The float16 the patch maps travel in (docs/maps.md, "Travelling as float16"): stored signed distances travel
    exactly; RRW gains at most 2^-12 (RW loss within delta' = 1/510 + 2^-12); a resampled distance (here the
    half-voxel shift a rotation or zoom makes) is within 2^-10 of the float32 maps' resampling, voxel by voxel and
    in the RW-Boundary loss."""
    logits, target, exact, stored = real_size_batch
    assert torch.equal(stored["signed_distance"].half().float(), stored["signed_distance"])
    travelled = stored["rrw"].half().float()
    assert (travelled - stored["rrw"]).abs().max().item() <= 2.0**-12
    delta = RRW_STEP_ERROR + 2.0**-12
    loss = RegionWiseLoss("rrw")
    before, grad_before = value_and_gradient(loss, logits, target, {"rrw": exact["rrw"]})
    after, grad_after = value_and_gradient(loss, logits, target, {"rrw": travelled})
    assert 0 < abs(after - before) <= delta * (1 + TOLERANCE) * (1.0 / logits.shape[1] - before)
    assert ((grad_after - grad_before).abs() / grad_before.abs()).max().item() <= delta * (1 + TOLERANCE)

    def shifted(maps: torch.Tensor) -> torch.Tensor:  # linear interpolation half a voxel along x, in float32
        return 0.5 * (maps[..., :-1] + maps[..., 1:])

    phi = shifted(exact["signed_distance"])
    resampled = shifted(stored["signed_distance"]).half().float()
    eps = 2.0**-10 * (1 + TOLERANCE)
    assert ((resampled - phi).abs() <= eps * shifted(exact["signed_distance"].abs())).all() and (resampled != phi).any()
    crop_logits, crop_target = logits[..., :-1], target[..., :-1]
    loss = RegionWiseLoss("rw_boundary")
    before = loss(crop_logits, crop_target, signed_distance=phi).item()
    after = loss(crop_logits, crop_target, signed_distance=resampled).item()
    absolute = BoundaryLoss()(crop_logits, crop_target, signed_distance=shifted(exact["signed_distance"].abs())).item()
    assert abs(after - before) <= eps * absolute  # (here below float32's resolution of the loss)


def test_signed_distance_losses_change_within_their_bounds(real_size_batch):
    logits, target, exact, stored = real_size_batch
    probs, classes = logits.softmax(1), logits.shape[1]
    onehot = torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).float()
    phi, count = exact["signed_distance"], probs.numel()
    eps = FLOAT16_RELATIVE_ERROR * (1 + TOLERANCE)
    for loss, classes_used in (
        (RegionWiseLoss("rw_boundary"), slice(None)),
        (RegionWiseLoss("rw_boundary", kervadec_shift=True), slice(None)),
        (BoundaryLoss(), slice(None)),
        (BoundaryLoss(include_background=False), slice(1, None)),
    ):
        before, grad_before = value_and_gradient(loss, logits, target, {"signed_distance": phi})
        after, grad_after = value_and_gradient(loss, logits, target, {"signed_distance": stored["signed_distance"]})
        absolute = BoundaryLoss(include_background=classes_used == slice(None))(logits, target, signed_distance=phi.abs()).item()
        assert 0 < abs(after - before) <= eps * absolute  # |dL| <= eps L(|phi|)
        multiplier = torch.zeros_like(phi)
        multiplier[:, classes_used] = phi[:, classes_used]
        used = phi[:, classes_used].numel()
        assert ((grad_after - grad_before).abs() <= linear_gradient_bound(probs, multiplier, eps + ROUNDING, used)).all()
    loss = CommonSupportBoundaryLoss()
    before = loss(logits, target, signed_distance=phi).item()
    after = loss(logits, target, signed_distance=stored["signed_distance"]).item()
    assert abs(after - before) <= eps * loss(logits, target, signed_distance=phi.abs()).item()
    for alpha in (1.0, 2.0):
        rho = (1 + eps) ** alpha - 1
        loss = OneSidedHausdorffLoss(alpha=alpha)
        before, grad_before = value_and_gradient(loss, logits, target, {"signed_distance": phi})
        after, grad_after = value_and_gradient(loss, logits, target, {"signed_distance": stored["signed_distance"]})
        assert 0 < abs(after - before) <= rho * before
        # d/dx_j = sum_k a_k (delta_jk - s_j) / count with a_k = 2 (s_k - g_k) D_k^alpha s_k: each a_k changes by <= rho |a_k|
        a = (2 * (probs - onehot) * phi.abs().pow(alpha) * probs).abs()
        bound = (rho + ROUNDING) * (a * (1 - probs) + probs * (a.sum(1, keepdim=True) - a)) / count
        assert ((grad_after - grad_before).abs() <= bound).all()


# --- old map files and the values hash ------------------------------------------------------------------------------


def write_format_2(store: MapStore, case: str, kind: str, values: np.ndarray, metadata: dict) -> None:
    """A map file exactly as map format 2 wrote it: float32, uncompressed blosc2, chunks of all channels, the hash of
    the float32 values."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    patch = tuple(store.config.configuration_manager.patch_size)
    _, chunks = comp_blosc2_params((1, *values.shape[1:]), patch, bytes_per_pixel=4)
    even = tuple(-(-n // -(-n // c)) for n, c in zip(values.shape[1:], chunks[1:]))
    digest = hashlib.blake2b(values.data, digest_size=16)
    digest.update(str(values.shape).encode())
    old = {key: value for key, value in metadata.items() if key != "encoding"}
    stored = blosc2.asarray(
        values, urlpath=str(store.path(case, kind)), mode="w", chunks=(values.shape[0], *even), blocks=(1, 1, *even[1:]),
        cparams={"codec": blosc2.Codec.LZ4, "clevel": 0, "nthreads": 1},
    )
    stored.vlmeta[METADATA_KEY] = {**old, "format": 2, "values_hash": digest.hexdigest()}


@pytest.fixture()
def small_store(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    _, labels, spacing = many_organs_case(5, 6, (16, 64, 64), (2.0, 1.0, 1.0))
    write_preprocessed_case(tmp_path, "Dataset951_Format", labels, 6, spacing, (16, 64, 64))
    config = load_configuration("Dataset951_Format", "3d_fullres")
    write_configuration_maps(config, progress=False)
    return MapStore(config), labels, spacing


def test_format_2_files_are_refused_with_the_fix_and_rewritten(small_store, capsys):
    store, labels, spacing = small_store
    case = "case_000"
    maps = compute_maps(("rrw", "signed_distance"), labels, 6, spacing)
    for kind, values in maps.items():
        write_format_2(store, case, kind, values, store.read_metadata(case, kind))
    assert blosc2.open(str(store.path(case, "rrw"))).dtype == np.float32
    fix = "Run: nnunet-losses setup-maps -d Dataset951_Format -c 3d_fullres"
    message = (
        f"the 'rrw' map of case {case} is in an older map format (format version 2; this nnunet-losses reads and writes "
        f"version {MAP_FORMAT_VERSION}) and must be rewritten. {fix}"
    )
    with pytest.raises(OlderMapFormatError) as caught:  # what a trainer's start (verify_all) and a data loader (open) raise
        store.open(case, "rrw", labels.shape, {"spacing": list(spacing)})
    assert str(caught.value) == message and isinstance(caught.value, StaleMapsError)
    with pytest.raises(StaleMapsError, match=f"1 of 1 cases have unusable 'signed_distance' maps; first: .*older map format .*{fix}$"):
        store.verify_all([case], ("signed_distance",))
    with pytest.raises(OlderMapFormatError):
        store.read(case, "signed_distance")
    capsys.readouterr()
    summary = write_configuration_maps(store.config, progress=False)
    assert (summary.written, summary.skipped) == (1, 0)
    assert capsys.readouterr().err == (
        f"note: 1 of 1 cases of Dataset951_Format 3d_fullres have maps in an older map format; "
        f"rewriting them in format version {MAP_FORMAT_VERSION}\n"
    )
    for kind, values in maps.items():
        assert store.verify(case, kind, content=True)["format"] == MAP_FORMAT_VERSION
        np.testing.assert_array_equal(store.read(case, kind), roundtrip(kind, values))


def test_a_newer_format_is_named_as_such(small_store):
    store, labels, spacing = small_store
    array = blosc2.open(str(store.path("case_000", "rrw")), mode="a")
    array.vlmeta[METADATA_KEY] = {**array.vlmeta[METADATA_KEY], "format": MAP_FORMAT_VERSION + 1}
    del array
    with pytest.raises(StaleMapsError, match=f"newer map format .*upgrade nnunet-losses") as caught:
        store.verify("case_000", "rrw")
    assert not isinstance(caught.value, OlderMapFormatError)


def test_values_hash_catches_a_changed_stored_value(small_store):
    store, _, _ = small_store
    store.verify("case_000", "signed_distance", content=True)
    array = blosc2.open(str(store.path("case_000", "signed_distance")), mode="a")
    array[3, 5, 6, 7] = np.float16(array[3, 5, 6, 7]) + np.float16(1.0)  # still decodes: only the hash can tell
    del array
    store.verify("case_000", "signed_distance")  # the cheap checks do not read values
    with pytest.raises(Exception, match="content hash mismatch"):
        store.verify("case_000", "signed_distance", content=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_patch_box_is_read_flipped_and_rounded_once(small_store, dtype):
    """A box of a stored map, read as the patch sampler reads it (flipped along some axes, into float32 or into the
    float16 maps travel in), equals the whole decoded map's box, flipped, rounded once to ``dtype``."""
    store, labels, spacing = small_store
    for kind in ("rrw", "signed_distance"):
        stored = store.open("case_000", kind, labels.shape, {"spacing": list(spacing)})
        whole = torch.from_numpy(store.read("case_000", kind))
        for box, flips in [((slice(3, 11), slice(5, 64), slice(0, 17)), ()), ((slice(0, 4), slice(1, 2), slice(9, 30)), (0, 2)),
                           ((slice(None),) * 3, (1,))]:
            expected = whole[(slice(None), *box)].flip([axis + 1 for axis in flips]).to(getattr(torch, np.dtype(dtype).name))
            out = np.empty(expected.shape, dtype=dtype)
            stored.read_into(out, [s.indices(n)[:2] for s, n in zip(box, labels.shape)], flips=flips)
            assert torch.equal(torch.from_numpy(out), expected)

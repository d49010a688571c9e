"""CT-like phantom with any number of classes: many organs of different sizes, vessels and thin walls.

The other phantoms have a fixed label set (at most four classes); this one makes label
volumes with ``num_classes`` labels (background included), for measuring what grows
with the number of classes (map storage, per-class losses). Like the others it is a
deterministic function of its seed and returns ``(image float32, labels uint8, spacing)``
in numpy's (z, y, x) order with spacing in mm; :func:`write_many_organs_dataset` writes
cases as an nnU-Net v2 raw dataset (this module does not import nnU-Net).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunet_losses.synthetic.common import Spacing3D, check_grid, smooth_curve, smooth_noise
from nnunet_losses.files import write_atomically
from nnunet_losses.synthetic.raw_dataset import FILE_ENDING, _holds, _write_nifti, case_seed

MAX_CLASSES = 256  # labels are uint8
_MIN_SHAPE = (8, 32, 32)
_STRUCTURE_KINDS = ("organ", "organ", "organ", "vessel", "wall")
"""Structure of class ``k`` (1-based): ``_STRUCTURE_KINDS[(k - 1) % 5]``; three in five are
compact organs, one a vessel, one a thin curved wall."""
_FILL = 0.45  # fraction of the body's volume the structures share out, on average
_ATTEMPTS = 30  # placements tried per structure before keeping the best one

Box = tuple[slice, slice, slice]


def many_organs_labels(num_classes: int) -> dict[str, int]:
    """The label names of a ``num_classes`` phantom: ``background`` 0, then ``organ_001``..."""
    return {"background": 0, **{f"organ_{k:03d}": k for k in range(1, num_classes)}}


def many_organs_case(seed: int, num_classes: int = 16, shape: Sequence[int] = (64, 160, 160),
                     spacing: Sequence[float] = (2.5, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray, Spacing3D]:
    """Generate one CT-like volume of a body holding ``num_classes - 1`` labelled structures.

    Geometry is defined in mm, so anisotropic ``spacing`` gives structures that are
    fewer voxels thick along the coarse axis, as in real CT. Axis 0 runs head to foot.

    * Body: an elliptic cylinder (40-47 % of the in-plane size per semi-axis, breathing
      slightly along axis 0) with a subcutaneous fat layer; air outside.
    * Structures, class ``k`` of kind ``_STRUCTURE_KINDS[(k - 1) % 5]``:

      - *organ*: a rotated ellipsoid (axis ratios 0.6-1.5) with a bumpy surface, its
        volume drawn log-uniformly around an equal share of 45 % of the body (so sizes
        vary by a factor of about 10 within a case);
      - *vessel*: a tube of radius 1.5-4 mm whose centre line wanders in-plane along
        30-100 % of axis 0;
      - *wall*: part of an ellipsoidal shell 1.5-3 mm thick (a cap of 40-75 % of its
        surface), a thin curved sheet like a bladder wall or the diaphragm.

      Structures never overlap: each is painted only onto body voxels no earlier
      structure took, at the first of up to 30 random positions where at least 60 % of
      it fits (else where most of it fits), so every class is present.
    * Intensities (HU): body -100 (fat) to 50 (muscle) mixed by a smooth field; organs
      20-90, vessels 150-350 (contrast), walls either soft tissue or bone-like
      (400-900), each with a slight texture; the volume is blurred by about half a voxel
      and gets Gaussian noise of 8-20 HU.

    Returns ``(image float32, labels uint8, spacing)`` in (z, y, x) order, spacing in mm.
    """
    (nz, ny, nx), spacing = check_grid(shape, spacing)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be an integer in [2, {MAX_CLASSES}], got {num_classes!r}")
    if any(n < m for n, m in zip((nz, ny, nx), _MIN_SHAPE)):
        raise ValueError(f"many_organs_case needs a shape of at least {_MIN_SHAPE}, got {(nz, ny, nx)}")
    rng = np.random.default_rng(seed)
    sz, sy, sx = spacing

    # Body: an elliptic cylinder whose radii vary slowly along axis 0.
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    radii = np.array([rng.uniform(0.40, 0.47) * ny, rng.uniform(0.40, 0.47) * nx])
    breathing = 1.0 + smooth_curve(rng, nz, 0.05, 1.0)
    centre = np.array([ny, nx]) / 2.0
    rho = np.sqrt(((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2)
    rho = rho[None] / breathing[:, None, None]
    body = rho < 1.0
    fat_thickness = rng.uniform(0.04, 0.08)

    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    free = body & (rho < 1.0 - fat_thickness)  # structures stay inside the subcutaneous fat
    share = _FILL * float(free.sum()) * sz * sy * sx / (num_classes - 1)  # mm^3 per structure
    intensities = np.zeros(num_classes)
    for k in range(1, num_classes):
        kind = _STRUCTURE_KINDS[(k - 1) % len(_STRUCTURE_KINDS)]
        volume = share * float(np.exp(rng.uniform(-1.2, 1.2)))
        _place(rng, labels, free, k, kind, volume, spacing)
        if kind == "organ":
            intensities[k] = rng.uniform(20.0, 90.0)
        elif kind == "vessel":
            intensities[k] = rng.uniform(150.0, 350.0)
        else:
            intensities[k] = rng.uniform(400.0, 900.0) if rng.random() < 0.4 else rng.uniform(20.0, 70.0)

    texture = smooth_noise(rng, (nz, ny, nx), (0.8, 2.0, 2.0))
    tissue = smooth_noise(rng, (nz, ny, nx), (1.5, 6.0, 6.0))
    image = np.full((nz, ny, nx), -1000.0)
    image[body] = np.where(tissue[body] > 0.3, -100.0, 45.0)
    image[body & (rho >= 1.0 - fat_thickness)] = -100.0
    organ = labels > 0
    image[organ] = intensities[labels[organ]] * (1.0 + 0.05 * texture[organ]) + 5.0 * texture[organ]
    image = ndimage.gaussian_filter(image, (0.4 * sy / sz, 0.6, 0.6))
    image += rng.normal(0.0, rng.uniform(8.0, 20.0), size=image.shape)
    return np.clip(image, -1024.0, 3071.0).astype(np.float32), labels, spacing


def _place(rng: np.random.Generator, labels: np.ndarray, free: np.ndarray, value: int, kind: str,
           volume: float, spacing: Spacing3D) -> None:
    """Paint one structure of ``kind`` and about ``volume`` mm^3 onto free voxels, in place.

    Tries random positions until at least 60 % of the structure lands on free voxels,
    keeping the best try otherwise; the painted voxels stop being free.
    """
    candidates = np.argwhere(free)
    if len(candidates) == 0:
        raise ValueError("no free voxel left for another structure; use a larger shape or fewer classes")
    best: tuple[float, Box, np.ndarray] | None = None
    for _ in range(_ATTEMPTS):
        centre = candidates[rng.integers(len(candidates))].astype(float)
        box, mask = _structure(rng, kind, volume, centre, labels.shape, spacing)
        size = int(mask.sum())
        if size == 0:
            continue
        fits = mask & free[box]
        fraction = float(fits.sum()) / size
        if best is None or fraction > best[0]:
            best = (fraction, box, fits)
        if fraction >= 0.6:
            break
    if best is None or not best[2].any():  # nothing fitted: one free voxel keeps the class present
        z, y, x = candidates[rng.integers(len(candidates))]
        best = (1.0, (slice(z, z + 1), slice(y, y + 1), slice(x, x + 1)), np.ones((1, 1, 1), dtype=bool))
    _, box, fits = best
    labels[box][fits] = value
    free[box] &= ~fits


def _structure(rng: np.random.Generator, kind: str, volume: float, centre: np.ndarray,
               shape: tuple[int, int, int], spacing: Spacing3D) -> tuple[Box, np.ndarray]:
    """The mask of one structure within its bounding box (clipped to the volume)."""
    spacing_array = np.array(spacing)
    if kind == "vessel":
        return _vessel(rng, volume, centre, shape, spacing_array)
    if kind == "wall":
        thickness = rng.uniform(1.5, 3.0)
        radius = float(np.sqrt(volume / (4.0 * np.pi * thickness * 0.6)))  # a cap of ~60 % of a sphere
    else:
        thickness = 0.0
        radius = float(np.cbrt(3.0 * volume / (4.0 * np.pi)))
    semi_axes = radius * rng.uniform(0.6, 1.5, size=3)
    semi_axes *= radius / float(np.cbrt(np.prod(semi_axes)))  # keep the volume
    semi_axes = np.maximum(semi_axes, spacing_array)  # at least a voxel along each axis
    reach = semi_axes.max() + thickness
    box = _box(centre, reach / spacing_array, shape)
    grids = np.meshgrid(*((np.arange(s.start, s.stop) - c) * d for s, c, d in zip(box, centre, spacing_array)), indexing="ij")
    points = np.stack([g.ravel() for g in grids])
    rotation = _random_rotation(rng)
    local = rotation @ points
    rho = np.sqrt(sum((local[i] / semi_axes[i]) ** 2 for i in range(3))).reshape(grids[0].shape)
    if kind == "organ":
        bumps = smooth_noise(rng, rho.shape, 1.5) if min(rho.shape) > 1 else np.zeros(rho.shape)
        return box, rho < 1.0 + 0.12 * bumps
    # a shell of the given thickness (in mm along the normal, approximately) cut to a cap
    mean_axis = float(np.mean(semi_axes))
    shell = np.abs(rho - 1.0) * mean_axis < thickness / 2.0
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    cos_angle = (direction @ local).reshape(rho.shape) / np.maximum(rho * mean_axis, 1e-6)
    return box, shell & (cos_angle > rng.uniform(-0.5, 0.0))


def _vessel(rng: np.random.Generator, volume: float, centre: np.ndarray, shape: tuple[int, int, int],
            spacing: np.ndarray) -> tuple[Box, np.ndarray]:
    """A tube with a wandering centre line along axis 0, of radius 1.5-4 mm (volume sets no length)."""
    nz = shape[0]
    radius = rng.uniform(1.5, 4.0)
    length = max(2, int(round(nz * rng.uniform(0.3, 1.0))))
    start = int(np.clip(centre[0] - length / 2.0, 0, nz - length))
    wander = np.stack([smooth_curve(rng, length, rng.uniform(3.0, 15.0), 1.5) for _ in range(2)], axis=1)
    path = centre[1:] + (wander - wander[length // 2]) / spacing[1:]  # voxels
    lo = np.maximum(np.floor(path.min(axis=0) - radius / spacing[1:]) - 1, 0).astype(int)
    hi = np.minimum(np.ceil(path.max(axis=0) + radius / spacing[1:]) + 2, shape[1:]).astype(int)
    if np.any(hi <= lo):
        return (slice(0, 1),) * 3, np.zeros((1, 1, 1), dtype=bool)
    yy, xx = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]].astype(float)
    mask = np.stack([((yy - p[0]) * spacing[1]) ** 2 + ((xx - p[1]) * spacing[2]) ** 2 < radius**2 for p in path])
    return (slice(start, start + length), slice(lo[0], hi[0]), slice(lo[1], hi[1])), mask


def _box(centre: np.ndarray, half_extent: np.ndarray, shape: tuple[int, int, int]) -> Box:
    """The bounding box (within ``shape``) of ``centre +- half_extent`` voxels."""
    lo = np.maximum(np.floor(centre - half_extent), 0).astype(int)
    hi = np.minimum(np.ceil(centre + half_extent) + 1, shape).astype(int)
    hi = np.maximum(hi, lo + 1)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def write_many_organs_dataset(raw_root: str | Path, dataset_id: int, num_cases: int, num_classes: int,
                              seed: int = 0, shape: Sequence[int] = (64, 160, 160),
                              spacing: Sequence[float] = (2.5, 1.0, 1.0)) -> Path:
    """Write ``num_cases`` :func:`many_organs_case` volumes as an nnU-Net v2 raw dataset.

    Layout as :func:`~nnunet_losses.synthetic.write_raw_dataset`:
    ``<raw_root>/Dataset{id:03d}_SyntheticOrgans{num_classes}/`` with ``imagesTr``
    (channel ``CT``, so nnU-Net normalises it as CT), ``labelsTr`` and ``dataset.json``
    written last; case ``i`` uses seed ``case_seed(seed, i)``. A complete folder written
    with the same arguments is returned as it is; any other content, or another folder
    with the same id, raises ``FileExistsError``. Returns the dataset folder.
    """
    raw_root = Path(raw_root)
    folder = raw_root / f"Dataset{int(dataset_id):03d}_SyntheticOrgans{int(num_classes)}"
    clashes = [p for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*") if p != folder]
    if clashes:
        raise FileExistsError(f"dataset id {dataset_id} is already used by {clashes[0]}")
    case_ids = [f"organs_{i:03d}" for i in range(num_cases)]
    dataset_json = {
        "name": folder.name.partition("_")[2],
        "description": "Synthetic CT-like many-organ phantoms from nnunet_losses.synthetic.many_organs",
        "channel_names": {"0": "CT"},
        "labels": many_organs_labels(num_classes),
        "numTraining": int(num_cases),
        "file_ending": FILE_ENDING,
        "synthetic": {"kind": "many_organs", "num_classes": int(num_classes), "seed": int(seed),
                      "num_cases": int(num_cases), "shape": [int(n) for n in shape], "spacing": [float(s) for s in spacing]},
    }
    expected = {f"imagesTr/{c}_0000{FILE_ENDING}" for c in case_ids} | {f"labelsTr/{c}{FILE_ENDING}" for c in case_ids}
    if any(p.is_file() for p in folder.rglob("*")):
        if _holds(folder, dataset_json, expected):
            return folder
        raise FileExistsError(f"{folder} already exists with different or incomplete content")
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    for index, case in enumerate(case_ids):
        image, labels, voxel_spacing = many_organs_case(case_seed(seed, index), num_classes, shape, spacing)
        _write_nifti(image, voxel_spacing, folder / "imagesTr" / f"{case}_0000{FILE_ENDING}")
        _write_nifti(labels, voxel_spacing, folder / "labelsTr" / f"{case}{FILE_ENDING}")
    write_atomically(folder / "dataset.json", json.dumps(dataset_json, indent=4).encode("utf-8"))
    return folder

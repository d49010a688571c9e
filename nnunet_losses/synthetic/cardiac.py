"""ACDC-like cardiac cine-MRI phantom: a short-axis stack with RV, myocardium and LV."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from nnunet_losses.synthetic.common import (
    Spacing3D,
    check_grid,
    inside_ellipse,
    polynomial_bias,
    rician,
    smooth_noise,
)

CARDIAC_LABELS: Mapping[str, int] = MappingProxyType({"background": 0, "RV": 1, "MYO": 2, "LV": 3})

_MIN_IN_PLANE = 32
_MIN_WALL = 2.5  # voxels; keeps a closed myocardial ring after rasterisation


def _wall_profile(rng: np.random.Generator, n_harmonics: int,
                  amplitude: float) -> Callable[[np.ndarray], np.ndarray]:
    """Random smooth periodic contour modulation ``phi -> 1 + sum_k a_k cos(k phi + p_k)``."""
    orders = np.arange(2, 2 + n_harmonics)
    amplitudes = rng.uniform(0.0, amplitude, size=n_harmonics)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=n_harmonics)

    def profile(phi: np.ndarray) -> np.ndarray:
        return 1.0 + sum(a * np.cos(k * phi + p) for k, a, p in zip(orders, amplitudes, phases))

    return profile


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a 2D mask (drops rasterisation slivers)."""
    parts, count = ndimage.label(mask)
    if count <= 1:
        return mask
    return parts == 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))


def _taper(u: float, apex: float) -> float:
    """Ellipsoidal long-axis profile: 1 at the base (u = 0), 0 from ``u = apex`` on."""
    return float(np.sqrt(max(1.0 - (u / apex) ** 2, 0.0)))


def cardiac_case(seed: int, shape: Sequence[int] = (10, 96, 96),
                 spacing: Sequence[float] = (8.0, 1.5, 1.5)) -> tuple[np.ndarray, np.ndarray, Spacing3D]:
    """Generate one ACDC-like short-axis cine-MRI stack.

    Axis 0 runs through the short-axis slices from the base (index 0) to the apex; the
    geometry is defined in voxels relative to the in-plane size, so the heart scales
    with ``shape`` and ``spacing`` only sets the physical voxel size that is returned.

    Labels (``CARDIAC_LABELS``): 0 background, 1 right-ventricular (RV) cavity,
    2 left-ventricular myocardium (MYO), 3 left-ventricular (LV) cavity.

    Structure, per case and per slice:

    * LV cavity: an ellipse (axis ratio 0.85-1, random orientation) with a wavy contour,
      radius 10-15 % of the in-plane size at the base, tapering ellipsoidally to zero at
      70-95 % of the stack. Papillary muscles appear as two dark spots inside it, labelled
      LV as in ACDC.
    * MYO: a ring of 2.5 voxels or more (about 3.5-5 % of the in-plane size, thinner towards
      the apex and varying around the circumference) that closes every LV slice; past the
      LV apex it continues as a solid apical cap for a further 5-20 % of the stack.
    * RV: a crescent, the part of a wide ellipse on one side of the LV that lies outside
      the epicardium, so it hugs the septum and wraps part of the LV. Its side is random
      around the image's left (rotation varies per case and slightly per slice) and it
      ends at 45-85 % of the LV's length, so the apical slices hold LV/MYO only. The last
      slice never contains RV or LV; some cases end with slices holding nothing.
    * The heart drifts across slices (an oblique long axis) with per-slice jitter of
      centre, orientation and wall thickness.

    Intensities: bright blood pools (LV, RV), dark myocardium and RV free wall, a bright
    partial ring of epicardial fat, and a body outline with textured tissue, dark lungs,
    a mid-grey liver and bright subcutaneous fat; air outside the body. The stack is
    blurred slightly in-plane, multiplied by a smooth bias field and by a per-case scale
    (about 150-1500), and corrupted with Rician noise (2-6 % of the blood signal).

    Returns ``(image float32, labels uint8, spacing)`` in (z, y, x) order, spacing in mm.
    """
    (nz, ny, nx), spacing = check_grid(shape, spacing)
    if min(ny, nx) < _MIN_IN_PLANE:
        raise ValueError(f"cardiac_case needs shape (z, y, x) with y, x >= {_MIN_IN_PLANE}, got {(nz, ny, nx)}")
    rng = np.random.default_rng(seed)
    size = float(min(ny, nx))
    y, x = np.mgrid[0:ny, 0:nx].astype(float)

    # Per-case anatomy.
    centre = np.array([ny, nx]) / 2.0 + rng.uniform(-0.06, 0.06, size=2) * size
    drift = rng.uniform(-0.05, 0.05, size=2) * size  # centre shift from base to apex
    r_lv0 = rng.uniform(0.10, 0.15) * size
    wall0 = max(rng.uniform(0.035, 0.05) * size, _MIN_WALL + 0.5)
    ratio = rng.uniform(0.85, 1.0)
    orientation = rng.uniform(0.0, np.pi)
    apex_lv = rng.uniform(0.70, 0.95)
    apex_epi = apex_lv + rng.uniform(0.05, 0.20)
    apex_rv = apex_lv * rng.uniform(0.45, 0.85)
    rv_side = -np.pi / 2 + rng.uniform(-0.6, 0.6)  # direction of the RV, about image left
    rv_reach = rng.uniform(0.6, 1.2) * r_lv0  # crescent thickness beyond the epicardium
    rv_width = rng.uniform(1.1, 1.5)  # half-width of the RV ellipse / epicardial radius
    rv_inset = rng.uniform(0.0, 0.5)  # how far the RV ellipse reaches into the LV
    endo_shape = _wall_profile(rng, 2, 0.05)
    wall_shape = _wall_profile(rng, 1, 0.15)
    papillary_angles = rv_side + np.pi + rng.uniform(0.4, 0.9, size=2) * np.array([1.0, -1.0])
    fat_start, fat_extent = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.8, 2.5)

    # Per-case intensities (relative to blood = 1) and background anatomy.
    blood = 1.0
    muscle = rng.uniform(0.2, 0.35)
    fat = rng.uniform(0.75, 0.95)
    tissue = rng.uniform(0.3, 0.45)
    body_centre = (ny / 2.0, nx / 2.0)
    body_radii = (rng.uniform(0.42, 0.48) * ny, rng.uniform(0.45, 0.49) * nx)
    body = inside_ellipse(y, x, body_centre, body_radii)
    fat_layer = body & ~inside_ellipse(y, x, body_centre, [r - 0.035 * size for r in body_radii])
    organs = []  # (mask, intensity): lungs beside the LV and above, the liver below the RV
    for a in rv_side + np.array([np.pi, -np.pi / 2]) + rng.uniform(-0.3, 0.3, size=2):
        lung_radii = (rng.uniform(0.15, 0.22) * size, rng.uniform(0.08, 0.12) * size)
        lung_centre = centre + 0.3 * size * np.array([np.cos(a), np.sin(a)])
        organs.append((inside_ellipse(y, x, lung_centre, lung_radii, a) & body, rng.uniform(0.03, 0.08)))
    a = rv_side + np.pi / 4 + rng.uniform(-0.3, 0.3)
    liver_centre = centre + 0.42 * size * np.array([np.cos(a), np.sin(a)])
    organs.append((inside_ellipse(y, x, liver_centre, (0.25 * size, 0.18 * size), a) & body,
                   rng.uniform(0.35, 0.5)))
    texture = smooth_noise(rng, (nz, ny, nx), (0.0, 2.5, 2.5))

    image = np.zeros((nz, ny, nx))
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    for k in range(nz):
        u = k / max(nz - 1, 1)  # 0 at the base, 1 at the last (apical) slice
        c = centre + drift * u + rng.normal(0.0, 0.4, size=2)
        angle = orientation + rng.normal(0.0, 0.1)
        dy, dx = y - c[0], x - c[1]
        phi = np.arctan2(dx, dy)  # measured from the y axis towards x, as in inside_ellipse
        along = dy * np.cos(angle) + dx * np.sin(angle)
        across = -dy * np.sin(angle) + dx * np.cos(angle)
        rho = np.hypot(along * np.sqrt(ratio), across / np.sqrt(ratio))

        r_lv = r_lv0 * _taper(u, apex_lv)
        r_endo = r_lv * endo_shape(phi)
        if u < apex_lv:
            wall = wall0 * (1.0 - 0.25 * u) * rng.uniform(0.9, 1.1)
            r_epi = r_endo + np.maximum(wall * wall_shape(phi), _MIN_WALL)
            r_epi_mean = r_lv + wall
        else:  # solid apical cap
            r_epi = r_epi_mean = wall0 * _taper(u - apex_lv, apex_epi - apex_lv)
        lv = rho < r_endo
        epi = rho < r_epi

        rv_scale = _taper(u, apex_rv)
        rv = np.zeros_like(lv)
        if rv_scale > 0.0:
            side = rv_side + rng.normal(0.0, 0.08)
            near, far = -rv_inset * r_epi_mean, r_epi_mean + rv_reach * rv_scale
            rv_centre = c + (near + far) / 2.0 * np.array([np.cos(side), np.sin(side)])
            rv_radii = ((far - near) / 2.0, rv_width * r_epi_mean * max(rv_scale, 0.5))
            rv = _largest_component(inside_ellipse(y, x, rv_centre, rv_radii, side) & ~epi)

        plane = np.where(body, tissue * np.exp(0.25 * texture[k]), 0.0)
        for mask, value in organs:
            plane[mask] = value * np.exp(0.1 * texture[k][mask])
        plane[fat_layer] = fat
        fat_sector = np.mod(phi - fat_start, 2.0 * np.pi) < fat_extent
        plane[(rho < r_epi + 1.5) & ~epi & fat_sector] = fat
        plane[ndimage.binary_dilation(rv, iterations=2) & ~epi] = muscle  # RV free wall
        plane[rv] = blood
        plane[epi] = muscle
        plane[lv] = blood
        for a in papillary_angles:
            spot = c + 0.6 * r_lv * np.array([np.cos(a), np.sin(a)])
            plane[inside_ellipse(y, x, spot, (0.12 * r_lv0, 0.12 * r_lv0)) & lv] = muscle

        image[k] = plane
        labels[k][rv] = CARDIAC_LABELS["RV"]
        labels[k][epi] = CARDIAC_LABELS["MYO"]
        labels[k][lv] = CARDIAC_LABELS["LV"]

    scale = np.exp(rng.uniform(np.log(150.0), np.log(1500.0)))
    image = ndimage.gaussian_filter(image, (0.0, 0.6, 0.6)) * polynomial_bias(rng, (nz, ny, nx), 0.3)
    image = rician(rng, scale * image, rng.uniform(0.02, 0.06) * scale * blood)
    return image.astype(np.float32), labels, spacing

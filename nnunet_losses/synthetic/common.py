"""Shared building blocks of the phantoms: grid checks, random fields, noise, geometry.

Every function that draws random numbers takes a ``numpy.random.Generator`` so that a
phantom is a deterministic function of its seed. Arrays use numpy's (z, y, x) axis order.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Shape3D = tuple[int, int, int]
Spacing3D = tuple[float, float, float]


def check_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[Shape3D, Spacing3D]:
    """Validate a 3D array shape and voxel spacing (mm) and return them as tuples.

    Raises ``ValueError`` unless both have three entries, the shape positive integers
    and the spacing positive finite numbers.
    """
    if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
        raise ValueError(f"shape must be three positive integers (z, y, x), got {tuple(shape)}")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers in mm (z, y, x), got {tuple(spacing)}")
    z, y, x = (int(n) for n in shape)
    sz, sy, sx = (float(s) for s in spacing)
    return (z, y, x), (sz, sy, sx)


def smooth_noise(rng: np.random.Generator, shape: Sequence[int],
                 sigma: float | Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation.

    ``sigma`` is the correlation length in voxels (one value or one per axis; 0 leaves an
    axis uncorrelated). Used for tissue texture and slowly varying contours.
    """
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), sigma, mode="wrap")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def smooth_curve(rng: np.random.Generator, n: int, amplitude: float,
                 max_cycles: float) -> np.ndarray:
    """A smooth random 1D profile of length ``n``: two sinusoids with random phases.

    The result stays within ``[-amplitude, amplitude]``; the faster sinusoid completes
    at most ``max_cycles`` periods over the profile.
    """
    t = np.linspace(0.0, 1.0, n)
    freqs = rng.uniform(0.3, 1.0, size=2) * max_cycles
    phases = rng.uniform(0.0, 2.0 * np.pi, size=2)
    weights = rng.dirichlet((2.0, 2.0))
    return amplitude * sum(w * np.sin(2.0 * np.pi * f * t + p)
                           for w, f, p in zip(weights, freqs, phases))


def polynomial_bias(rng: np.random.Generator, shape: Sequence[int],
                    strength: float) -> np.ndarray:
    """Smooth multiplicative bias field ``exp(q(z, y, x))`` with a random quadratic ``q``.

    Coordinates are normalised to [-1, 1]; ``q`` varies mostly in-plane (as a receive
    coil's sensitivity does) and its values lie within about ``[-strength, strength]``.
    """
    z, y, x = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in shape), indexing="ij")
    terms = (y, x, y * y - 1 / 3, x * x - 1 / 3, x * y, 0.3 * z)
    coefficients = rng.uniform(-1.0, 1.0, size=len(terms))
    q = sum(c * t for c, t in zip(coefficients, terms))
    return np.exp(strength * q / max(float(np.abs(q).max()), 1e-12))


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude-MRI noise: ``|signal + n_re + i n_im|`` with Gaussian ``n`` of std ``sigma``."""
    real = signal + rng.normal(0.0, sigma, size=signal.shape)
    imag = rng.normal(0.0, sigma, size=signal.shape)
    return np.hypot(real, imag)


def speckle(rng: np.random.Generator, shape: Sequence[int],
            grain: Sequence[float]) -> np.ndarray:
    """Fully developed speckle: unit-mean Rayleigh-distributed multiplicative noise.

    The envelope of a complex Gaussian field blurred by a Gaussian point-spread function
    with per-axis widths ``grain`` (voxels), so grains are elongated like the resolution
    cell of an ultrasound probe.
    """
    real = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), grain, mode="wrap")
    imag = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), grain, mode="wrap")
    envelope = np.hypot(real, imag)
    return envelope / envelope.mean()


def b_mode(echogenicity: np.ndarray, rng: np.random.Generator, grain: Sequence[float],
           dynamic_range_db: float) -> np.ndarray:
    """Ultrasound B-mode image in [0, 255] from a noise-free echogenicity map (max ~1).

    Multiplies the map (lightly smoothed, as by the probe's resolution) by speckle and
    log-compresses the envelope over ``dynamic_range_db`` decibels below 1.
    """
    smoothed = ndimage.gaussian_filter(echogenicity, 0.7)
    envelope = np.maximum(smoothed * speckle(rng, echogenicity.shape, grain), 1e-12)
    decibels = 20.0 * np.log10(envelope)
    return (255.0 * np.clip(1.0 + decibels / dynamic_range_db, 0.0, 1.0)).astype(np.float32)


def inside_ellipse(y: np.ndarray, x: np.ndarray, centre: Sequence[float],
                   radii: Sequence[float], angle: float = 0.0) -> np.ndarray:
    """Boolean mask of the points ``(y, x)`` inside an ellipse.

    ``radii`` are the semi-axes along the ellipse's own axes, the first one rotated by
    ``angle`` (radians) from the y axis towards the x axis.
    """
    dy, dx = y - centre[0], x - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    along = dy * cos + dx * sin
    across = -dy * sin + dx * cos
    return (along / radii[0]) ** 2 + (across / radii[1]) ** 2 < 1.0


def paint_ellipsoid(target: np.ndarray, centre: Sequence[float], radii: Sequence[float],
                    value: float | int) -> None:
    """Set the voxels of ``target`` inside an axis-aligned ellipsoid to ``value`` in place.

    ``centre`` and ``radii`` are in voxels, one per axis; only the ellipsoid's bounding
    box is evaluated.
    """
    lo = [max(int(np.floor(c - r)), 0) for c, r in zip(centre, radii)]
    hi = [min(int(np.ceil(c + r)) + 1, n) for c, r, n in zip(centre, radii, target.shape)]
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
    target[tuple(slice(a, b) for a, b in zip(lo, hi))][inside] = value

"""Carotid B-mode ultrasound phantom: the far-wall intima-media complex (IMC)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from nnunet_losses.synthetic.common import Spacing3D, b_mode, check_grid, smooth_curve, smooth_noise

INTIMA_MEDIA_LABELS: Mapping[str, int] = MappingProxyType({"background": 0, "IMC": 1})

_MIN_SIZE = 32
_MIN_THICKNESS, _MAX_THICKNESS = 3.0, 6.0  # voxels; the band's extent along axis 1


def intima_media_case(seed: int, shape: Sequence[int] = (1, 128, 160),
                      spacing: Sequence[float] = (1.0, 0.06, 0.06)) -> tuple[np.ndarray, np.ndarray, Spacing3D]:
    """Generate one longitudinal carotid B-mode image, stored as a single-slice 3D array.

    ``shape`` must be ``(1, depth, width)``: axis 1 is depth (the beam direction, top =
    skin), axis 2 runs along the vessel (image columns). Geometry is defined relative to
    the image size; ``spacing`` only sets the physical voxel size that is returned.

    Labels (``INTIMA_MEDIA_LABELS``): 0 background, 1 intima-media complex (IMC).

    Structure, from the top down in every column:

    * superficial tissue with horizontally layered echogenicity;
    * the bright near wall, then the dark, almost anechoic lumen (30-42 % of the depth);
    * the far-wall IMC: a thin, slightly curved and tilted, roughly horizontal band
      starting at 55-68 % of the depth, between 3 and 6 voxels thick in every column
      (thickness varies smoothly along the vessel). In the image its top (the
      lumen-intima interface) is a moderately bright line over a darker media;
    * the very bright adventitia (2-4 voxels), then deep tissue.

    The whole image is attenuated with depth, multiplied by speckle (unit-mean Rayleigh
    noise with laterally elongated grains) and log-compressed to [0, 255].

    The band is annotated only over one contiguous run of columns, starting in the first
    5-30 % and ending in the last 5-30 % of the width (never the first or last column),
    as a conservative semi-automatic annotation would; the image shows the band across
    the full width.

    Returns ``(image float32, labels uint8, spacing)`` in (z, y, x) order, spacing in mm.
    """
    (nz, ny, nx), spacing = check_grid(shape, spacing)
    if nz != 1 or min(ny, nx) < _MIN_SIZE:
        raise ValueError(f"intima_media_case needs shape (1, depth, width) with depth and width "
                         f">= {_MIN_SIZE}, got {(nz, ny, nx)}")
    rng = np.random.default_rng(seed)
    t = np.linspace(-0.5, 0.5, nx)

    # Per-column boundaries (continuous, in voxels along the depth axis).
    intima = (ny * rng.uniform(0.55, 0.68) + ny * rng.uniform(-0.06, 0.06) * t
              + ny * rng.uniform(-0.12, 0.12) * t ** 2 + smooth_curve(rng, nx, 1.0, 2.0))
    thickness = np.clip(rng.uniform(3.8, 5.2) + smooth_curve(rng, nx, 0.8, 1.5),
                        _MIN_THICKNESS, _MAX_THICKNESS)
    media = intima + thickness
    adventitia = media + rng.uniform(2.0, 4.0)
    lumen_top = intima - ny * rng.uniform(0.30, 0.42) + smooth_curve(rng, nx, 1.5, 1.0)
    near_wall_top = lumen_top - rng.uniform(3.0, 6.0)

    depth = np.arange(ny, dtype=float)[:, None]
    layers = np.exp(0.35 * smooth_noise(rng, (ny, nx), (1.5, 12.0)))
    echo = rng.uniform(0.05, 0.1) * layers  # tissue above and below the vessel
    echo = np.where((depth >= near_wall_top) & (depth < lumen_top), rng.uniform(0.6, 0.9), echo)
    echo = np.where((depth >= lumen_top) & (depth < intima), rng.uniform(0.004, 0.01), echo)
    in_band = (depth >= intima) & (depth < media)
    band_echo = rng.uniform(0.3, 0.5) * np.exp(-(depth - intima) / 1.5) + rng.uniform(0.08, 0.15)
    echo = np.where(in_band, band_echo, echo)
    echo = np.where((depth >= media) & (depth < adventitia), 1.0, echo)
    echo = echo * np.exp(-rng.uniform(0.5, 1.2) * depth / ny)  # attenuation

    image = b_mode(echo, rng, grain=(0.8, 2.0), dynamic_range_db=rng.uniform(45.0, 55.0))

    first = max(1, int(round(nx * rng.uniform(0.05, 0.30))))
    last = min(nx - 1, int(round(nx * rng.uniform(0.70, 0.95))))
    labels = np.zeros((ny, nx), dtype=np.uint8)
    labels[:, first:last] = in_band[:, first:last] * INTIMA_MEDIA_LABELS["IMC"]
    return image[None], labels[None], spacing

"""3D spine ultrasound phantom: pairs of laminae beside the spinous-process column."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from nnunet_losses.synthetic.common import (
    Spacing3D,
    b_mode,
    check_grid,
    inside_ellipse,
    paint_ellipsoid,
    smooth_curve,
    smooth_noise,
)

LAMINA_LABELS: Mapping[str, int] = MappingProxyType({"background": 0, "lamina": 1})

_MIN_SHAPE = (16, 48, 24)
_MIN_PAIRS, _MAX_PAIRS = 6, 10
_MIN_RADIUS, _MAX_RADIUS = 2.0, 4.0  # voxels
_GAP = 2.0  # voxels kept free between neighbouring laminae along the spine


def lamina_case(seed: int, shape: Sequence[int] = (48, 96, 32),
                spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray, Spacing3D]:
    """Generate one 3D ultrasound volume of a spine segment with labelled laminae.

    Axes: 0 is depth (the beam direction, top = skin side), 1 runs along the spine,
    2 is left-right. Geometry is defined relative to the volume size; ``spacing`` only
    sets the physical voxel size that is returned.

    Labels (``LAMINA_LABELS``): 0 background, 1 lamina.

    Structure:

    * the spinous-process column: a dark band (about 12 % of the width) through the whole
      depth, running along axis 1 and curving smoothly left-right (a scoliotic curve);
    * 6-10 pairs of laminae (about one per 12 voxels along axis 1, +-1), equally spaced
      along the column. Each lamina is an ellipsoid with semi-axes of 2-4 voxels (flatter
      in depth); the two of a pair lie at the same position along the spine and the same
      depth, at equal distances left and right of the column's centre line, so the line
      joining them is perpendicular to the column. Their depth follows a smooth curve
      along the spine. Every lamina is one 26-connected component, separated from the
      others by at least one background voxel;
    * in the image, laminae are bright (strong specular reflectors) and cast an acoustic
      shadow below them; soft tissue has layered texture and a bright fascia line.

    The echogenicity is attenuated exponentially with depth, multiplied by speckle and
    log-compressed to [0, 255].

    Returns ``(image float32, labels uint8, spacing)`` in (z, y, x) order, spacing in mm.
    """
    (nd, nl, nw), spacing = check_grid(shape, spacing)
    if any(n < m for n, m in zip((nd, nl, nw), _MIN_SHAPE)):
        raise ValueError(f"lamina_case needs a shape of at least {_MIN_SHAPE}, got {(nd, nl, nw)}")
    rng = np.random.default_rng(seed)

    # Column centre line (left-right position per position along the spine).
    column = nw / 2.0 + smooth_curve(rng, nl, 0.06 * nw, 1.0)
    half_width = max(1.25, 0.06 * nw)
    lamina_depth = nd * rng.uniform(0.38, 0.5) + smooth_curve(rng, nl, 0.05 * nd, 1.0)

    n_pairs = int(np.clip(nl // 12 + rng.integers(-1, 2), _MIN_PAIRS, _MAX_PAIRS))
    margin = 0.04 * nl
    step = (nl - 2.0 * margin) / n_pairs
    offset = rng.uniform(-0.15, 0.15) * step
    distance = rng.uniform(0.2, 0.25) * nw
    max_lateral = min(_MAX_RADIUS, 0.19 * nw - 1.0, distance - half_width - 1.0)
    max_along = min(_MAX_RADIUS, (step - _GAP) / 2.0)

    labels = np.zeros((nd, nl, nw), dtype=np.uint8)
    echo = rng.uniform(0.08, 0.15) * np.exp(0.3 * smooth_noise(rng, (nd, nl, nw), (1.0, 6.0, 4.0)))
    depth = np.arange(nd, dtype=float)[:, None, None]
    fascia = nd * rng.uniform(0.1, 0.25) + smooth_curve(rng, nl, 1.5, 1.0)[None, :, None]
    echo[np.broadcast_to(np.abs(depth - fascia) < 0.8, echo.shape)] = rng.uniform(0.5, 0.7)
    along, lateral = np.mgrid[0:nl, 0:nw].astype(float)
    echo[:, np.abs(lateral - column[:, None]) < half_width] = rng.uniform(0.01, 0.02)

    blobs = []
    for j in range(n_pairs):
        y = margin + step * (j + 0.5) + offset
        i = int(round(y))
        radii = (rng.uniform(_MIN_RADIUS, 2.5), rng.uniform(_MIN_RADIUS, max_along),
                 rng.uniform(_MIN_RADIUS, max_lateral))
        for side in (-1.0, 1.0):
            blobs.append(((lamina_depth[i], y, column[i] + side * distance), radii))
    for centre, radii in blobs:
        shadow = inside_ellipse(along, lateral, centre[1:], radii[1:])
        echo[int(np.ceil(centre[0])):, shadow] *= 0.15
    for centre, radii in blobs:
        paint_ellipsoid(echo, centre, radii, 1.0)
        paint_ellipsoid(labels, centre, radii, LAMINA_LABELS["lamina"])

    echo *= np.exp(-rng.uniform(1.0, 2.0) * depth / nd)  # attenuation
    image = b_mode(echo, rng, grain=(0.7, 1.0, 1.2), dynamic_range_db=rng.uniform(45.0, 55.0))
    return image, labels, spacing

"""The rotation centre of a parallel-beam scan, from a projection and its mirror 180° later.

No maintained library that this project already depends on finds the centre (scikit-image
reconstructs but does not search; tomopy and algotom are not installed), so this is the
classic 0/180° mirror cross-correlation: a parallel-beam projection at ``theta + 180°`` is the
one at ``theta`` mirrored about the rotation axis, so the shift that best aligns projection
``i`` with the mirror of projection ``j`` (``theta_j - theta_i`` closest to 180°) gives the
axis: ``centre = (C - 1 + shift) / 2``. The shift is found by FFT cross-correlation of the
column profiles (summed over detector rows, after removing each one's mean), refined to a
fraction of a pixel by a parabola through the peak. An angle pair off 180° by one angular step
(a 0..179° scan) moves features by ``r sin(step)``, in opposite directions on the two sides of
the axis, which the correlation peak averages out to well under a pixel for a compact object.
"""

from __future__ import annotations

import numpy as np

MAX_OFF_PI_RAD = np.deg2rad(5.0)
"""The best pair must be within this of 180° apart (5°), else the scan has no mirror pair."""


def mirror_pair(angles_rad: np.ndarray) -> tuple[int, int]:
    """Indices ``(i, j)`` of the two projections whose angles are closest to 180° apart.

    Raises
    ------
    ValueError
        When no pair is within :data:`MAX_OFF_PI_RAD` of 180° apart.
    """
    angles = np.asarray(angles_rad, dtype=np.float64)
    difference = np.abs(np.abs(angles[None, :] - angles[:, None]) - np.pi)
    i, j = np.unravel_index(int(np.argmin(difference)), difference.shape)
    if difference[i, j] > MAX_OFF_PI_RAD:
        raise ValueError(
            f"no two projections are 180° apart (closest {np.rad2deg(np.pi - difference[i, j]):.1f}"
            "°); give the rotation centre"
        )
    return int(min(i, j)), int(max(i, j))


def find_centre(absorption: np.ndarray, angles_rad: np.ndarray) -> float:
    """The rotation axis position in detector columns (0 = centre of the first column).

    Parameters
    ----------
    absorption : numpy.ndarray
        ``(N, R, C)`` line integrals ``-log(T)`` (or any quantity that is zero in air).
    angles_rad : numpy.ndarray
        ``(N,)`` rotation angles, radians.

    Returns
    -------
    float
        The centre, px, between 0 and ``C - 1``.

    Raises
    ------
    ValueError
        Without a pair of projections 180° apart, or flat projections (no structure).
    """
    i, j = mirror_pair(angles_rad)
    first = np.asarray(absorption[i], dtype=np.float64).sum(axis=0)
    second = np.asarray(absorption[j], dtype=np.float64).sum(axis=0)[::-1]
    shift = _correlation_shift(first, second)
    columns = first.size
    centre = (columns - 1 + shift) / 2.0
    return float(np.clip(centre, 0.0, columns - 1.0))


def _correlation_shift(first: np.ndarray, second: np.ndarray) -> float:
    """Sub-pixel shift ``s`` that best matches ``first[x] ~ second[x - s]``."""
    a = first - first.mean()
    b = second - second.mean()
    if not (np.any(a) and np.any(b)):
        raise ValueError("the projections are flat: no structure to find the rotation centre")
    size = a.size
    spectrum = np.fft.rfft(a, 2 * size) * np.conj(np.fft.rfft(b, 2 * size))
    correlation = np.roll(np.fft.irfft(spectrum, 2 * size), size)
    peak = int(np.argmax(correlation))
    offset = 0.0
    if 0 < peak < correlation.size - 1:
        left, middle, right = correlation[peak - 1 : peak + 2]
        curvature = left - 2 * middle + right
        if curvature < 0:
            offset = 0.5 * (left - right) / curvature
    return float(peak + offset - size)

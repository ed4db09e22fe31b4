r"""Small synthetic raw µ-XRF scans for tests, benchmarks and examples.

This is not the beamline simulator (``sim/``): there is no beam blur and no sample physics,
only what exercises the raw-data path. Each point's expected spectrum is

.. math::

    \lambda_{p,d}(c) = f_p \, \ell_{p,d} \Big( \sum_e a_e(p)\, g_e(c) + A\, g_{Ar}(c)
    + S\, g_{el}(c) + 2 S\, g_{C}(c) + b\,[E(c) < E_0] \Big),

with ``f_p = I0_p / mean(I0)`` the flux fluctuation, ``ell`` the live-time fraction (dead time),
``a_e`` the element map value (expected K-alpha counts per point and detector element at the
mean flux, without dead time), ``g_e`` the K-alpha + K-beta peak profile (Gaussian, detector
resolution, 15 % K-beta), ``A`` the Ar K-alpha counts from air, ``S`` the elastic scatter
counts at the incident energy ``E0`` (with twice as much Compton scatter, 4 % lower in energy
and three times broader) and ``b`` a flat background per channel below ``E0``; counts are
Poisson. With the defaults a spectrum holds about 1 500 counts per element and point (mean
0.4 counts per channel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from asirp.xrf.lines import DetectorResolution, EnergyCalibration, line_energy_kev
from asirp.xrf.raw import RawXRFScan

SCAN_KINDS = ("raster", "snake", "fly")
KB_FRACTION = 0.15


def _peak(
    calibration: EnergyCalibration, n_channels: int, energy_kev: float, broadening: float = 1.0
) -> np.ndarray:
    resolution = DetectorResolution()
    sigma = broadening * resolution.fwhm_kev(energy_kev) / 2.3548200450309493
    energies = np.asarray(calibration.energy_kev(np.arange(n_channels)))
    profile = np.exp(-0.5 * ((energies - energy_kev) / sigma) ** 2)
    width = calibration.gain_kev_per_channel / (sigma * np.sqrt(2.0 * np.pi))
    return profile * width  # sums to ~1 over a fully sampled peak


def scan_positions(
    shape: tuple[int, int], step_um: float, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Point positions of a horizontal-line scan over a ``(ny, nx)`` grid.

    Returns
    -------
    tuple of numpy.ndarray
        ``x_um``, ``y_um`` (float64, µm), ``line_index`` (int64), and the cell ``rows``,
        ``cols`` of each point (int64), in acquisition order. ``fly`` lines start and end at
        random columns (unequal lengths) and carry ±10 % position jitter.
    """
    if kind not in SCAN_KINDS:
        raise ValueError(f"scan kind must be one of {', '.join(SCAN_KINDS)}, got {kind!r}")
    ny, nx = shape
    rows, cols = [], []
    for row in range(ny):
        columns = np.arange(nx)
        if kind == "fly":
            start = int(rng.integers(0, max(1, nx // 8)))
            stop = nx - int(rng.integers(0, max(1, nx // 8)))
            columns = columns[start:stop]
        if kind == "snake" and row % 2:
            columns = columns[::-1]
        rows.append(np.full(columns.shape[0], row))
        cols.append(columns)
    row_of = np.concatenate(rows).astype(np.int64)
    col_of = np.concatenate(cols).astype(np.int64)
    x = col_of * float(step_um)
    y = row_of * float(step_um)
    if kind == "fly":
        x = x + rng.uniform(-0.1, 0.1, x.shape) * step_um
        y = y + rng.uniform(-0.02, 0.02, y.shape) * step_um
    return x, y, row_of.copy(), row_of, col_of


def synthetic_scan(
    element_maps: Mapping[str, np.ndarray],
    *,
    step_um: float = 10.0,
    kind: str = "raster",
    n_detectors: int = 4,
    n_channels: int = 4096,
    calibration: EnergyCalibration | None = None,
    i0_mean: float = 1.0e5,
    i0_fluctuation: float = 0.2,
    ar_counts: float = 40.0,
    scatter_counts: float = 300.0,
    incident_energy_kev: float = 12.0,
    background: float = 0.15,
    dead_time_fraction: float = 0.1,
    dwell_s: float = 0.1,
    dtype: Any = np.uint32,
    seed: int = 0,
    metadata: Mapping[str, Any] | None = None,
) -> RawXRFScan:
    """A raw scan of element maps (see the module notes for the model).

    Parameters
    ----------
    element_maps : mapping of str to numpy.ndarray
        Element symbol to its map ``(ny, nx)``: expected K-alpha counts per point and detector
        element at the mean flux (all maps of one shape).
    step_um : float
        Scan step, µm (same along both axes).
    kind : {"raster", "snake", "fly"}
        Scan pattern (lines along x).
    n_detectors, n_channels : int
        Detector elements and channels.
    calibration : EnergyCalibration, optional
        Default: 0 keV offset, 5 eV/channel.
    i0_mean : float
        Mean I0, counts.
    i0_fluctuation : float
        Relative amplitude of the (slow sine plus random) I0 variation.
    ar_counts : float
        Expected Ar K-alpha counts per point and element at the mean flux.
    scatter_counts : float
        Expected elastic-scatter counts per point and element (Compton: twice as many).
    incident_energy_kev : float
        Incident (elastic scatter) energy, keV.
    background : float
        Expected background counts per channel below the incident energy.
    dead_time_fraction : float
        Mean dead-time fraction (1 - live/real); it varies by point and element.
    dwell_s : float
        Real time per point, s.
    dtype : numpy dtype
        Integer dtype of the spectra.
    seed : int
        Seed of the generator.
    metadata : mapping, optional
        Extra metadata (``sample``, ``beam_fwhm_um``...).

    Returns
    -------
    RawXRFScan
    """
    if not element_maps:
        raise ValueError("give at least one element map")
    maps = {name: np.asarray(values, dtype=np.float64) for name, values in element_maps.items()}
    shapes = {m.shape for m in maps.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"element maps must be 2-D and of one shape, got {sorted(shapes)}")
    shape = next(iter(shapes))
    if not 0.0 <= dead_time_fraction < 0.9:
        raise ValueError(f"dead_time_fraction must be in [0, 0.9), got {dead_time_fraction}")
    rng = np.random.default_rng(seed)
    calibration = calibration or EnergyCalibration(0.0, 0.005)
    x, y, line_index, rows, cols = scan_positions(shape, step_um, kind, rng)
    n_points = x.shape[0]

    profiles = []
    for element in maps:
        profile = _peak(calibration, n_channels, line_energy_kev(element, "Ka")) * (1 - KB_FRACTION)
        profile += _peak(calibration, n_channels, line_energy_kev(element, "Kb")) * KB_FRACTION
        profiles.append(profile)
    profiles_array = np.stack(profiles)  # (E, C)
    energies = np.asarray(calibration.energy_kev(np.arange(n_channels)))
    compton = _peak(calibration, n_channels, 0.96 * incident_energy_kev, broadening=3.0)
    constant = (
        ar_counts * _peak(calibration, n_channels, line_energy_kev("Ar", "Ka"))
        + scatter_counts * _peak(calibration, n_channels, incident_energy_kev)
        + 2.0 * scatter_counts * compton
        + background * (energies < incident_energy_kev)
    )
    amplitudes = np.stack([m[rows, cols] for m in maps.values()], axis=1)  # (P, E)

    phase = np.linspace(0.0, 6.0 * np.pi, n_points)
    flux = 1.0 + i0_fluctuation * (0.7 * np.sin(phase) + 0.3 * rng.uniform(-1, 1, n_points))
    i0 = rng.poisson(i0_mean * flux).astype(np.float64)
    live_fraction = 1.0 - dead_time_fraction * rng.uniform(0.5, 1.5, (n_points, n_detectors))
    real_time = np.full((n_points, n_detectors), float(dwell_s))
    live_time = real_time * live_fraction

    spectra = np.empty((n_points, n_detectors, n_channels), dtype=dtype)
    block = max(1, (1 << 22) // (n_detectors * n_channels))
    for p0 in range(0, n_points, block):
        p1 = min(n_points, p0 + block)
        expected = amplitudes[p0:p1] @ profiles_array + constant  # (b, C)
        expected = expected[:, None, :] * (flux[p0:p1, None] * live_fraction[p0:p1])[:, :, None]
        spectra[p0:p1] = rng.poisson(expected)
    info = {
        "sample": "synthetic",
        "scan_kind": kind,
        "step_um": float(step_um),
        "dwell_s": float(dwell_s),
        "incident_energy_kev": float(incident_energy_kev),
        "shape": list(shape),
        "elements": list(maps),
        "seed": int(seed),
    }
    info.update(metadata or {})
    return RawXRFScan(
        spectra=spectra,
        x_um=x,
        y_um=y,
        i0=i0,
        live_time_s=live_time,
        real_time_s=real_time,
        time_s=np.arange(n_points) * float(dwell_s),
        line_index=line_index,
        calibration=calibration,
        metadata=info,
    )

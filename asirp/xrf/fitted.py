"""Fitted element maps: PyMca's fast linear fit of every spectrum with a PyMca ``.cfg``.

Where an ROI sum adds everything in a channel window (overlapping lines, the continuum, pile-up),
a fit separates them: PyMca's ``FastXRFLinearFit`` (``PyMca5.PyMcaPhysics.xrf``) builds the
spectrum model of the configuration's elements once (peak shapes, line ratios, escape and sum
peaks, scatter) and solves one linear least-squares problem per spectrum, after subtracting a
SNIP background from each. :func:`fitted_counts` returns the fitted **peak-group area** of one
element per point and detector element (counts in all lines of the group the configuration
fits: ``Cu K`` is K-alpha plus K-beta; ``Fe Ka`` alone when the configuration splits the K
lines), which :func:`asirp.xrf.maps.build_map` then corrects for dead time, sums and normalises
like ROI counts.

How the configuration is used:

- **Energy calibration**: the scan's own (recorded with these spectra) replaces the ``.cfg``'s
  ``[detector] zero`` and ``gain``, unless the file sets ``ignoreinputcalibration = 1`` (PyMca's
  switch for "trust the configuration, not the data"). The fit range ``[fit] xmin..xmax`` is
  kept in energy: converted from the ``.cfg``'s calibration to the scan's channels.
- **Background**: the fast fit supports only SNIP; a configuration with PyMca's older strip
  background gets SNIP with its ``snipwidth`` (said in the fit's ``notes``).
- **Weights**: a configuration that weights the fit (``fitweight = 1``) gets PyMca's average
  Poisson weight from the sum spectrum (``weight=1``), not one weight per spectrum (one
  least-squares solution per spectrum instead of one for all: PyMca calls it "slow").
- Concentrations are not computed (areas only), so no time or flux settings matter.

PyMca's log messages, warnings and prints are kept out of the caller's stdout and warnings while
it runs; any failure inside it becomes one ``ValueError`` naming the configuration.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asirp.io import InputFileError, check_declared_size
from asirp.xrf.lines import EnergyCalibration
from asirp.xrf.raw_model import RawXRFScan
from asirp.xrf.spectra import read_pymca_config

_FAMILIES = {"k": "K", "l": "L", "m": "M"}


def read_fit_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a PyMca fit configuration (PyMca's ``ConfigDict``, :func:`read_pymca_config`).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.cfg`` file.

    Returns
    -------
    dict
        The configuration (sections as nested dicts, values as PyMca parses them).

    Raises
    ------
    asirp.io.InputFileError
        For a missing, oversized or unparsable file, or one without ``[peaks]``, ``[fit]`` and
        ``[detector]`` (not a fit configuration).
    """
    config = read_pymca_config(path)
    missing = [s for s in ("peaks", "fit", "detector") if not isinstance(config.get(s), dict)]
    if missing:
        raise InputFileError(
            f"{path} is not a PyMca fit configuration: no "
            f"{', '.join(f'[{s}]' for s in missing)} section"
        )
    return config


def _families(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [str(item).strip() for item in items if str(item).strip()]


def fit_group(config: dict[str, Any], element: str, line: str, source: str = "") -> str:
    """The PyMca peak group that holds an element's line, e.g. ``"Cu K"`` or ``"Fe Ka"``.

    Parameters
    ----------
    config : dict
        A configuration from :func:`read_fit_config`.
    element, line : str
        Chemical symbol and line name (``"Ka"``, ``"La"``, ``"Ma1"``, ...).
    source : str
        The configuration's file name, for messages.

    Returns
    -------
    str
        ``"<element> <family>"`` as PyMca labels its fitted areas.

    Raises
    ------
    ValueError
        When the configuration does not fit the element, or not the family of the line.
    """
    peaks = config.get("peaks", {})
    where = f"fit configuration {source}".strip()
    symbol = element.strip()
    if symbol not in peaks:
        fitted = ", ".join(f"{k} ({'/'.join(_families(v))})" for k, v in peaks.items())
        raise ValueError(
            f"{where} does not include {symbol} (its [peaks] fits {fitted or 'nothing'}); add "
            f"'{symbol} = {line.strip()[0].upper()}' to [peaks] or map {symbol} without a fit "
            "configuration"
        )
    families = _families(peaks[symbol])
    name = line.strip()
    family = _FAMILIES.get(name[:1].lower(), name[:1])
    # Most specific first: "Ka" for Ka/Ka1/Ka2, then the whole shell; L lines: the shell, then
    # the subshell of the strongest line (L3 for La and Lb, L2 for Lg1).
    candidates = [name[:2].capitalize(), family]
    if family == "L":
        candidates.append("L2" if name.lower().startswith("lg") else "L3")
    for candidate in candidates:
        if candidate in families:
            return f"{symbol} {candidate}"
    raise ValueError(
        f"{where} fits {symbol} {'/'.join(families)} lines, not its {name} line; add "
        f"{family} to '{symbol} = ...' in [peaks]"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep PyMca's prints, warnings and log records from the caller's streams."""
    logger = logging.getLogger("PyMca5")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            np.errstate(all="ignore"),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class FittedCounts:
    """Fitted peak-group areas of one element.

    Attributes
    ----------
    counts : numpy.ndarray
        ``(n_points, n_selected_detectors)`` float64, counts (PyMca's areas; a few can be
        slightly negative where a refit left them so).
    group : str
        PyMca's label of the group (``"Cu K"``).
    notes : tuple of str
        What was changed in the configuration to run the fast fit.
    info : dict
        JSON-serialisable description for map metadata.
    """

    counts: np.ndarray
    group: str
    notes: tuple[str, ...]
    info: dict[str, Any]


def _configure(
    config: dict[str, Any], calibration: EnergyCalibration, n_channels: int, source: str
) -> tuple[dict[str, Any], list[str], tuple[int, int]]:
    """A copy of the configuration set up for the fast fit of a scan's spectra."""
    config = copy.deepcopy(config)
    notes: list[str] = []
    detector, fit = config["detector"], config["fit"]
    try:
        zero, gain = float(detector["zero"]), float(detector["gain"])
        own = EnergyCalibration(zero, gain)
        xmin, xmax = float(fit["xmin"]), float(fit["xmax"])
    except (KeyError, TypeError, ValueError) as error:
        raise InputFileError(
            f"fit configuration {source}: [detector] zero/gain or [fit] xmin/xmax missing or "
            f"invalid ({type(error).__name__}: {error})"
        ) from error
    use_scan = not int(detector.get("ignoreinputcalibration", 0) or 0)
    if use_scan:
        if calibration.quadratic_kev != 0.0:
            raise ValueError(
                "fitted maps need a linear energy calibration; the scan's has a quadratic term "
                f"({calibration.quadratic_kev} keV/channel²): set ignoreinputcalibration = 1 in "
                f"{source} to use its own"
            )
        detector["zero"] = calibration.offset_kev
        detector["gain"] = calibration.gain_kev_per_channel
        fit_calibration = calibration
    else:
        fit_calibration = own
    # The fit range is kept in energy across the change of calibration.
    low = fit_calibration.channel(own.energy_kev(xmin))
    high = fit_calibration.channel(own.energy_kev(xmax))
    first, last = max(0, int(np.ceil(low))), min(n_channels - 1, int(np.floor(high)))
    if last - first < 10:
        raise ValueError(
            f"the fit range of {source} ({own.energy_kev(xmin):.2f}..{own.energy_kev(xmax):.2f} "
            f"keV) holds {max(last - first + 1, 0)} of the scan's channels; check [fit] xmin/xmax"
        )
    fit["xmin"], fit["xmax"] = first, last
    if int(fit.get("stripflag", 0) or 0) and int(fit.get("stripalgorithm", 0) or 0) != 1:
        fit["stripalgorithm"] = 1
        notes.append(
            f"PyMca's fast fit supports only the SNIP background: SNIP (width "
            f"{fit.get('snipwidth')} channels) used instead of the configuration's strip"
        )
    fit["strategyflag"] = 0
    return config, notes, (first, last)


def fitted_counts(
    scan: RawXRFScan,
    element: str,
    line: str,
    config_path: str | os.PathLike,
    *,
    detectors: Sequence[int] | None = None,
) -> FittedCounts:
    """Fit every spectrum of a scan with PyMca and return one element's peak-group areas.

    Parameters
    ----------
    scan : RawXRFScan
        The scan (its spectra are fitted; channel numbers from ``scan.first_channel``).
    element, line : str
        The element and the line whose group is returned (see :func:`fit_group`).
    config_path : str or os.PathLike
        PyMca fit configuration (``.cfg``).
    detectors : sequence of int, optional
        Detector elements to fit (all by default).

    Returns
    -------
    FittedCounts

    Raises
    ------
    asirp.io.InputFileError
        For a missing or unreadable configuration.
    ValueError
        When the configuration does not fit the element, its fit range misses the scan's
        channels, or PyMca's fit fails.
    """
    source = Path(config_path).name
    config = read_fit_config(config_path)
    group = fit_group(config, element, line, source)
    chosen = list(range(scan.n_detectors)) if detectors is None else [int(d) for d in detectors]
    n_total = scan.first_channel + scan.n_channels
    config, notes, (first, last) = _configure(config, scan.calibration, n_total, source)
    # The fit works on float64 copies of chunks; the areas it returns are (groups, points, dets).
    check_declared_size(
        (len(chosen) * scan.n_points * 2, last - first + 1), np.float64, "the spectra to fit"
    )
    weight = 1 if int(config["fit"].get("fitweight", 0) or 0) else 0
    try:
        with _quiet():
            # Imported here (slow, and its import may warn): inside the quiet block.
            from PyMca5.PyMcaPhysics.xrf.FastXRFLinearFit import FastXRFLinearFit

            fit = FastXRFLinearFit()
            result = fit.fitMultipleSpectra(
                x=scan.channels.astype(np.float64),
                y=scan.spectra[:, chosen, :],
                configuration=config,
                weight=weight,
                refit=True,
                concentrations=False,
            )
            labels = list(result.labels("parameters"))
            areas = np.asarray(result["parameters"], dtype=np.float64)
    except Exception as error:
        raise ValueError(
            f"PyMca's fit with {source} failed: {type(error).__name__}: {error}"
        ) from error
    if group not in labels:
        energy_low = scan.calibration.energy_kev(first)
        energy_high = scan.calibration.energy_kev(last)
        raise ValueError(
            f"{source} includes {group}, but none of its lines lies in the fit range "
            f"{energy_low:.2f}..{energy_high:.2f} keV with this scan's calibration (fitted: "
            f"{', '.join(labels)})"
        )
    counts = areas[labels.index(group)]  # (P, D)
    info = {
        "config": str(Path(config_path)),
        "group": group,
        "fitted_parameters": labels,
        "fit_channels": [first, last],
        "weight": "average Poisson (sum spectrum)" if weight else "none",
        "notes": list(notes),
    }
    return FittedCounts(counts.reshape(scan.n_points, len(chosen)), group, tuple(notes), info)

"""The ``asirp xrf-map`` work: raw scan -> element map -> tools -> exports (-> restoration).

:func:`run_xrf_map` writes an output folder::

    OUT/map.h5           NeXus map (asirp.xrf.export layout), with /entry/restored and
                         /entry/process when restored
    OUT/map.txt          x_um, y_um, counts columns (measured cells)
    OUT/map.png          the map with colour bar and scale bar
    OUT/restored.txt     (with a restoration) the same for the restored map
    OUT/restored.png
    OUT/fluctuation.png  (with a restoration) std before/after and 3-D surfaces
    OUT/summary.json     settings, ROIs, map figures, restoration metrics, timings

Only the ROI channel slabs of the raw file are read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from asirp.beam_file import beam_from_json
from asirp.psf import beam_sigma_px, gaussian_psf
from asirp.restore import restore
from asirp.safe_files import (
    FileIdentity,
    OutputExistsError,
    ProtectedFileError,
    atomic_write,
    file_identity,
)
from asirp.xrf import tools
from asirp.xrf.config import XRFMapConfig
from asirp.xrf.export import (
    write_fluctuation_figure,
    write_map_nexus,
    write_map_png,
    write_map_text,
)
from asirp.xrf.formats import read_scan
from asirp.xrf.lines import ChannelROI, DetectorResolution, EnergyCalibration, line_energy_kev
from asirp.xrf.maps import XRFMap, build_map
from asirp.xrf.maps_settings import read_maps_override


def _rois(config: XRFMapConfig) -> tuple[ChannelROI | None, ChannelROI | None]:
    roi = ar_roi = None
    if config.channels is not None:
        first, last = config.channels
        if config.element is not None:
            energy = line_energy_kev(config.element, config.line)
            roi = ChannelROI(f"{config.element} {config.line}", first, last, energy)
        else:
            roi = ChannelROI(f"channels {first}-{last}", first, last)
    elif config.element is None:
        raise ValueError("give an element (--element or [map] element) or a channel range")
    if config.ar_channels is not None:
        first, last = config.ar_channels
        ar_roi = ChannelROI("Ar Ka", first, last, line_energy_kev("Ar", "Ka"))
    return roi, ar_roi


def make_map(config: XRFMapConfig, raw: str | os.PathLike) -> XRFMap:
    """Build the element map of ``config`` from a raw scan file and apply the map tools.

    Parameters
    ----------
    config : XRFMapConfig
        Settings (``config.companion``: an APS fly scan's MDA file, when not found by name).
    raw : str or os.PathLike
        The raw scan, of any format :func:`asirp.xrf.formats.detect_format` knows: the
        project's raw HDF5 (only the ROI channel slabs are read), an APS MDA step scan, an APS
        fly scan (HDF5 spectra with its companion MDA file) or a Diamond Xspress3 NeXus file
        (read whole).

    Returns
    -------
    XRFMap
        Its ``metadata["cautions"]`` holds what the reader assumed (no I0, units, ...).
    """
    roi, ar_roi = _rois(config)
    source: Any = raw
    calibration = (
        None if config.calibration_kev is None else EnergyCalibration(*config.calibration_kev)
    )
    override = None
    if config.maps_override is not None:
        if calibration is not None:
            raise ValueError("give calibration_kev or maps_override, not both")
        override = read_maps_override(config.maps_override)
        calibration = override.calibration
    if config.companion is not None or calibration is not None:
        companion = None if config.companion is None else config.raw_path(config.companion)
        source = read_scan(raw, companion=companion, calibration=calibration)
    xrf_map = build_map(
        source,
        config.element,
        line=config.line,
        roi=roi,
        normalize_by=config.normalize,
        dead_time=config.dead_time,
        detectors=config.detectors,
        width_kev=config.width_kev,
        resolution=DetectorResolution(config.noise_kev, config.fano),
        ar_roi=ar_roi,
        ar_smooth_points=config.ar_smooth_points,
        step_um=config.step_um,
        background=config.background,
        fit_config=config.fit_config,
    )
    if override is not None:  # where the calibration came from, for the map file's record
        metadata = {**xrf_map.metadata, "maps_override": override.provenance()}
        xrf_map = dataclasses.replace(xrf_map, metadata=metadata)
    if config.threshold_low is not None or config.threshold_high is not None:
        xrf_map = tools.threshold(
            xrf_map, config.threshold_low, config.threshold_high, mode=config.threshold_mode
        )
    if config.flip is not None:
        xrf_map = tools.flip(xrf_map, config.flip)
    if config.rotate:
        xrf_map = tools.rotate(xrf_map, config.rotate)
    if config.crop_x_um is not None or config.crop_y_um is not None:
        xrf_map = tools.crop(xrf_map, x_um=config.crop_x_um, y_um=config.crop_y_um)
    return xrf_map


def with_measured_beam(config: XRFMapConfig) -> tuple[XRFMapConfig, dict[str, Any] | None]:
    """The settings with ``beam_file``'s FWHM as ``beam_fwhm_um``, and the file's provenance.

    The beam file (``asirp psf-from-edge``) is read once; settings without one come back as
    they are, with ``None``.
    """
    if config.beam_file is None:
        return config, None
    if config.beam_fwhm_um is not None or config.psf_sigma_px is not None:
        raise ValueError("give one of beam_fwhm_um, beam_file and psf_sigma_px, not several")
    fwhm, source = beam_from_json(config.beam_file)
    return dataclasses.replace(config, beam_fwhm_um=fwhm, beam_file=None), source


def psf_arguments(config: XRFMapConfig, xrf_map: XRFMap) -> dict[str, Any]:
    """The PSF keywords for :func:`asirp.restore` from the settings and the map's steps."""
    config, _ = with_measured_beam(config)
    beam = config.beam_fwhm_um
    if beam is None and config.psf_sigma_px is None:
        beam = xrf_map.metadata.get("beam_fwhm_um")
        if beam is None:
            raise ValueError(
                "restoration needs the beam size: give --beam-fwhm-um (or beam_fwhm_um / "
                "psf_sigma_px in [restore]); the scan metadata has none"
            )
    if config.psf_size_px is None:
        if config.psf_sigma_px is not None:
            return {"psf_sigma_px": config.psf_sigma_px}
        return {"beam_fwhm_um": beam, "pixel_um": xrf_map.pixel_um}
    if config.psf_sigma_px is not None:
        sigma = config.psf_sigma_px
        pair = (sigma, sigma) if np.ndim(sigma) == 0 else tuple(sigma)
    else:
        pair = beam_sigma_px(beam, xrf_map.pixel_um)
    size = min(config.psf_size_px, *(2 * ((n - 1) // 2) + 1 for n in xrf_map.shape))
    radius = (size - 1) // 2
    truncate = max(radius, 1) / min(pair)
    return {"psf": gaussian_psf(pair, truncate=truncate, max_shape=(size, size))}


OUTPUT_FILES = ("map.h5", "map.txt", "map.png", "restored.txt", "restored.png", "fluctuation.png")
"""Files :func:`run_xrf_map` writes (the last three only with a restoration)."""

SUMMARY_FILE = "summary.json"


def _check_outputs(
    folder: Path, names: list[str], raw: FileIdentity | None, *, overwrite: bool
) -> None:
    """Refuse, before any work, to write onto the raw scan or (without overwrite) old files."""
    existing = []
    for name in names:
        identity = file_identity(folder / name)
        if identity is None:
            continue
        if identity == raw:
            raise ProtectedFileError(
                f"{folder / name} is the raw scan being mapped; it is never replaced: choose "
                "another output folder"
            )
        existing.append(name)
    if existing and not overwrite:
        raise OutputExistsError(
            f"{folder} already holds {', '.join(existing)} (from an earlier run?); choose "
            "another output folder, or use --overwrite (overwrite=True) to replace them"
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_xrf_map(
    config: XRFMapConfig,
    raw: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Make, export and (optionally) restore an element map; write the output folder.

    Parameters
    ----------
    config : XRFMapConfig
        Settings (see :mod:`asirp.xrf.config`).
    raw : str or os.PathLike, optional
        Raw scan file (default: the config's ``raw``).
    output : str or os.PathLike, optional
        Output folder (default: the config's ``output``).
    overwrite : bool
        Replace files of an earlier run in the folder (default: refuse, before any work, if
        one of the files to write exists). The raw scan is never replaced, even so: a folder
        where an output would be the raw file is refused.

    Returns
    -------
    dict
        The summary also written to ``summary.json``.

    Raises
    ------
    asirp.safe_files.OutputExistsError
        If an output file exists and ``overwrite`` is false.
    asirp.safe_files.ProtectedFileError
        If an output file would be the raw scan.
    """
    raw_path = config.raw_path(raw)
    if output is None and config.output is None:
        raise ValueError("no output folder: give -o OUT or output in the config")
    folder = Path(output if output is not None else str(config.output))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output {folder} exists and is not a folder")
    names = list(OUTPUT_FILES if config.restore_method is not None else OUTPUT_FILES[:3])
    names.append(SUMMARY_FILE)
    raw_identity = file_identity(raw_path)
    _check_outputs(folder, names, raw_identity, overwrite=overwrite)
    write = {"overwrite": overwrite, "protect": [raw_identity]}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    xrf_map = make_map(config, raw_path)
    timings["map_s"] = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)

    restoration = None
    if config.restore_method is not None:
        params = dict(config.restore_params)
        if config.iterations is not None:
            params["iterations"] = config.iterations
        measured, beam_source = with_measured_beam(config)
        psf = psf_arguments(measured, xrf_map)
        start = time.perf_counter()
        restoration = restore(
            xrf_map.data, config.restore_method, device=config.device, **psf, **params
        )
        if beam_source is not None:  # the measured beam goes into the provenance
            restoration.psf_description["beam_source"] = beam_source
        timings["restore_s"] = time.perf_counter() - start

    start = time.perf_counter()
    files = [
        write_map_nexus(
            folder / "map.h5", xrf_map, restoration=restoration, source=raw_path, **write
        ),
        write_map_text(folder / "map.txt", xrf_map, **write),
        write_map_png(folder / "map.png", xrf_map, cmap=config.colormap, **write),
    ]
    fluctuation = None
    if restoration is not None:
        title = f"{xrf_map.label} restored ({restoration.method})"
        files += [
            write_map_text(folder / "restored.txt", xrf_map, data=restoration.image, **write),
            write_map_png(
                folder / "restored.png",
                xrf_map,
                data=np.where(xrf_map.mask, restoration.image, np.nan)
                if restoration.image.shape == xrf_map.shape
                else restoration.image,
                cmap=config.colormap,
                title=title,
                **write,
            ),
        ]
        if restoration.image.shape == xrf_map.shape:
            fluctuation = write_fluctuation_figure(
                folder / "fluctuation.png",
                xrf_map,
                restoration.image,
                cmap=config.colormap,
                **write,
            )
            files.append(folder / "fluctuation.png")
    timings["export_s"] = time.perf_counter() - start
    values = xrf_map.data[xrf_map.mask]
    summary: dict[str, Any] = {
        "raw": str(raw_path),
        "output": str(folder),
        "map": {
            "label": xrf_map.label,
            "shape": list(xrf_map.shape),
            "pixel_um": list(xrf_map.pixel_um),
            "extent_um": list(xrf_map.extent_um),
            "units": xrf_map.units,
            "scan_kind": xrf_map.scan_kind,
            "measured_cells": int(xrf_map.mask.sum()),
            "mean": float(values.mean()) if values.size else None,
            "std": float(values.std()) if values.size else None,
            "normalization": xrf_map.normalization,
            "reference_mean": _finite(xrf_map.reference_mean),
            "dead_time_corrected": xrf_map.dead_time_corrected,
            "detectors": list(xrf_map.detectors),
            "rois": [roi.as_dict() for roi in xrf_map.rois],
            "history": list(xrf_map.history),
            "background": xrf_map.metadata.get("background"),
            "fit": xrf_map.metadata.get("fit"),
            "detector_check": xrf_map.metadata.get("detector_check"),
        },
        "cautions": list(xrf_map.metadata.get("cautions", [])),
        "restoration": None
        if restoration is None
        else {
            "method": restoration.method,
            "params": restoration.params,
            "psf": restoration.psf_description,
            "metrics": restoration.metrics,
            "fluctuation": fluctuation,
        },
        "timings": timings,
        "files": [Path(f).name for f in files],
    }
    with atomic_write(folder / SUMMARY_FILE, **write) as output:
        output.file.write((json.dumps(summary, indent=2, default=str) + "\n").encode())
    return summary

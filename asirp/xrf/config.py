"""Settings of ``asirp xrf-map`` as a TOML file (read with :mod:`tomllib`), validated.

Every key is optional; command-line flags override the file. A complete example is
``examples/xrf-map.toml``::

    data_folder = "/data/visit-2026-05/xrf"  # relative raw files are found here
    raw = "scan_0042.h5"                      # raw scan (the command's RAW argument overrides)
    companion = "scan_0042.mda"               # APS fly scans: the MDA file with positions and
                                              # I0 (default: found by name next to the spectra)
    output = "out/scan_0042_cu"               # output folder (-o overrides)

A relative ``data_folder`` or ``output`` in the file is relative to the file's folder. A
relative raw file (``raw`` or the command's RAW, and ``companion``) is used as given when it
exists, else looked up in ``data_folder``. The raw scan may be of any format
:mod:`asirp.xrf.formats` reads (the project's raw HDF5, APS MDA, APS fly scans, Diamond
Xspress3 NeXus).

    [map]
    element = "Cu"              # chemical symbol
    line = "Ka"                 # Ka, Kb, La, Lb, Ma1, ... (asirp.xrf.lines.LINE_NAMES)
    channels = [1574, 1642]     # explicit inclusive channel range instead of the energy window
    width_kev = 0.35            # full ROI width (default: ±1 FWHM of the detector resolution)
    normalize = "i0"            # "i0", "ar" or "none"
    ar_channels = [566, 617]    # explicit Ar K-alpha channel range for normalize = "ar"
    ar_smooth_points = 1        # moving mean of the Ar counts over this many points
    dead_time = true            # multiply by real/live time
    detectors = [0, 1, 2, 3]    # detector elements to sum (default: all)
    step_um = 10.0              # map cell size, µm (one value or [y, x]; default: from positions)
    background = "linear"       # continuum under the ROI: "linear" (net counts from side
                                # windows, the default), "snip" (SNIP on the summed spectrum)
                                # or "none" (plain channel sums); asirp.xrf.background
    fit_config = "CaFeCu.cfg"   # PyMca fit configuration: fitted peak areas instead of ROI
                                # counts (asirp.xrf.fitted); relative to this file's folder

    [detector]                  # resolution used for the default ROI widths
    noise_kev = 0.1             # electronic noise, FWHM keV
    fano = 0.114
    calibration_kev = [0.05, 0.0094]  # energy = offset + gain * channel, keV: replaces the
                                # file's calibration (needed for files without one); or
    maps_override = "maps_fit_parameters_override.txt"  # ... the calibration MAPS fitted

    [tools]                     # applied in this order: threshold, flip, rotate, crop
    threshold_low = 0.0         # counts
    threshold_high = 1e6
    threshold_mode = "clip"     # "clip" (values to the bounds) or "mask" (mark unmeasured)
    flip = "none"               # "x", "y" or "none"
    rotate = 0                  # 0, 90, 180 or 270 degrees counter-clockwise
    crop_x_um = [0.0, 1000.0]   # inclusive ranges of cell centres, µm
    crop_y_um = [0.0, 800.0]

    [plot]
    colormap = "viridis"        # any matplotlib colour map

    [restore]                   # omit the table (or method = "none") for no restoration
    method = "richardson_lucy"  # a method name or "auto"
    beam_fwhm_um = 50.0         # beam FWHM, µm (one value or [vertical, horizontal]); or
    beam_file = "beam.json"     # ... the beam measured by ``asirp psf-from-edge`` (relative to
                                # this file's folder; recorded in the provenance); or
    psf_sigma_px = 2.1          # ... a Gaussian PSF sigma in pixels (one value or [rows, cols])
    psf_size_px = 21            # odd PSF size in pixels (default: 4 sigma each side)
    iterations = 10
    device = "auto"             # "auto", "cpu" or "cuda"
    [restore.params]            # any other method parameter (``asirp methods``)
    stop = "fixed"

Unknown tables or keys, wrong types and impossible values raise ``ValueError`` (or
``TypeError``) naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asirp.registry import available_methods
from asirp.xrf.background import DEFAULT_BACKGROUND, check_background
from asirp.xrf.lines import LINE_NAMES

SECTIONS: dict[str, dict[str, str]] = {
    "": {"data_folder": "data_folder", "raw": "raw", "companion": "companion", "output": "output"},
    "map": {
        "element": "element",
        "line": "line",
        "channels": "channels",
        "width_kev": "width_kev",
        "normalize": "normalize",
        "ar_channels": "ar_channels",
        "ar_smooth_points": "ar_smooth_points",
        "dead_time": "dead_time",
        "detectors": "detectors",
        "step_um": "step_um",
        "background": "background",
        "fit_config": "fit_config",
    },
    "detector": {
        "noise_kev": "noise_kev",
        "fano": "fano",
        "calibration_kev": "calibration_kev",
        "maps_override": "maps_override",
    },
    "tools": {
        "threshold_low": "threshold_low",
        "threshold_high": "threshold_high",
        "threshold_mode": "threshold_mode",
        "flip": "flip",
        "rotate": "rotate",
        "crop_x_um": "crop_x_um",
        "crop_y_um": "crop_y_um",
    },
    "plot": {"colormap": "colormap"},
    "restore": {
        "method": "restore_method",
        "beam_fwhm_um": "beam_fwhm_um",
        "beam_file": "beam_file",
        "psf_sigma_px": "psf_sigma_px",
        "psf_size_px": "psf_size_px",
        "iterations": "iterations",
        "device": "device",
        "params": "restore_params",
    },
}
"""TOML table -> key -> :class:`XRFMapConfig` field (``""`` is the top level)."""


def _number(value: Any, key: str, *, positive: bool = False, minimum: float | None = None):
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{key} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value!r}")
    return float(value)


def _integer(value: Any, key: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value!r}")
    return int(value)


def _pair(value: Any, key: str, kind: str) -> tuple:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{key} must be a pair [low, high], got {value!r}")
    if kind == "int":
        low, high = (_integer(v, key, 0) for v in value)
    else:
        low, high = (_number(v, key) for v in value)
    if low > high:
        raise ValueError(f"{key} must have low <= high, got {list(value)}")
    return (low, high)


def _one_or_two(value: Any, key: str) -> float | tuple[float, float]:
    if isinstance(value, list | tuple):
        if len(value) not in (1, 2):
            raise ValueError(f"{key} must be one value or two, got {value!r}")
        values = tuple(_number(v, key, positive=True) for v in value)
        return values[0] if len(values) == 1 else (values[0], values[1])
    return _number(value, key, positive=True)


@dataclass(frozen=True)
class XRFMapConfig:
    """Settings of an element map and its restoration (keys in the module notes).

    The fields are the TOML keys (``[restore] method`` is ``restore_method``, ``[restore.params]``
    is ``restore_params``); ``None`` means "not set" (the default applies).
    """

    data_folder: Path | None = None
    raw: str | None = None
    companion: str | None = None
    output: str | None = None
    element: str | None = None
    line: str = "Ka"
    channels: tuple[int, int] | None = None
    width_kev: float | None = None
    normalize: str | None = None
    ar_channels: tuple[int, int] | None = None
    ar_smooth_points: int = 1
    dead_time: bool = False
    detectors: tuple[int, ...] | None = None
    step_um: float | tuple[float, float] | None = None
    background: str = DEFAULT_BACKGROUND
    fit_config: Path | None = None
    noise_kev: float = 0.1
    fano: float = 0.114
    calibration_kev: tuple[float, float] | None = None
    maps_override: str | None = None
    threshold_low: float | None = None
    threshold_high: float | None = None
    threshold_mode: str = "clip"
    flip: str | None = None
    rotate: int = 0
    crop_x_um: tuple[float, float] | None = None
    crop_y_um: tuple[float, float] | None = None
    colormap: str = "viridis"
    restore_method: str | None = None
    beam_fwhm_um: float | tuple[float, float] | None = None
    beam_file: str | None = None
    psf_sigma_px: float | tuple[float, float] | None = None
    psf_size_px: int | None = None
    iterations: int | None = None
    device: str = "auto"
    restore_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.data_folder is not None:
            if not isinstance(self.data_folder, str | os.PathLike):
                raise TypeError(f"data_folder must be a path, got {self.data_folder!r}")
            set_(self, "data_folder", Path(self.data_folder))
        for key in ("raw", "companion", "output", "element"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise TypeError(f"{key} must be a non-empty string, got {value!r}")
        if not isinstance(self.line, str) or self.line.lower() not in {
            n.lower() for n in LINE_NAMES
        }:
            raise ValueError(f"line must be one of {', '.join(LINE_NAMES)}, got {self.line!r}")
        for key in ("channels", "ar_channels"):
            if getattr(self, key) is not None:
                set_(self, key, _pair(getattr(self, key), key, "int"))
        if self.width_kev is not None:
            set_(self, "width_kev", _number(self.width_kev, "width_kev", positive=True))
        normalize = self.normalize
        if isinstance(normalize, str) and normalize.lower() == "none":
            normalize = None
        if normalize not in (None, "i0", "ar"):
            raise ValueError(f"normalize must be 'i0', 'ar' or 'none', got {self.normalize!r}")
        set_(self, "normalize", normalize)
        set_(self, "ar_smooth_points", _integer(self.ar_smooth_points, "ar_smooth_points", 1))
        if not isinstance(self.dead_time, bool):
            raise TypeError(f"dead_time must be true or false, got {self.dead_time!r}")
        if self.detectors is not None:
            if not isinstance(self.detectors, list | tuple) or not self.detectors:
                raise ValueError(f"detectors must be a list of indices, got {self.detectors!r}")
            set_(self, "detectors", tuple(_integer(d, "detectors", 0) for d in self.detectors))
        if self.step_um is not None:
            set_(self, "step_um", _one_or_two(self.step_um, "step_um"))
        set_(self, "background", check_background(self.background))
        fit_config = self.fit_config
        if fit_config is not None:
            if not isinstance(fit_config, str | os.PathLike) or not str(fit_config).strip():
                raise TypeError(f"fit_config must be a path to a PyMca .cfg, got {fit_config!r}")
            set_(self, "fit_config", Path(fit_config))
        set_(self, "noise_kev", _number(self.noise_kev, "noise_kev", minimum=0.0))
        set_(self, "fano", _number(self.fano, "fano", minimum=0.0))
        if self.calibration_kev is not None:
            value = self.calibration_kev
            if not isinstance(value, list | tuple) or len(value) != 2:
                raise ValueError(f"calibration_kev must be [offset, gain], got {value!r}")
            offset, gain = (_number(v, "calibration_kev") for v in value)
            if not gain > 0:
                raise ValueError(f"calibration_kev gain must be > 0 keV/channel, got {gain}")
            set_(self, "calibration_kev", (offset, gain))
        if self.maps_override is not None and (
            not isinstance(self.maps_override, str) or not self.maps_override.strip()
        ):
            raise TypeError(f"maps_override must be a path, got {self.maps_override!r}")
        if self.beam_file is not None and (
            not isinstance(self.beam_file, str) or not self.beam_file.strip()
        ):
            raise TypeError(f"beam_file must be a path, got {self.beam_file!r}")
        for key in ("threshold_low", "threshold_high"):
            if getattr(self, key) is not None:
                set_(self, key, _number(getattr(self, key), key))
        if (
            self.threshold_low is not None
            and self.threshold_high is not None
            and self.threshold_low > self.threshold_high
        ):
            raise ValueError("threshold_low must not exceed threshold_high")
        if self.threshold_mode not in ("clip", "mask"):
            raise ValueError(
                f"threshold_mode must be 'clip' or 'mask', got {self.threshold_mode!r}"
            )
        flip = None if self.flip in (None, "none") else self.flip
        if flip not in (None, "x", "y"):
            raise ValueError(f"flip must be 'x', 'y' or 'none', got {self.flip!r}")
        set_(self, "flip", flip)
        if _integer(self.rotate, "rotate") not in (0, 90, 180, 270):
            raise ValueError(f"rotate must be 0, 90, 180 or 270 degrees, got {self.rotate!r}")
        for key in ("crop_x_um", "crop_y_um"):
            if getattr(self, key) is not None:
                set_(self, key, _pair(getattr(self, key), key, "float"))
        if not isinstance(self.colormap, str):
            raise TypeError(f"colormap must be a string, got {self.colormap!r}")
        import matplotlib

        if self.colormap not in matplotlib.colormaps:
            raise ValueError(
                f"colormap {self.colormap!r} is not a matplotlib colour map (e.g. 'viridis')"
            )
        method = self.restore_method
        if method is not None:
            if not isinstance(method, str) or not method.strip():
                raise TypeError(f"restore method must be a string, got {method!r}")
            if method.lower() == "none":
                method = None
            elif method != "auto" and method not in available_methods():
                raise ValueError(
                    f"unknown restore method {method!r}; use 'auto' or one of "
                    f"{', '.join(available_methods())}"
                )
        set_(self, "restore_method", method)
        if self.beam_fwhm_um is not None and self.psf_sigma_px is not None:
            raise ValueError("give beam_fwhm_um or psf_sigma_px, not both")
        for key in ("beam_fwhm_um", "psf_sigma_px"):
            if getattr(self, key) is not None:
                set_(self, key, _one_or_two(getattr(self, key), key))
        if self.psf_size_px is not None:
            size = _integer(self.psf_size_px, "psf_size_px", 1)
            if size % 2 == 0:
                raise ValueError(f"psf_size_px must be odd, got {size}")
        if self.iterations is not None:
            set_(self, "iterations", _integer(self.iterations, "iterations", 1))
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if not isinstance(self.restore_params, Mapping):
            raise TypeError(f"[restore.params] must be a table, got {self.restore_params!r}")
        set_(self, "restore_params", dict(self.restore_params))

    def override(self, **changes: Any) -> XRFMapConfig:
        """A validated copy with some settings changed (command-line flags over the file).

        ``None`` values are ignored; a PSF description replaces the other one (giving
        ``beam_fwhm_um`` clears ``psf_sigma_px`` and the reverse); ``restore_params`` are
        merged into the file's.
        """
        given = {key: value for key, value in changes.items() if value is not None}
        unknown = sorted(set(given) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
        if "beam_fwhm_um" in given:
            given.setdefault("psf_sigma_px", None)
        elif "psf_sigma_px" in given:
            given["beam_fwhm_um"] = None
        if "restore_params" in given:
            given["restore_params"] = {**self.restore_params, **given["restore_params"]}
        return dataclasses.replace(self, **given)

    def raw_path(self, raw: str | os.PathLike | None = None) -> Path:
        """The raw scan file: ``raw`` (or the ``raw`` key), found as given, else in data_folder.

        Raises
        ------
        ValueError
            When no raw file is named.
        """
        name = raw if raw is not None else self.raw
        if name is None:
            raise ValueError("no raw scan given: name RAW on the command line or raw in the config")
        path = Path(name)
        if path.is_absolute() or self.data_folder is None or path.exists():
            return path
        return self.data_folder / path


def read_config(path: str | os.PathLike) -> XRFMapConfig:
    """Read and validate a TOML settings file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.toml`` file.

    Returns
    -------
    XRFMapConfig

    Raises
    ------
    ValueError
        For a missing file, invalid TOML, unknown tables or keys, or invalid values (the
        message names the file and the key).
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise ValueError(f"config file not found: {file_path}")
    try:
        with file_path.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config {file_path} is not valid TOML: {error}") from None
    settings: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            if key not in SECTIONS or not key:
                known = ", ".join(f"[{s}]" for s in SECTIONS if s)
                raise ValueError(f"config {file_path}: unknown table [{key}] (known: {known})")
            table = SECTIONS[key]
            for inner, inner_value in value.items():
                if inner not in table:
                    raise ValueError(
                        f"config {file_path}: unknown key {inner!r} in [{key}] (known: "
                        f"{', '.join(table)})"
                    )
                settings[table[inner]] = inner_value
        elif key in SECTIONS[""]:
            settings[key] = value
        else:
            raise ValueError(
                f"config {file_path}: unknown top-level key {key!r} (known: "
                f"{', '.join(SECTIONS[''])}, and tables {', '.join(s for s in SECTIONS if s)})"
            )
    for key in ("data_folder", "output", "fit_config", "beam_file", "maps_override"):
        folder = settings.get(key)
        if isinstance(folder, str) and folder.strip() and not Path(folder).is_absolute():
            settings[key] = str(file_path.parent / folder)
    try:
        return XRFMapConfig(**settings)
    except (TypeError, ValueError) as error:
        raise type(error)(f"config {file_path}: {error}") from None

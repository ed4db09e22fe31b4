"""Exports of element maps: NeXus/HDF5, x-y-counts text columns, PNG, fluctuation view.

NeXus/HDF5 (:func:`write_map_nexus`, read back with :func:`read_map_nexus`); valid against
the NeXus base classes, opened by silx and PyMca as an image with axes in µm::

    /                               @default="entry", @creator="asirp", @creator_version, ...
    /entry                          NXentry; @default="map"; title
      map                           NXdata: signal="data", axes=["y", "x"], y_indices=0,
                                    x_indices=1
        data                        float32 (ny, nx)   the map; @units, @long_name
        x, y                        float64 (nx,), (ny,) cell centres, µm (units="um")
        mask                        uint8 (ny, nx)     1 where measured
      detector_maps                 NXdata (when kept): data float32 (D, ny, nx), detectors
                                    int (D,), x and y hard-linked; axes=[".", "y", "x"]
      mapping                       NXprocess, how the map was made (sequence_index=1); fields
                                    program, version, date, element, line, normalization ("i0",
                                    "ar" or "none"), reference_mean, dead_time_corrected,
                                    detectors (int (D,)), scan_kind, units, source
        rois                        NXnote, JSON list: name, first_channel, last_channel
                                    (inclusive), energy_kev (keV, null if unknown), role
                                    ("element" | "normalization")
        calibration                 NXnote, JSON: offset_kev, gain_kev_per_channel,
                                    quadratic_kev (null without a calibration)
        history                     NXnote, JSON list of the tools applied
        metadata                    NXnote, JSON: ``xrf_map.metadata`` (with any "cautions")
      restored                      NXdata (with a restoration): data float32, x, y (µm, of
                                    the restored grid)
      psf                           NXdata (with a restoration that has a PSF)
      process                       NXprocess (with a restoration, sequence_index=2): fields
                                    program, version, date, method, elapsed_s; JSON NXnotes
                                    parameters, psf, metrics, provenance (as
                                    :mod:`asirp.results_io` writes them)

Files of the earlier layout (an NXcollection ``/entry/definition`` with attributes) are still
read.

Text columns (:func:`write_map_text`): ``#`` comment lines (map, units, step), then one line
per cell ``x_um<TAB>y_um<TAB>counts``, row by row (y, then x increasing); unmeasured cells are
left out (or written as ``nan``). Origin, Excel and ``numpy.loadtxt`` read it as is.

PNG (:func:`write_map_png`): the map in µm with a colour bar and a scale bar (y up).

Intensity fluctuation (:func:`intensity_fluctuation`, :func:`write_fluctuation_figure`): the
standard deviation of the measured and the restored map over the measured cells, and a figure
with both maps and their 3-D surface plots.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from asirp import nexus
from asirp.io import InputFileError
from asirp.results_io import add_restoration, read_dataset
from asirp.safe_files import FileIdentity, atomic_write
from asirp.xrf.lines import ChannelROI, EnergyCalibration
from asirp.xrf.maps import XRFMap


def restored_axes(xrf_map: XRFMap, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres ``(x_um, y_um)`` of a restored image covering the map (any upscaling)."""
    ny, nx = xrf_map.shape
    dy, dx = xrf_map.pixel_um
    sy, sx = shape[0] / ny, shape[1] / nx
    x = xrf_map.x_um[0] - dx / 2 + (np.arange(shape[1]) + 0.5) * dx / sx
    y = xrf_map.y_um[0] - dy / 2 + (np.arange(shape[0]) + 0.5) * dy / sy
    return x, y


def write_map_nexus(
    path: str | os.PathLike,
    xrf_map: XRFMap,
    *,
    restoration: Any = None,
    source: str | os.PathLike | None = None,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike | FileIdentity | None] = (),
) -> Path:
    """Write a map (and optionally its restoration) as NeXus/HDF5 (layout in the module notes).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written to a temporary name, then moved into place).
    xrf_map : XRFMap
        The map.
    restoration : asirp.Restoration, optional
        A restoration of ``xrf_map.data``, stored in ``/entry/restored`` with its provenance.
    source : str or os.PathLike, optional
        The raw scan the map came from (recorded; never replaced).
    overwrite : bool
        Replace an existing file (default: refuse with
        :class:`asirp.safe_files.OutputExistsError`).
    protect : iterable
        Files never replaced, even with ``overwrite`` (paths or ``(st_dev, st_ino)``), e.g. the
        raw scan.

    Returns
    -------
    pathlib.Path
    """
    if not isinstance(xrf_map, XRFMap):
        raise TypeError(f"xrf_map must be an XRFMap, got {type(xrf_map).__name__}")
    guarded = [*protect, source]
    with (
        atomic_write(path, overwrite=overwrite, protect=guarded) as output,
        h5py.File(output.file, "w") as handle,
    ):
        entry = nexus.create_entry(handle, title=f"asirp µ-XRF map: {xrf_map.label}")
        x = nexus.Axis("x", xrf_map.x_um, nexus.UM, "x (µm)")
        y = nexus.Axis("y", xrf_map.y_um, nexus.UM, "y (µm)")
        nxdata = nexus.write_nxdata(
            entry, "map", xrf_map.data, [y, x], units=xrf_map.units, long_name=xrf_map.label
        )
        nexus.set_default(entry, "map")
        nxdata.create_dataset("mask", data=xrf_map.mask.astype(np.uint8))
        if xrf_map.detector_maps is not None:
            detectors = nexus.write_nxdata(
                entry,
                "detector_maps",
                xrf_map.detector_maps,
                [
                    None,
                    nexus.Axis("y", nxdata["y"], nexus.UM, "y (µm)"),
                    nexus.Axis("x", nxdata["x"], nexus.UM, "x (µm)"),
                ],
                units=xrf_map.units,
                long_name=f"{xrf_map.label} per detector element",
            )
            detectors["detectors"] = np.asarray(xrf_map.detectors, dtype=np.int64)
        _write_mapping(entry, xrf_map, source)
        if restoration is not None:
            # the restoration's input is the map itself, stored above in the same file: a
            # replay (asirp replay) finds it beside the result, whatever the folder is called
            _write_restoration(entry, xrf_map, restoration, f"{Path(path).name}::/entry/map/data")
    return Path(path)


def _write_mapping(entry: h5py.Group, xrf_map: XRFMap, source: str | os.PathLike | None) -> None:
    """The NXprocess ``mapping``: how the map was made, as fields and JSON notes."""
    rois = [
        {**roi.as_dict(), "role": "element" if index == 0 else "normalization"}
        for index, roi in enumerate(xrf_map.rois)
    ]
    calibration = xrf_map.calibration.as_dict() if xrf_map.calibration is not None else None
    nexus.write_process(
        entry,
        "mapping",
        fields={
            "element": xrf_map.element,
            "line": xrf_map.line,
            "normalization": xrf_map.normalization or "none",
            "reference_mean": float(xrf_map.reference_mean),
            "dead_time_corrected": bool(xrf_map.dead_time_corrected),
            "detectors": np.asarray(xrf_map.detectors, dtype=np.int64),
            "scan_kind": xrf_map.scan_kind,
            "units": xrf_map.units,
            "source": os.fspath(source) if source is not None else "",
        },
        notes={
            "rois": rois,
            "calibration": calibration,
            "history": list(xrf_map.history),
            "metadata": xrf_map.metadata,
        },
        descriptions={
            "rois": "channel ROIs summed: the element's, then the normalisation's (keV)",
            "calibration": "energy calibration of the channels, keV",
            "history": "the map tools applied, in order",
            "metadata": "the map's metadata, with the engine's cautions if any",
        },
    )


def _write_restoration(
    entry: h5py.Group, xrf_map: XRFMap, restoration: Any, source: str | os.PathLike | None
) -> None:
    image = np.asarray(restoration.image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"the restoration must be one 2-D map, got shape {image.shape}")
    x, y = restored_axes(xrf_map, image.shape)
    add_restoration(
        entry,
        restoration,
        axes=(nexus.Axis("y", y, nexus.UM, "y (µm)"), nexus.Axis("x", x, nexus.UM, "x (µm)")),
        psf_pixel_um=xrf_map.pixel_um,
        input_path=os.fspath(source) if source is not None else "",
        units=xrf_map.units,
        long_name=f"{xrf_map.label} restored",
        sequence_index=2,
    )


def read_map_nexus(path: str | os.PathLike) -> XRFMap:
    """Read a map written by :func:`write_map_nexus` (this layout or the earlier one).

    Raises
    ------
    asirp.io.InputFileError
        For a missing, corrupt or incomplete file, or arrays over the input size limit.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise InputFileError(f"map file not found: {file_path}")
    try:
        with h5py.File(file_path, "r") as handle:
            for name in ("entry/map/data", "entry/map/x", "entry/map/y", "entry/map/mask"):
                if name not in handle:
                    raise InputFileError(f"map file {file_path}: missing /{name}")
            if "entry/mapping" in handle:
                how = _read_mapping(handle["entry/mapping"])
            elif "entry/definition" in handle:
                how = _read_old_definition(handle["entry/definition"])
            else:
                raise InputFileError(f"map file {file_path}: missing /entry/mapping")
            maps = None
            if "entry/detector_maps/data" in handle:
                maps = read_dataset(handle, "entry/detector_maps/data")
            return XRFMap(
                data=read_dataset(handle, "entry/map/data"),
                x_um=read_dataset(handle, "entry/map/x"),
                y_um=read_dataset(handle, "entry/map/y"),
                mask=read_dataset(handle, "entry/map/mask").astype(bool),
                detector_maps=maps,
                **how,
            )
    except InputFileError:
        raise
    except Exception as error:
        raise InputFileError(
            f"cannot read map file {file_path}: {type(error).__name__}: {error}"
        ) from error


def _read_mapping(process: h5py.Group) -> dict[str, Any]:
    """The XRFMap fields stored in the NXprocess ``mapping``."""
    rois = tuple(
        ChannelROI(
            str(roi["name"]),
            int(roi["first_channel"]),
            int(roi["last_channel"]),
            float("nan") if roi["energy_kev"] is None else float(roi["energy_kev"]),
        )
        for roi in nexus.read_json_note(process["rois"])
    )
    coefficients = nexus.read_json_note(process["calibration"])
    normalization = nexus.read_text(process["normalization"])
    return {
        "element": nexus.read_text(process["element"]),
        "line": nexus.read_text(process["line"]),
        "rois": rois,
        "normalization": None if normalization == "none" else normalization,
        "reference_mean": float(process["reference_mean"][()]),
        "dead_time_corrected": bool(process["dead_time_corrected"][()]),
        "detectors": tuple(int(d) for d in np.atleast_1d(process["detectors"][()])),
        "scan_kind": nexus.read_text(process["scan_kind"]),
        "metadata": nexus.read_json_note(process["metadata"]),
        "history": tuple(nexus.read_json_note(process["history"])),
        "calibration": None if coefficients is None else EnergyCalibration(**coefficients),
    }


def _read_old_definition(definition: h5py.Group) -> dict[str, Any]:
    """The XRFMap fields of the earlier layout: attributes of ``/entry/definition``."""
    attrs = definition.attrs
    group = definition["rois"]
    rois = tuple(
        ChannelROI(
            str(group[key].attrs["name"]),
            int(group[key]["first_channel"][()]),
            int(group[key]["last_channel"][()]),
            float(group[key]["energy_kev"][()]),
        )
        for key in sorted(group, key=lambda k: int(group[k].attrs["order"]))
    )
    calibration = None
    if "calibration_gain_kev_per_channel" in attrs:
        calibration = EnergyCalibration(
            float(attrs["calibration_offset_kev"]),
            float(attrs["calibration_gain_kev_per_channel"]),
            float(attrs["calibration_quadratic_kev"]),
        )
    normalization = str(attrs["normalization"])
    return {
        "element": str(attrs["element"]),
        "line": str(attrs["line"]),
        "rois": rois,
        "normalization": None if normalization == "none" else normalization,
        "reference_mean": float(attrs["reference_mean"]),
        "dead_time_corrected": bool(attrs["dead_time_corrected"]),
        "detectors": tuple(int(d) for d in np.atleast_1d(attrs["detectors"])),
        "scan_kind": str(attrs["scan_kind"]),
        "metadata": json.loads(attrs["metadata"]),
        "history": tuple(json.loads(attrs["history"])),
        "calibration": calibration,
    }


def write_map_text(
    path: str | os.PathLike,
    xrf_map: XRFMap,
    *,
    data: np.ndarray | None = None,
    include_unmeasured: bool = False,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike | FileIdentity | None] = (),
) -> Path:
    """Write ``x_um y_um counts`` columns (tab-separated), one line per cell.

    Parameters
    ----------
    path : str or os.PathLike
        Output text file.
    xrf_map : XRFMap
        The map (its axes, mask and description).
    data : numpy.ndarray, optional
        Values to write instead of ``xrf_map.data`` (e.g. a restoration), of the map's shape or
        an upscaled one (axes from :func:`restored_axes`; then every cell is written).
    include_unmeasured : bool
        Write unmeasured cells as ``nan`` instead of leaving them out.
    overwrite : bool
        Replace an existing file (default: refuse with
        :class:`asirp.safe_files.OutputExistsError`).
    protect : iterable
        Files never replaced, even with ``overwrite`` (paths or ``(st_dev, st_ino)``), e.g. the
        raw scan.

    Returns
    -------
    pathlib.Path
    """
    values = xrf_map.data if data is None else np.asarray(data, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"data must be a 2-D map, got shape {values.shape}")
    if values.shape == xrf_map.shape:
        x, y, mask = xrf_map.x_um, xrf_map.y_um, xrf_map.mask
    else:
        x, y = restored_axes(xrf_map, values.shape)
        mask = np.ones(values.shape, dtype=bool)
    xx, yy = np.meshgrid(x, y)
    column = values.astype(np.float64)
    if include_unmeasured:
        column = np.where(mask, column, np.nan)
        keep = np.ones(values.shape, dtype=bool)
    else:
        keep = mask
    table = np.column_stack([xx[keep], yy[keep], column[keep]])
    dy, dx = xrf_map.pixel_um
    header = "\n".join(
        [
            f"asirp µ-XRF map: {xrf_map.label}, {xrf_map.units}"
            + ("" if data is None else " (restored)"),
            f"shape {values.shape[0]} x {values.shape[1]} (y x), step {dy:g} x {dx:g} µm, "
            f"normalization {xrf_map.normalization or 'none'}, dead time corrected "
            f"{xrf_map.dead_time_corrected}",
            "x_um\ty_um\tcounts",
        ]
    )
    with atomic_write(path, overwrite=overwrite, protect=protect) as output:
        np.savetxt(
            output.file,
            table,
            fmt=("%.6g", "%.6g", "%.8g"),
            delimiter="\t",
            header=header,
            encoding="utf-8",
        )
    return Path(path)


def _check_cmap(cmap: str) -> None:
    import matplotlib

    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown colour map {cmap!r}; use a matplotlib name such as 'viridis'")


def _nice_length(span_um: float) -> float:
    """A 1-2-5 length near a fifth of ``span_um``."""
    target = max(span_um / 5.0, 1e-9)
    power = 10 ** math.floor(math.log10(target))
    for factor in (5.0, 2.0, 1.0):
        if factor * power <= target:
            return factor * power
    return power


def _show_map(figure: Any, axis: Any, image: np.ndarray, extent: tuple, cmap: str, label: str):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    shown = axis.imshow(
        image, cmap=cmap, origin="lower", extent=extent, interpolation="nearest", aspect="equal"
    )
    colorbar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    colorbar.set_label(label)
    axis.set_xlabel("x (µm)")
    axis.set_ylabel("y (µm)")
    length = _nice_length(extent[1] - extent[0])
    text = f"{length:g} µm" if length < 1000 else f"{length / 1000:g} mm"
    bar = AnchoredSizeBar(
        axis.transData,
        length,
        text,
        "lower right",
        pad=0.4,
        color="white",
        frameon=False,
        size_vertical=(extent[3] - extent[2]) / 80,
    )
    axis.add_artist(bar)
    return shown


def write_map_png(
    path: str | os.PathLike,
    xrf_map: XRFMap,
    *,
    data: np.ndarray | None = None,
    cmap: str = "viridis",
    title: str | None = None,
    dpi: int = 120,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike | FileIdentity | None] = (),
) -> Path:
    """Save the map as a PNG in µm, with a colour bar and a scale bar (y up).

    Parameters
    ----------
    path : str or os.PathLike
        Output PNG.
    xrf_map : XRFMap
        The map; unmeasured cells are left blank.
    data : numpy.ndarray, optional
        Values to show instead (e.g. a restoration of this map, same or upscaled shape).
    cmap : str
        Matplotlib colour map.
    title : str, optional
        Title (default: the map's label and unit).
    dpi : int
        Resolution, dots per inch.
    overwrite : bool
        Replace an existing file (default: refuse with
        :class:`asirp.safe_files.OutputExistsError`).
    protect : iterable
        Files never replaced, even with ``overwrite`` (paths or ``(st_dev, st_ino)``).

    Returns
    -------
    pathlib.Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_cmap(cmap)
    image = xrf_map.masked() if data is None else np.asarray(data, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"data must be a 2-D map, got shape {image.shape}")
    ny, nx = xrf_map.shape
    width = 6.0
    height = min(max(width * ny / max(nx, 1), 2.5), 10.0) + 0.8
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    _show_map(figure, axis, image, xrf_map.extent_um, cmap, xrf_map.units)
    axis.set_title(title if title is not None else xrf_map.label)
    figure.tight_layout()
    with atomic_write(path, overwrite=overwrite, protect=protect) as output:
        figure.savefig(output.file, dpi=dpi, format="png")
    return Path(path)


def intensity_fluctuation(
    measured: np.ndarray, restored: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Standard deviation (and mean) of a map before and after restoration.

    Parameters
    ----------
    measured, restored : numpy.ndarray
        Maps ``(ny, nx)`` of the same shape, counts.
    mask : numpy.ndarray, optional
        ``(ny, nx)`` bool, the cells to use (measured cells); all by default.

    Returns
    -------
    dict
        ``std_before``, ``std_after``, ``mean_before``, ``mean_after`` (counts), and
        ``relative_std_before``, ``relative_std_after`` (std / mean).
    """
    before = np.asarray(measured, dtype=np.float64)
    after = np.asarray(restored, dtype=np.float64)
    if before.ndim != 2 or before.shape != after.shape:
        raise ValueError(
            f"measured and restored must be 2-D maps of one shape, got {before.shape}, "
            f"{after.shape}"
        )
    keep = np.ones(before.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if keep.shape != before.shape or not keep.any():
        raise ValueError("mask must have the map's shape and select at least one cell")
    figures = {
        "std_before": float(before[keep].std()),
        "std_after": float(after[keep].std()),
        "mean_before": float(before[keep].mean()),
        "mean_after": float(after[keep].mean()),
    }
    for when in ("before", "after"):
        mean = figures[f"mean_{when}"]
        figures[f"relative_std_{when}"] = figures[f"std_{when}"] / mean if mean else float("nan")
    return figures


def write_fluctuation_figure(
    path: str | os.PathLike,
    xrf_map: XRFMap,
    restored: np.ndarray,
    *,
    cmap: str = "viridis",
    dpi: int = 110,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike | FileIdentity | None] = (),
) -> dict[str, float]:
    """The intensity-fluctuation view: maps and 3-D surfaces before and after restoration.

    Parameters
    ----------
    path : str or os.PathLike
        Output PNG.
    xrf_map : XRFMap
        The measured map.
    restored : numpy.ndarray
        Its restoration ``(ny, nx)`` (same shape).
    cmap : str
        Matplotlib colour map.
    dpi : int
        Resolution, dots per inch.
    overwrite : bool
        Replace an existing file (default: refuse with
        :class:`asirp.safe_files.OutputExistsError`).
    protect : iterable
        Files never replaced, even with ``overwrite`` (paths or ``(st_dev, st_ino)``).

    Returns
    -------
    dict
        The figures of :func:`intensity_fluctuation` (over the measured cells), also printed
        on the figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_cmap(cmap)
    after = np.asarray(restored, dtype=np.float32)
    figures = intensity_fluctuation(xrf_map.data, after, xrf_map.mask)
    figure = Figure(figsize=(11.0, 9.0))
    FigureCanvasAgg(figure)
    xx, yy = np.meshgrid(xrf_map.x_um, xrf_map.y_um)
    low = float(min(np.nanmin(xrf_map.data), np.nanmin(after)))
    high = float(max(np.nanmax(xrf_map.data), np.nanmax(after)))
    panels = (("measured", xrf_map.data, "before"), ("restored", after, "after"))
    for column, (name, image, when) in enumerate(panels):
        axis = figure.add_subplot(2, 2, column + 1)
        shown = np.where(xrf_map.mask, image, np.nan)
        _show_map(figure, axis, shown, xrf_map.extent_um, cmap, xrf_map.units)
        std, relative = figures[f"std_{when}"], figures[f"relative_std_{when}"]
        axis.set_title(f"{name}: std {std:.4g} ({100 * relative:.1f} %)")
        surface = figure.add_subplot(2, 2, column + 3, projection="3d")
        stride = max(1, max(image.shape) // 100)
        surface.plot_surface(
            xx,
            yy,
            image,
            cmap=cmap,
            vmin=low,
            vmax=high,
            rstride=stride,
            cstride=stride,
            linewidth=0,
            antialiased=False,
        )
        surface.set_zlim(low, high)
        surface.set_xlabel("x (µm)")
        surface.set_ylabel("y (µm)")
        surface.set_zlabel(xrf_map.units)
        surface.set_title(f"{name} surface")
    figure.suptitle(f"{xrf_map.label}: intensity fluctuation before and after restoration")
    # Fixed margins: tight_layout with 3-D axes costs about a second.
    figure.subplots_adjust(left=0.07, right=0.93, bottom=0.05, top=0.91, wspace=0.35, hspace=0.2)
    with atomic_write(path, overwrite=overwrite, protect=protect) as output:
        figure.savefig(output.file, dpi=dpi, format="png")
    return figures

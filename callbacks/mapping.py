"""What to map from each event and how points accumulate into a live map.

:class:`MapSource` says which reading becomes the map value: one event field (``"xrf_Cu"``), the
sum of several, an element ROI found by name (``element="Cu"`` picks the one field ending in
``_Cu``), or channel-adding on a spectrum field (the sum of channels ``start:stop``), optionally
normalised by a flux monitor field (``normalize="i0"``).

:class:`LiveMap` holds the readings on the scan's pixel grid while the scan runs: the mapped
value and the monitor per pixel, which pixels are measured, and how many leading rows are done.

Normalisation follows :func:`asirp.xrf.maps.normalize`: ``value * mean(i0) / i0``, with the mean
over the pixels measured so far, so the unit stays "counts at the mean flux"; the final map
uses the mean over the whole scan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callbacks.geometry import ScanGeometry


class SourceError(ValueError):
    """The configured map source cannot be read from a stream's data keys."""


@dataclass(frozen=True)
class MapSource:
    """Which reading of each event becomes the map value.

    Give exactly one of ``field``, ``element`` or ``spectrum`` (with ``channels``).

    Attributes
    ----------
    field : str or tuple of str, optional
        Event field(s) to map; several fields are summed (e.g. the ROIs of two lines).
    element : str, optional
        Element symbol; the stream's one field named ``<detector>_<element>`` (an element ROI
        of an XRF detector, e.g. ``xrf_Cu``) is mapped.
    spectrum : str, optional
        Spectrum field ``(n_channels,)`` per point; channels ``channels[0]:channels[1]``
        (Python slice: start included, stop excluded) are added.
    channels : (int, int), optional
        Channel range for ``spectrum``.
    normalize : str, optional
        Flux-monitor field (e.g. ``"i0"``); points with a zero, negative or non-finite monitor
        reading are skipped.
    """

    field: str | tuple[str, ...] | None = None
    element: str | None = None
    spectrum: str | None = None
    channels: tuple[int, int] | None = None
    normalize: str | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("field", "element", "spectrum") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one map source: field=..., element=... or spectrum=... with "
                f"channels=(start, stop); got {', '.join(given) or 'none'}"
            )
        if isinstance(self.field, Sequence) and not isinstance(self.field, str):
            fields = tuple(str(f) for f in self.field)
            if not fields:
                raise ValueError("field must name at least one event field")
            object.__setattr__(self, "field", fields)
        if self.spectrum is not None:
            if self.channels is None:
                raise ValueError("spectrum=... needs channels=(start, stop)")
            try:
                start, stop = (int(c) for c in self.channels)
            except (TypeError, ValueError):
                raise ValueError(
                    f"channels must be two integers (start, stop), got {self.channels!r}"
                ) from None
            if not 0 <= start < stop:
                raise ValueError(f"channels must satisfy 0 <= start < stop, got {self.channels}")
            object.__setattr__(self, "channels", (start, stop))
        elif self.channels is not None:
            raise ValueError("channels=... only applies with spectrum=...")

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (for provenance)."""
        if self.field is not None:
            fields = [self.field] if isinstance(self.field, str) else list(self.field)
            what: dict[str, Any] = {"kind": "field", "fields": fields}
        elif self.element is not None:
            what = {"kind": "element", "element": self.element}
        else:
            what = {"kind": "spectrum", "spectrum": self.spectrum, "channels": list(self.channels)}
        what["normalize"] = self.normalize
        return what

    def resolve(self, data_keys: Mapping[str, Mapping[str, Any]]) -> ResolvedSource:
        """Check the source against a stream's data keys.

        Parameters
        ----------
        data_keys : mapping
            The event descriptor's ``data_keys``.

        Returns
        -------
        ResolvedSource

        Raises
        ------
        SourceError
            If a field is missing, an element matches no field or several, or the spectrum
            is shorter than the channel range.
        """
        if self.field is not None:
            fields = (self.field,) if isinstance(self.field, str) else tuple(self.field)
        elif self.element is not None:
            suffix = f"_{self.element}".lower()
            fields = tuple(k for k in data_keys if k.lower().endswith(suffix))
            if len(fields) != 1:
                raise SourceError(
                    f"element {self.element!r} matches {len(fields)} fields "
                    f"({', '.join(fields) or 'none'}) among {', '.join(sorted(data_keys))}; "
                    "name the field with field=..."
                )
        else:
            fields = (str(self.spectrum),)
        missing = [f for f in fields if f not in data_keys]
        if missing:
            raise SourceError(
                f"field(s) {', '.join(missing)} not in the stream (it has "
                f"{', '.join(sorted(data_keys))})"
            )
        if self.spectrum is not None:
            shape = list(data_keys[self.spectrum].get("shape") or [])
            if len(shape) != 1:
                raise SourceError(
                    f"spectrum field {self.spectrum!r} must be 1-D per point, has shape {shape}"
                )
            if shape[0] is not None and shape[0] < self.channels[1]:
                raise SourceError(
                    f"spectrum {self.spectrum!r} has {shape[0]} channels; channels "
                    f"{self.channels[0]}:{self.channels[1]} do not fit"
                )
        if self.normalize is not None and self.normalize not in data_keys:
            raise SourceError(f"normalisation field {self.normalize!r} not in the stream")
        return ResolvedSource(fields, self.channels, self.normalize)


@dataclass(frozen=True)
class ResolvedSource:
    """A :class:`MapSource` checked against one stream: how to read values from event data.

    Attributes
    ----------
    fields : tuple of str
        Fields summed for the value (one spectrum field when ``channels`` is set).
    channels : (int, int) or None
        Channel slice of the spectrum.
    normalize : str or None
        Flux-monitor field.
    """

    fields: tuple[str, ...]
    channels: tuple[int, int] | None
    normalize: str | None

    def value(self, data: Mapping[str, Any]) -> float:
        """Map value of one event's ``data`` (NaN when unreadable)."""
        try:
            if self.channels is not None:
                spectrum = np.asarray(data[self.fields[0]], dtype=np.float64)
                return float(spectrum[self.channels[0] : self.channels[1]].sum())
            if len(self.fields) == 1:
                return float(data[self.fields[0]])
            return float(sum(float(data[f]) for f in self.fields))
        except (KeyError, TypeError, ValueError, IndexError):
            return math.nan

    def values(self, data: Mapping[str, Sequence[Any]], n: int) -> np.ndarray:
        """Map values ``(n,)`` float64 of an event page's ``data`` (NaN where unreadable)."""
        try:
            if self.channels is not None:
                spectra = np.asarray(data[self.fields[0]], dtype=np.float64)
                if spectra.ndim != 2 or spectra.shape[0] != n:
                    raise ValueError
                return spectra[:, self.channels[0] : self.channels[1]].sum(axis=1)
            total = np.zeros(n, dtype=np.float64)
            for name in self.fields:
                column = np.asarray(data[name], dtype=np.float64)
                if column.shape != (n,):
                    raise ValueError
                total += column
            return total
        except (KeyError, TypeError, ValueError, IndexError):
            return np.full(n, np.nan)


@dataclass
class LiveMap:
    """Readings of one run on its pixel grid, filled as events arrive.

    Parameters
    ----------
    geometry : ScanGeometry
        The scan's geometry.
    normalized : bool
        Whether a flux monitor is recorded per pixel.

    Attributes
    ----------
    values : numpy.ndarray
        ``(rows, columns)`` float64 mapped value per pixel (NaN where not measured).
    flux : numpy.ndarray or None
        ``(rows, columns)`` float64 monitor reading per pixel, when normalised.
    measured : numpy.ndarray
        ``(rows, columns)`` bool.
    points : int
        Number of distinct pixels measured.
    """

    geometry: ScanGeometry
    normalized: bool = False
    values: np.ndarray = field(init=False)
    flux: np.ndarray | None = field(init=False)
    measured: np.ndarray = field(init=False)
    points: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        shape = self.geometry.shape
        self.values = np.full(shape, np.nan)
        self.flux = np.full(shape, np.nan) if self.normalized else None
        self.measured = np.zeros(shape, dtype=bool)
        self._row_counts = np.zeros(shape[0], dtype=np.int64)
        self._latest_row = -1
        self._done = 0

    def add(self, row: int, col: int, value: float, flux: float = math.nan) -> None:
        """Record one point (a pixel measured twice keeps the latest reading)."""
        if not self.measured[row, col]:
            self.measured[row, col] = True
            self.points += 1
            self._row_counts[row] += 1
        self.values[row, col] = value
        if self.flux is not None:
            self.flux[row, col] = flux
        if row > self._latest_row:
            self._latest_row = row

    def add_many(
        self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, flux: np.ndarray | None
    ) -> None:
        """Record points ``(n,)`` at once (an event page, e.g. one fly line)."""
        if rows.size == 0:
            return
        new = ~self.measured[rows, cols]
        # Count each newly measured pixel once, even if it appears twice in the page.
        flat = np.unique((rows * self.geometry.shape[1] + cols)[new])
        self.measured[rows, cols] = True
        self.points += int(flat.size)
        np.add.at(self._row_counts, flat // self.geometry.shape[1], 1)
        self.values[rows, cols] = values
        if self.flux is not None and flux is not None:
            self.flux[rows, cols] = flux
        self._latest_row = max(self._latest_row, int(rows.max()))

    @property
    def rows_done(self) -> int:
        """Number of leading rows that are complete or that the scan has moved past."""
        rows, cols = self.geometry.shape
        done = self._done
        while done < rows and (self._row_counts[done] >= cols or done < self._latest_row):
            done += 1
        self._done = done
        return done

    @property
    def shape(self) -> tuple[int, int]:
        """Map shape ``(rows, columns)``."""
        return self.geometry.shape

    @property
    def rows_started(self) -> int:
        """Number of leading rows up to the last one that received a point."""
        return self._latest_row + 1

    @property
    def progress(self) -> float:
        """Fraction of the map's points measured (0 to 1)."""
        return self.points / self.geometry.n_points

    def image(self) -> np.ndarray:
        """The map so far: ``(rows, columns)`` float32, normalised, NaN where not measured."""
        if self.flux is None:
            out = self.values.copy()
        else:
            measured = self.measured
            mean_flux = float(self.flux[measured].mean()) if measured.any() else math.nan
            with np.errstate(divide="ignore", invalid="ignore"):
                out = self.values * (mean_flux / self.flux)
        out[~self.measured] = np.nan
        return out.astype(np.float32)


def fill_unmeasured(block: np.ndarray) -> tuple[np.ndarray, int]:
    """Fill NaN pixels of a map block with the mean of its measured pixels.

    Parameters
    ----------
    block : numpy.ndarray
        ``(rows, columns)`` float32 map with NaN where not measured.

    Returns
    -------
    (numpy.ndarray, int)
        The filled copy (float32) and the number of pixels filled.

    Raises
    ------
    ValueError
        If no pixel of the block is measured.
    """
    holes = ~np.isfinite(block)
    n_holes = int(holes.sum())
    if n_holes == 0:
        return block.copy(), 0
    if n_holes == block.size:
        raise ValueError("no measured pixel to restore")
    filled = block.copy()
    filled[holes] = np.float32(block[~holes].mean(dtype=np.float64))
    return filled, n_holes

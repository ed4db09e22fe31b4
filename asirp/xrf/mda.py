"""The EPICS synApps MDA scan format: a small, size-checked reader.

MDA files (written by the synApps ``saveData`` task at APS beamlines) are XDR: big-endian,
every integer and short in 4 bytes, floats and doubles IEEE, strings as a 4-byte length and
the bytes padded to a multiple of 4. Version 1.3, the one in use, is laid out as::

    header      version (float 1.3), scan number (int), rank (int), dimensions (rank ints,
                outermost first), isRegular (int), offset of the extra PVs (int, 0 if none)
    scan        rank, npts (planned points), curr_pt (points acquired);
                if rank > 1: npts offsets of the lower-rank scans (one per outer point);
                name and time (each: a length, then the XDR string);
                np positioners, nd detectors, nt triggers (ints), then for each positioner
                its number and seven counted strings (name, description, step mode, unit,
                readback name, description, unit), for each detector its number and three
                (name, description, unit), for each trigger its number, one counted string
                and the command (float);
                the data: np x npts positioner values (double), nd x npts detector values
                (float)
    lower scans the same record, one per acquired outer point, wherever the offsets say
    extra PVs   count, then per PV: name, description (counted strings), EPICS type; unless
                a string: element count and unit; then the value (a counted string, or count
                values: char/short/long as 4-byte ints, float, double)

A *counted string* is a length followed, only when the length is non-zero, by the XDR string
(which repeats its own length). No maintained reader is packaged (APS's ``mda.py`` is a script
and relies on the deprecated ``xdrlib``), so this one reads the bytes with numpy: every offset,
length and count is checked against the file before anything is read, the arrays it will build
are checked against the input limit (:func:`asirp.io.check_declared_size`) before they are
allocated, and a truncated or corrupt file raises one :class:`asirp.io.InputFileError` naming
the file and the byte where it went wrong.

:func:`read_mda` gives the file (:class:`MDAFile`: one :class:`MDADimension` per scan level,
with the positioner and detector arrays assembled over the levels above, NaN where not
acquired). µ-XRF scans are made from it by :mod:`asirp.xrf.mda_scan`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asirp.io import InputFileError, check_declared_size, max_input_bytes, read_input_bytes

MDA_VERSION = 1.3
"""The MDA version read (the one in APS's files and APS's ``mda.py``); others are refused."""
MAX_RANK = 8
"""Most scan levels accepted (sscan records nest up to 4 in practice)."""
MAX_ITEMS = 1 << 16
"""Most positioners, detectors, triggers or extra PVs accepted in one record."""

EPICS_STRING = 0
EPICS_ARRAY_TYPES: dict[int, tuple[str, str]] = {
    29: ("DBR_CTRL_SHORT", ">i4"),
    30: ("DBR_CTRL_FLOAT", ">f4"),
    32: ("DBR_CTRL_CHAR", ">i4"),
    33: ("DBR_CTRL_LONG", ">i4"),
    34: ("DBR_CTRL_DOUBLE", ">f8"),
}
"""Numeric EPICS types of extra PVs: name and XDR element type (chars and shorts take 4 bytes)."""


class MDAFormatError(InputFileError):
    """An MDA file is truncated, corrupt, or not an MDA file."""


@dataclass(frozen=True)
class MDAPositioner:
    """A positioner of one scan level and its values over the whole scan.

    Attributes
    ----------
    number : int
        Positioner number in the sscan record (0 = P1).
    name, description, step_mode, unit : str
        The PV written, its description, ``LINEAR``/``TABLE``/``FLY``, its unit (e.g. ``mm``).
    readback_name, readback_description, readback_unit : str
        The PV read back, if any.
    data : numpy.ndarray
        Values ``dimensions[: level + 1]`` (outer levels first), float64, in ``unit``; NaN where
        not acquired.
    """

    number: int
    name: str
    description: str
    step_mode: str
    unit: str
    readback_name: str
    readback_description: str
    readback_unit: str
    data: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class MDADetector:
    """A detector of one scan level and its values over the whole scan.

    Attributes
    ----------
    number : int
        Detector number in the sscan record (0 = D01).
    name, description, unit : str
        The PV read, its description and unit.
    data : numpy.ndarray
        Values ``dimensions[: level + 1]``, float32 as stored; NaN where not acquired.
    """

    number: int
    name: str
    description: str
    unit: str
    data: np.ndarray = field(repr=False)

    @property
    def label(self) -> str:
        """``name (description)`` for messages and metadata."""
        return f"{self.name} ({self.description})" if self.description else self.name


@dataclass(frozen=True)
class MDATrigger:
    """A detector trigger of one scan level: the PV written and the value."""

    number: int
    name: str
    command: float


@dataclass(frozen=True)
class MDADimension:
    """One scan level (sscan record) of an MDA file, with its data over the whole scan.

    Attributes
    ----------
    level : int
        0 for the outermost scan, ``rank - 1`` for the innermost.
    name : str
        The sscan record (``2xfm:scan1``).
    time : str
        When the first scan of this level started, as written.
    npts : int
        Points planned along this level.
    acquired : numpy.ndarray
        ``dimensions[: level + 1]`` bool, True where a point was acquired.
    positioners, detectors, triggers : tuple
        The level's :class:`MDAPositioner`, :class:`MDADetector`, :class:`MDATrigger`.
    """

    level: int
    name: str
    time: str
    npts: int
    acquired: np.ndarray = field(repr=False)
    positioners: tuple[MDAPositioner, ...]
    detectors: tuple[MDADetector, ...]
    triggers: tuple[MDATrigger, ...]


@dataclass(frozen=True)
class MDAExtraPV:
    """A scan-environment PV stored with the scan.

    Attributes
    ----------
    name, description, unit : str
        The PV, its description and unit.
    epics_type : int
        EPICS DBR type (0: string; 29, 30, 32, 33, 34: short, float, char, long, double).
    value : str or tuple of float
        The text (strings, and char arrays as null-terminated text), or the numbers.
    """

    name: str
    description: str
    unit: str
    epics_type: int
    value: str | tuple[float, ...]

    def number(self) -> float | None:
        """The first value as a float (numbers, or text that is a number), else None."""
        if isinstance(self.value, tuple):
            return float(self.value[0]) if self.value else None
        try:
            number = float(self.value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None


@dataclass(frozen=True)
class MDAFile:
    """An MDA file read whole.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    version : float
        Format version (1.3).
    scan_number : int
        The beamline's scan number.
    dimensions : tuple of int
        Planned points per level, outermost first.
    is_regular : bool
        Whether every inner scan has the same positions (the header's flag).
    levels : tuple of MDADimension
        The scan levels, outermost first (``len(levels) == rank``).
    extra_pvs : dict of str to MDAExtraPV
        Scan-environment PVs by name.
    """

    path: Path
    version: float
    scan_number: int
    dimensions: tuple[int, ...]
    is_regular: bool
    levels: tuple[MDADimension, ...]
    extra_pvs: dict[str, MDAExtraPV]

    @property
    def rank(self) -> int:
        """Number of scan levels."""
        return len(self.dimensions)

    def extra_number(self, *names: str) -> float | None:
        """The first of ``names`` (extra PV names, exact or as a suffix) that holds a number."""
        for wanted in names:
            for name, pv in self.extra_pvs.items():
                if name == wanted or name.endswith(wanted):
                    number = pv.number()
                    if number is not None:
                        return number
        return None


class _XDRReader:
    """Reads XDR items from the bytes of a file, checking every read against its end."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.size = len(data)
        self.path = path
        self.position = 0

    def fail(self, problem: str, at: int | None = None) -> MDAFormatError:
        where = self.position if at is None else at
        return MDAFormatError(
            f"MDA file {self.path}: truncated or corrupt ({problem} at byte {where} of {self.size})"
        )

    def seek(self, offset: int, what: str) -> None:
        if not 0 <= offset < self.size:
            raise self.fail(f"offset {offset} of {what} lies outside the file")
        self.position = offset

    def _take(self, n_bytes: int, what: str) -> bytes:
        if n_bytes < 0 or self.position + n_bytes > self.size:
            raise self.fail(f"{what} needs {n_bytes} bytes, {self.size - self.position} left")
        chunk = self.data[self.position : self.position + n_bytes]
        self.position += n_bytes
        return chunk

    def int32(self, what: str) -> int:
        return int.from_bytes(self._take(4, what), "big", signed=True)

    def count(self, what: str, limit: int = MAX_ITEMS) -> int:
        value = self.int32(what)
        if not 0 <= value <= limit:
            raise self.fail(f"{what} is {value}, expected 0..{limit}", self.position - 4)
        return value

    def float32(self, what: str) -> float:
        return float(np.frombuffer(self._take(4, what), dtype=">f4")[0])

    def string(self, what: str) -> str:
        length = self.count(what + " length", self.size)
        text = self._take(length, what)
        self._take((-length) % 4, what + " padding")
        return text.decode("latin-1").rstrip("\x00")

    def counted_string(self, what: str) -> str:
        """A length, then (if non-zero) the XDR string with its own length."""
        return self.string(what) if self.count(what + " length", self.size) else ""

    def array(self, n_values: int, dtype: str, what: str) -> np.ndarray:
        width = np.dtype(dtype).itemsize
        if n_values < 0 or n_values > (self.size - self.position) // width:
            raise self.fail(
                f"{what} needs {n_values} x {width} bytes, {self.size - self.position} left"
            )
        start = self.position
        self.position += n_values * width
        return np.frombuffer(self.data, dtype=dtype, count=n_values, offset=start)


@dataclass
class _Record:
    """One scan record as written (before its data are placed in the whole scan's arrays)."""

    rank: int
    npts: int
    curr_pt: int
    lower_offsets: np.ndarray
    name: str
    time: str
    positioners: list[dict[str, Any]]
    detectors: list[dict[str, Any]]
    triggers: list[MDATrigger]
    positioner_data: np.ndarray
    detector_data: np.ndarray


def _read_record(reader: _XDRReader, offset: int, expected_rank: int, planned: int) -> _Record:
    reader.seek(offset, f"the rank-{expected_rank} scan")
    rank = reader.int32("scan rank")
    if rank != expected_rank:
        raise reader.fail(f"scan rank {rank} where rank {expected_rank} belongs", offset)
    npts = reader.count("scan npts", reader.size)
    if npts > planned:
        raise reader.fail(f"scan of {npts} points where the header plans {planned}", offset)
    curr_pt = reader.count("scan curr_pt", npts)
    lower = np.empty(0, dtype=np.int64)
    if rank > 1:
        lower = reader.array(npts, ">i4", "offsets of the lower scans").astype(np.int64)
    name = reader.string("scan name") if reader.int32("scan name length") else ""
    time = reader.string("scan time") if reader.int32("scan time length") else ""
    n_pos = reader.count("number of positioners")
    n_det = reader.count("number of detectors")
    n_trig = reader.count("number of triggers")
    positioners = []
    for _ in range(n_pos):
        number = reader.int32("positioner number")
        texts = [
            reader.counted_string(f"positioner {number + 1} {part}")
            for part in (
                "name",
                "description",
                "step mode",
                "unit",
                "readback name",
                "readback description",
                "readback unit",
            )
        ]
        positioners.append({"number": number, "texts": texts})
    detectors = []
    for _ in range(n_det):
        number = reader.int32("detector number")
        texts = [
            reader.counted_string(f"detector {number + 1} {part}")
            for part in ("name", "description", "unit")
        ]
        detectors.append({"number": number, "texts": texts})
    triggers = []
    for _ in range(n_trig):
        number = reader.int32("trigger number")
        trigger_name = reader.counted_string("trigger name")
        triggers.append(MDATrigger(number, trigger_name, reader.float32("trigger command")))
    positioner_data = reader.array(n_pos * npts, ">f8", "positioner data").reshape(n_pos, npts)
    detector_data = reader.array(n_det * npts, ">f4", "detector data").reshape(n_det, npts)
    return _Record(
        rank,
        npts,
        curr_pt,
        lower,
        name,
        time,
        positioners,
        detectors,
        triggers,
        positioner_data,
        detector_data,
    )


def _same_layout(first: _Record, other: _Record) -> bool:
    numbers = [p["number"] for p in first.positioners], [d["number"] for d in first.detectors]
    return numbers == (
        [p["number"] for p in other.positioners],
        [d["number"] for d in other.detectors],
    )


class _LevelArrays:
    """The arrays of one scan level over the whole scan, filled record by record."""

    def __init__(self, first: _Record, shape: tuple[int, ...], where: str, max_bytes: int) -> None:
        n_pos, n_det = len(first.positioners), len(first.detectors)
        check_declared_size(shape, np.dtype(np.float64), where + " grid", max_bytes)
        check_declared_size(
            (n_pos, *shape), np.dtype(np.float64), where + " positioners", max_bytes
        )
        check_declared_size((n_det, *shape), np.dtype(np.float32), where + " detectors", max_bytes)
        self.first = first
        self.positioners = np.full((n_pos, *shape), np.nan, dtype=np.float64)
        self.detectors = np.full((n_det, *shape), np.nan, dtype=np.float32)
        self.acquired = np.zeros(shape, dtype=bool)

    def place(self, record: _Record, index: tuple[int, ...]) -> None:
        n = record.curr_pt
        self.positioners[(slice(None), *index, slice(0, n))] = record.positioner_data[:, :n]
        self.detectors[(slice(None), *index, slice(0, n))] = record.detector_data[:, :n]
        self.acquired[(*index, slice(0, n))] = True

    def dimension(self, level: int) -> MDADimension:
        first = self.first
        positioners = tuple(
            MDAPositioner(p["number"], *p["texts"], data=self.positioners[k])
            for k, p in enumerate(first.positioners)
        )
        detectors = tuple(
            MDADetector(d["number"], *d["texts"], data=self.detectors[k])
            for k, d in enumerate(first.detectors)
        )
        return MDADimension(
            level,
            first.name,
            first.time,
            first.npts,
            self.acquired,
            positioners,
            detectors,
            tuple(first.triggers),
        )


def _read_extra_pvs(reader: _XDRReader, offset: int) -> dict[str, MDAExtraPV]:
    reader.seek(offset, "the extra PVs")
    extras: dict[str, MDAExtraPV] = {}
    for _ in range(reader.count("number of extra PVs")):
        name = reader.counted_string("extra PV name")
        description = reader.counted_string(f"extra PV {name!r} description")
        epics_type = reader.int32(f"extra PV {name!r} type")
        unit = ""
        value: str | tuple[float, ...]
        if epics_type == EPICS_STRING:
            value = reader.counted_string(f"extra PV {name!r} value")
        elif epics_type in EPICS_ARRAY_TYPES:
            count = reader.count(f"extra PV {name!r} count", reader.size)
            unit = reader.counted_string(f"extra PV {name!r} unit")
            type_name, dtype = EPICS_ARRAY_TYPES[epics_type]
            values = reader.array(count, dtype, f"extra PV {name!r} ({type_name}) values")
            if type_name == "DBR_CTRL_CHAR":
                codes = values.astype(np.int64) & 0xFF
                end = int(np.argmax(codes == 0)) if np.any(codes == 0) else codes.size
                value = bytes(codes[:end].astype(np.uint8)).decode("latin-1")
            else:
                value = tuple(float(v) for v in values)
        else:
            raise reader.fail(f"extra PV {name!r} has unknown EPICS type {epics_type}")
        extras[name] = MDAExtraPV(name, description, unit, epics_type, value)
    return extras


def _read_bytes(path: Path, max_bytes: int | None) -> bytes:
    """The file's bytes, after checking that it exists, is a file and fits the input limit."""
    return read_input_bytes(path, "MDA file", max_bytes)


def looks_like_mda(head: bytes) -> bool:
    """Whether the first bytes of a file are a plausible MDA header (version 1.3, sane rank).

    Parameters
    ----------
    head : bytes
        At least the first 12 bytes of the file.
    """
    if len(head) < 12:
        return False
    version = float(np.frombuffer(head[:4], dtype=">f4")[0])
    rank = int.from_bytes(head[8:12], "big", signed=True)
    return abs(version - MDA_VERSION) < 0.01 and 1 <= rank <= MAX_RANK


def read_mda(path: str | os.PathLike, *, max_bytes: int | None = None) -> MDAFile:
    """Read an MDA file (version 1.3) whole.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mda`` file.
    max_bytes : int, optional
        Largest file and largest array accepted, bytes (default
        :func:`asirp.io.max_input_bytes`).

    Returns
    -------
    MDAFile
        Every level's positioners and detectors as arrays over the whole scan (NaN where not
        acquired), and the extra PVs.

    Raises
    ------
    asirp.io.InputFileError
        For a missing file, a file that is not MDA 1.3, or a truncated or corrupt one
        (:class:`MDAFormatError`, naming the byte); :class:`asirp.io.InputTooLargeError` above
        the input limit.
    """
    path = Path(path)
    limit = max_input_bytes() if max_bytes is None else int(max_bytes)
    reader = _XDRReader(_read_bytes(path, limit), path)
    if not looks_like_mda(reader.data[:12]):
        raise MDAFormatError(
            f"{path} is not an MDA 1.3 file (its header is not version 1.3 with a rank of "
            f"1..{MAX_RANK})"
        )
    version = reader.float32("version")
    scan_number = reader.int32("scan number")
    rank = reader.int32("rank")
    dimensions = tuple(int(n) for n in reader.array(rank, ">i4", "dimensions"))
    if any(n < 1 for n in dimensions):
        raise reader.fail(f"dimensions {dimensions} must all be >= 1")
    is_regular = bool(reader.int32("isRegular"))
    extra_offset = reader.int32("offset of the extra PVs")
    levels: list[_LevelArrays] = []
    # Breadth-first over the levels: (record offset, index of the record in the outer levels).
    frontier: list[tuple[int, tuple[int, ...]]] = [(reader.position, ())]
    # Each record is read once: offsets pointing twice at one record (a corrupt or crafted
    # file) could otherwise make a small file describe an enormous scan.
    visited: set[int] = set()
    for level in range(rank):
        shape = dimensions[: level + 1]
        arrays: _LevelArrays | None = None
        next_frontier: list[tuple[int, tuple[int, ...]]] = []
        for offset, index in frontier:
            if offset in visited:
                raise reader.fail("two scans point at the same record", offset)
            visited.add(offset)
            record = _read_record(reader, offset, rank - level, dimensions[level])
            if arrays is None:
                arrays = _LevelArrays(record, shape, f"MDA file {path} level {level}", limit)
            elif not _same_layout(arrays.first, record):
                raise reader.fail(
                    f"the rank-{rank - level} scan at index {index} has other positioners or "
                    "detectors than the first one of its level",
                    offset,
                )
            arrays.place(record, index)
            if level + 1 < rank:
                next_frontier += [
                    (int(record.lower_offsets[i]), (*index, i)) for i in range(record.curr_pt)
                ]
        assert arrays is not None  # the outermost level always has its one record
        levels.append(arrays)
        frontier = next_frontier
        if not frontier:
            break
    extras = _read_extra_pvs(reader, extra_offset) if extra_offset else {}
    return MDAFile(
        path=path,
        version=float(round(version, 3)),
        scan_number=scan_number,
        dimensions=dimensions,
        is_regular=is_regular,
        levels=tuple(arrays.dimension(level) for level, arrays in enumerate(levels)),
        extra_pvs=extras,
    )

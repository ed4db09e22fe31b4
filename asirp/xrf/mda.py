"""The EPICS synApps MDA scan format: a small, size-checked reader, and µ-XRF step scans from it.

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
acquired). :func:`read_mda_scan` reads an APS µ-XRF step scan (rank 3: rows x columns x MCA
channels, one MCA per detector element as detectors of the innermost level; scalers, the I0
monitor and the elements' live and real times as detectors of the pixel level) into a
:class:`asirp.xrf.raw_model.RawXRFScan`; :func:`scan_points` gives the per-pixel part of it
(positions, I0, times) that a fly scan's companion MDA file provides
(:mod:`asirp.xrf.aps_fly`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asirp.io import InputFileError, check_declared_size, max_input_bytes
from asirp.safe_files import open_input
from asirp.xrf.lines import EnergyCalibration
from asirp.xrf.raw_model import RawXRFScan

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
    try:
        stream = open_input(path)
    except FileNotFoundError:
        raise InputFileError(f"MDA file not found: {path}") from None
    except IsADirectoryError:
        raise InputFileError(f"{path} is a folder, not an MDA file") from None
    except ValueError as error:
        raise InputFileError(str(error)) from None
    except OSError as error:
        raise InputFileError(f"cannot open {path}: {error.strerror or error}") from None
    with stream:
        size = os.fstat(stream.fileno()).st_size
        check_declared_size((size,), np.dtype(np.uint8), f"MDA file {path}", max_bytes)
        return stream.read()


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


# --- µ-XRF scans from MDA files ------------------------------------------------------------

I0_LABEL = re.compile(
    r"(^|[^a-z0-9])(i0|ic0|us[ _.:-]?ic|us[ _.:-]?ion|upstream|incident[ _]?flux)",
    re.IGNORECASE,
)
"""Names or descriptions of an incident-flux monitor (I0, upstream ion chamber)."""
_SCALER_CHANNEL = (
    # struck scaler arrays written per 4 channels: scaler3_cts1.A is channel 1, cts2.A is 5
    (
        re.compile(r"scaler\d*_cts(\d+)\.([A-D])$"),
        lambda m: 4 * (int(m[1]) - 1) + "ABCD".index(m[2]) + 1,
    ),
    # multichannel scaler (fly scans): mcs:mca2 is channel 2
    (re.compile(r"mcs:mca(\d+)(\.VAL)?$"), lambda m: int(m[1])),
    # scaler record channel fields S1..S32
    (re.compile(r"scaler\d*\.S(\d+)$"), lambda m: int(m[1])),
)
_SCALER_LABEL = re.compile(r"scaler\d*\.NM(\d+)$")
_LENGTH_UNITS_UM = {
    "mm": 1000.0,
    "um": 1.0,
    "µm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "nm": 1e-3,
    "m": 1e6,
}
_X_NAME = re.compile(r"(^|[^a-z])(x|samx|sample ?x)($|[^a-z])", re.IGNORECASE)
_Y_NAME = re.compile(r"(^|[^a-z])(y|samy|sample ?y)($|[^a-z])", re.IGNORECASE)
_MCA_SPECTRUM = re.compile(r"mca(\d+)(\.VAL)?$")


@dataclass(frozen=True)
class MapPoints:
    """The pixels of an MDA map (levels 0 and 1: rows and columns) in acquisition order.

    Attributes
    ----------
    rows, cols : numpy.ndarray
        MDA indices of each point ``(P,)``, int64 (row = outer scan point).
    x_um, y_um : numpy.ndarray
        Stage positions ``(P,)``, µm.
    i0 : numpy.ndarray
        Incident-flux monitor ``(P,)``, counts (ones when the file has none: see cautions).
    metadata : dict
        ``positioners``, ``i0_source``, ``step_um``, ``extents_um``, ``dwell_s``, ...
    cautions : list of str
        What the reader could not find in the file and assumed instead.
    """

    rows: np.ndarray
    cols: np.ndarray
    x_um: np.ndarray
    y_um: np.ndarray
    i0: np.ndarray
    metadata: dict[str, Any]
    cautions: list[str]


def _unit_scale(unit: str, what: str, path: Path) -> float:
    scale = _LENGTH_UNITS_UM.get(unit.strip().lower().replace("μ", "µ"))
    if scale is None:
        raise InputFileError(
            f"MDA file {path}: the {what} positioner is in {unit!r}, not a length (mm, µm, nm); "
            "it cannot place map pixels"
        )
    return scale


def _positioner_unit(mda: MDAFile, positioner: MDAPositioner) -> str:
    """The positioner's unit, from the record or from the motor's ``.EGU`` extra PV."""
    for unit in (positioner.unit, positioner.readback_unit):
        if unit.strip():
            return unit.strip()
    for name in (positioner.name, positioner.readback_name):
        base = name.rsplit(".", 1)[0]
        pv = mda.extra_pvs.get(base + ".EGU")
        if pv is not None and isinstance(pv.value, str) and pv.value.strip():
            return pv.value.strip()
    return ""


def _axes(mda: MDAFile) -> tuple[MDAPositioner, MDAPositioner]:
    """The x and y positioners: the inner (fast) one is x unless the names say otherwise."""
    outer, inner = mda.levels[0], mda.levels[1]
    if not outer.positioners or not inner.positioners:
        raise InputFileError(
            f"MDA file {mda.path}: the row and column scans need a positioner each (found "
            f"{len(outer.positioners)} and {len(inner.positioners)})"
        )
    fast, slow = inner.positioners[0], outer.positioners[0]

    def says(pattern: re.Pattern, positioner: MDAPositioner) -> bool:
        return bool(pattern.search(positioner.description) or pattern.search(positioner.name))

    if says(_X_NAME, slow) and says(_Y_NAME, fast):
        return slow, fast
    return fast, slow


def _median_step(values: np.ndarray) -> float | None:
    steps = np.abs(np.diff(values))
    steps = steps[np.isfinite(steps) & (steps > 0)]
    return float(np.median(steps)) if steps.size else None


def _find_i0(
    mda: MDAFile, detectors: Sequence[MDADetector], wanted: str | None
) -> tuple[MDADetector | None, str]:
    """The I0 detector of the pixel level and why it was chosen (or None and why not)."""
    if wanted is not None:
        for detector in detectors:
            if detector.name == wanted:
                return detector, f"{detector.name} (chosen by the caller)"
        names = ", ".join(d.name for d in detectors)
        raise InputFileError(
            f"MDA file {mda.path}: no detector named {wanted!r} (detectors: {names})"
        )
    for detector in detectors:
        if I0_LABEL.search(detector.description) or I0_LABEL.search(detector.name):
            return detector, f"{detector.label} (its name says I0)"
    labels: dict[int, str] = {}
    for name, pv in mda.extra_pvs.items():
        match = _SCALER_LABEL.search(name)
        if match and isinstance(pv.value, str) and I0_LABEL.search(pv.value):
            labels.setdefault(int(match[1]), f"{pv.value.strip()!r} in {name}")
    for channel in sorted(labels):
        for detector in detectors:
            for pattern, number in _SCALER_CHANNEL:
                match = pattern.search(detector.name)
                if match and number(match) == channel:
                    return detector, (
                        f"{detector.name} (scaler channel {channel}, labelled {labels[channel]})"
                    )
    return None, "no detector or scaler label names an I0 monitor"


def scan_points(
    mda: MDAFile, *, n_columns: int | None = None, i0_detector: str | None = None
) -> MapPoints:
    """The pixels of a 2-D MDA map: positions (µm), I0 and the facts about them.

    Parameters
    ----------
    mda : MDAFile
        A file of rank >= 2 (rows = outer scan, columns = the next one).
    n_columns : int, optional
        Keep only the first columns of each row (a fly scan's spectra file may hold fewer
        bins than the MDA file plans positions).
    i0_detector : str, optional
        Name of the pixel-level detector to use as I0 (default: found by name, then by the
        scaler channel labels in the extra PVs).

    Returns
    -------
    MapPoints
        Acquired pixels in acquisition order (row by row).

    Raises
    ------
    asirp.io.InputFileError
        For a file of rank 1, without positioners, or with positions not in a length unit.
    """
    if len(mda.levels) < 2:
        raise InputFileError(
            f"MDA file {mda.path} is a rank-{mda.rank} scan with {len(mda.levels)} level(s) "
            "acquired; a map needs rows and columns (rank >= 2)"
        )
    cautions: list[str] = []
    pixel = mda.levels[1]
    acquired = pixel.acquired.copy()
    if n_columns is not None:
        acquired[:, n_columns:] = False
    rows, cols = np.nonzero(acquired)
    if rows.size < 2:
        raise InputFileError(f"MDA file {mda.path}: fewer than 2 pixels were acquired")
    x_positioner, y_positioner = _axes(mda)
    values = {}
    units = {}
    for axis, positioner in (("x", x_positioner), ("y", y_positioner)):
        data = positioner.data
        values[axis] = data[rows, cols] if data.ndim == 2 else data[rows]
        units[axis] = _positioner_unit(mda, positioner)
    for axis, other in (("x", "y"), ("y", "x")):
        if not units[axis]:
            if not units[other]:
                units[axis] = "mm"
                cautions.append(
                    f"the {axis} positioner has no unit in the file; mm assumed (the APS stages' "
                    "unit)"
                )
            else:
                cautions.append(
                    f"the {axis} positioner has no unit in the file; {units[other]} assumed (the "
                    f"{other} positioner's)"
                )
                units[axis] = units[other]
    x_um = values["x"] * _unit_scale(units["x"], "x", mda.path)
    y_um = values["y"] * _unit_scale(units["y"], "y", mda.path)
    if not (np.all(np.isfinite(x_um)) and np.all(np.isfinite(y_um))):
        raise InputFileError(f"MDA file {mda.path}: positions hold non-finite values")
    detector, reason = _find_i0(mda, pixel.detectors, i0_detector)
    if detector is None:
        i0 = np.ones(rows.size)
        cautions.append(
            f"no I0 monitor found ({reason}); I0 set to 1: normalisation by I0 does nothing"
        )
    else:
        i0 = np.asarray(detector.data[rows, cols], dtype=np.float64)
        if not np.all(np.isfinite(i0)) or np.any(i0 < 0):
            raise InputFileError(f"MDA file {mda.path}: I0 ({detector.name}) is negative or NaN")
    step_x = _median_step(np.unique(np.round(x_um, 6)))
    step_y = _median_step(np.unique(np.round(y_um, 6)))
    steps = [s for s in (step_y, step_x) if s is not None]
    step_um: float | list[float] | None = None
    if len(steps) == 2:
        step_um = steps[0] if abs(steps[0] - steps[1]) <= 0.01 * steps[1] else steps
    elif steps:
        step_um = steps[0]
    dwell = mda.extra_number(".TP", ".PRTM")
    metadata: dict[str, Any] = {
        "title": mda.path.stem,
        "scan_number": mda.scan_number,
        "mda_version": mda.version,
        "mda_dimensions": list(mda.dimensions),
        "scan_started": mda.levels[0].time,
        "positioners": {
            "x": {
                "pv": x_positioner.name,
                "description": x_positioner.description,
                "unit": units["x"],
            },
            "y": {
                "pv": y_positioner.name,
                "description": y_positioner.description,
                "unit": units["y"],
            },
        },
        "step_um": step_um,
        "extents_um": {
            "x": [float(x_um.min()), float(x_um.max())],
            "y": [float(y_um.min()), float(y_um.max())],
        },
        "i0_source": reason if detector is not None else None,
        "dwell_s": dwell,
    }
    return MapPoints(rows, cols, x_um, y_um, i0, metadata, cautions)


def mca_calibration(
    mda: MDAFile, mca_names: Sequence[str]
) -> tuple[EnergyCalibration | None, list[dict[str, float]], list[str]]:
    """The energy calibration of MCA spectra from the file (``CALO``/``CALS``/``CALQ`` PVs).

    Parameters
    ----------
    mda : MDAFile
        The file (extra PVs, then detectors of any level, are searched).
    mca_names : sequence of str
        The MCA record of each detector element (``dxpXMAP2xfm3:mca1``).

    Returns
    -------
    (EnergyCalibration or None, list of dict, list of str)
        The first element's calibration (None if the file has none), every element's
        coefficients, and cautions (elements whose calibrations differ by more than half a
        channel).
    """

    def value(name: str) -> float | None:
        pv = mda.extra_pvs.get(name)
        if pv is not None and pv.number() is not None:
            return pv.number()
        for level in mda.levels:
            for detector in level.detectors:
                if detector.name == name:
                    finite = detector.data[np.isfinite(detector.data)]
                    return float(finite.ravel()[0]) if finite.size else None
        return None

    per_element: list[dict[str, float]] = []
    for base in mca_names:
        offset, gain, quadratic = (value(f"{base}.{field}") for field in ("CALO", "CALS", "CALQ"))
        if offset is None or gain is None or gain <= 0:
            continue
        per_element.append(
            {"offset_kev": offset, "gain_kev_per_channel": gain, "quadratic_kev": quadratic or 0.0}
        )
    if not per_element:
        return None, [], []
    cautions = []
    first = EnergyCalibration(**per_element[0])
    channels = np.array([0.0, 2048.0])
    for index, coefficients in enumerate(per_element[1:], start=1):
        other = EnergyCalibration(**coefficients)
        shift = np.max(np.abs(first.energy_kev(channels) - other.energy_kev(channels)))
        if shift > 0.5 * first.gain_kev_per_channel:
            cautions.append(
                f"detector element {index} has another energy calibration than element 0 "
                f"({shift * 1000:.0f} eV apart); element 0's is used for all"
            )
    return first, per_element, cautions


def _element_times(
    detectors: Sequence[MDADetector], bases: Sequence[str], rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Live and real time ``(P, D)`` from the ``<mca>.ELTM`` / ``.ERTM`` detectors, if all exist."""
    by_name = {d.name: d for d in detectors}
    live, real = [], []
    for base in bases:
        eltm, ertm = by_name.get(base + ".ELTM"), by_name.get(base + ".ERTM")
        if eltm is None or ertm is None:
            return None
        live.append(eltm.data[rows, cols])
        real.append(ertm.data[rows, cols])
    return np.stack(live, axis=1).astype(np.float64), np.stack(real, axis=1).astype(np.float64)


def integer_counts(values: np.ndarray, where: str, cautions: list[str]) -> np.ndarray:
    """Spectra as integer counts: float counts rounded (with a caution if they were not whole).

    Raises
    ------
    asirp.io.InputFileError
        For negative or non-finite counts.
    """
    if values.dtype.kind in "iu":
        if values.dtype.kind == "i" and values.size and values.min() < 0:
            raise InputFileError(f"{where}: negative counts (overflowed integers?)")
        return values
    if not np.all(np.isfinite(values)):
        raise InputFileError(f"{where}: spectra hold NaN or Inf (points not acquired?)")
    if values.size and values.min() < 0:
        raise InputFileError(f"{where}: negative counts in the spectra")
    counts = np.rint(values)
    if np.max(np.abs(counts - values), initial=0.0) > 1e-3:
        cautions.append(
            f"{where} stores spectra as {values.dtype} with fractional values (already "
            "corrected, e.g. for dead time?); they were rounded to whole counts"
        )
    top = float(counts.max(initial=0.0))
    dtype = (
        np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32 if top <= 2**32 - 1 else np.int64
    )
    return counts.astype(dtype)


def finish_times(
    live: np.ndarray, real: np.ndarray, cautions: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip live to real time where a file rounds them apart; time since start per point.

    Returns
    -------
    (live, real, time_s)
        ``(P, D)``, ``(P, D)`` and ``(P,)`` s: ``time_s`` is the cumulative real time of the
        points before (motor and readout overheads are not in the files).
    """
    excess = live > real * (1 + 1e-9) + 1e-12
    if np.any(excess):
        cautions.append(
            f"live time exceeds real time at {int(excess.sum())} point-element(s); live time "
            "clipped to real time there"
        )
        live = np.minimum(live, real)
    per_point = real.max(axis=1)
    time_s = np.concatenate([[0.0], np.cumsum(per_point)[:-1]])
    return live, real, time_s


_MONO = re.compile(r"mono|bragg|dcm", re.IGNORECASE)


def monochromator_energy_kev(mda: MDAFile, cautions: list[str]) -> float | None:
    """The incident energy from a monochromator PV among the extra PVs, keV (None if absent).

    Undulator energies (``ID..:Energy``) are not the incident energy (harmonics) and are not
    used; when no monochromator PV is found a caution says so.
    """
    for name, pv in mda.extra_pvs.items():
        unit = pv.unit.strip().lower()
        if unit not in ("kev", "ev") or not (_MONO.search(name) or _MONO.search(pv.description)):
            continue
        number = pv.number()
        if number is not None and number > 0:
            return number / 1000.0 if unit == "ev" else number
    cautions.append(
        "the file records no monochromator energy (only the undulator's, which is not the "
        "incident energy); incident_energy_kev is None"
    )
    return None


def _spectra_detectors(level: MDADimension) -> list[MDADetector]:
    named = [d for d in level.detectors if _MCA_SPECTRUM.search(d.name)]
    return named or list(level.detectors)


def read_mda_scan(
    path: str | os.PathLike,
    *,
    calibration: EnergyCalibration | None = None,
    i0_detector: str | None = None,
    max_bytes: int | None = None,
) -> RawXRFScan:
    """Read an APS µ-XRF step scan (MDA rank 3: rows x columns x MCA channels).

    The innermost level's detectors are the MCA spectra, one per detector element; the pixel
    level holds the scalers (I0: found by name, or by the scaler channel labels ``*.NM<n>`` in
    the extra PVs; :func:`scan_points`) and each element's live and real time
    (``<mca>.ELTM``, ``<mca>.ERTM``); the calibration is each MCA's ``CALO``/``CALS``/``CALQ``.
    Positions are converted to µm (mm in APS files).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mda`` file.
    calibration : EnergyCalibration, optional
        Use this calibration instead of the file's (required when the file has none).
    i0_detector : str, optional
        Name of the detector to use as I0.
    max_bytes : int, optional
        Input size limit, bytes (default :func:`asirp.io.max_input_bytes`).

    Returns
    -------
    RawXRFScan
        ``metadata`` says where each quantity came from (``i0_source``, ``calibration_source``,
        ``positioners``, ``detector_elements``) and lists in ``cautions`` what was assumed.

    Raises
    ------
    asirp.io.InputFileError
        For a file that is not MDA, truncated or corrupt, of rank < 3 (no spectra: a fly
        scan's MDA file; read its spectra file, :mod:`asirp.xrf.aps_fly`), or without a
        calibration when none is given.
    """
    mda = read_mda(path, max_bytes=max_bytes)
    if mda.rank < 3:
        raise InputFileError(
            f"MDA file {mda.path} is rank {mda.rank}: it holds no spectra (a fly scan's MDA file "
            "holds positions and scalers; read the fly scan's HDF5 spectra file, with this file "
            "as its companion)"
        )
    if len(mda.levels) < 3:
        raise InputFileError(f"MDA file {mda.path}: no spectrum was acquired")
    points = scan_points(mda, i0_detector=i0_detector)
    cautions = list(points.cautions)
    spectra_level = mda.levels[2]
    elements = _spectra_detectors(spectra_level)
    if not elements:
        raise InputFileError(f"MDA file {mda.path}: the innermost scan has no detectors (spectra)")
    where = f"MDA file {mda.path}"
    rows, cols = points.rows, points.cols
    # Pixels whose spectra were not completed (a stopped scan) are left out.
    complete = spectra_level.acquired[rows, cols].all(axis=-1)
    if not complete.all():
        cautions.append(f"{int((~complete).sum())} pixel(s) with incomplete spectra left out")
    keep = np.nonzero(complete)[0]
    rows, cols = rows[keep], cols[keep]
    spectra = np.stack([d.data[rows, cols, :] for d in elements], axis=1)
    spectra = integer_counts(spectra, where, cautions)
    bases = [d.name.removesuffix(".VAL") for d in elements]
    calibration_source = "given"
    per_element: list[dict[str, float]] = []
    if calibration is None:
        calibration, per_element, calibration_cautions = mca_calibration(mda, bases)
        if calibration is None:
            raise InputFileError(
                f"{where} records no energy calibration (no {bases[0]}.CALO/CALS PVs); give one "
                "(calibration=EnergyCalibration(offset_kev, gain_kev_per_channel))"
            )
        cautions += calibration_cautions
        calibration_source = f"{bases[0]}.CALO/.CALS/.CALQ in the file"
    times = _element_times(mda.levels[1].detectors, bases, rows, cols)
    dwell = points.metadata["dwell_s"]
    if times is None:
        seconds = float(dwell) if dwell else 1.0
        live = real = np.full((rows.size, len(elements)), seconds)
        cautions.append(
            "no live/real time per element in the file; both set to "
            + (f"the dwell time {seconds:g} s" if dwell else "1 s")
            + ": dead-time correction does nothing"
        )
    else:
        live, real = times
        if not (np.all(np.isfinite(live)) and np.all(np.isfinite(real))):
            raise InputFileError(f"{where}: live or real times hold NaN")
    live, real, time_s = finish_times(live, real, cautions)
    incident_kev = monochromator_energy_kev(mda, cautions)
    metadata = dict(points.metadata)
    metadata.update(
        source_format="aps_mda",
        source_file=mda.path.name,
        scan_kind="raster",
        incident_energy_kev=incident_kev,
        detector_elements=[d.name for d in elements],
        calibration_source=calibration_source,
        element_calibrations=per_element,
        time_source="cumulative real time of the points before (overheads not recorded)",
        cautions=cautions,
    )
    try:
        return RawXRFScan(
            spectra=spectra,
            x_um=points.x_um[keep],
            y_um=points.y_um[keep],
            i0=points.i0[keep],
            live_time_s=live,
            real_time_s=real,
            time_s=time_s,
            line_index=rows.astype(np.int64),
            calibration=calibration,
            metadata=metadata,
        )
    except (TypeError, ValueError) as error:
        raise InputFileError(f"{where}: {error}") from error

"""The restoration component behind the ASIRP Tango device (it never imports Tango).

:class:`RestorationComponent` holds the settings and the input map, runs :func:`asirp.restore` in a
worker thread with the engine's ``cancel=`` and ``progress=`` hooks, keeps the latest result,
confines file access to a data root, and tells its listeners about every change of state,
progress and result. The Tango device (:mod:`asirp_device.server`) is a thin shell over it, and
tests drive it directly.

States
------
``ON``
    Idle and ready (also after a successful or an aborted restoration).
``RUNNING``
    A restoration is in progress in the worker thread; :meth:`~RestorationComponent.start` is
    refused until it ends.
``ALARM``
    The last restoration failed; the reason is in the status. The previous result is kept; the
    next successful restoration, or :meth:`~RestorationComponent.reset`, returns to ``ON``.

A component that cannot be built (bad defaults, a data root that is not a folder) raises in its
constructor: the device reports that as ``FAULT``.

Threading
---------
Every public method may be called from any thread. Listeners are called with the new state,
progress or result in the order the changes happened, from the thread that made the change (the
caller's for :meth:`~RestorationComponent.start` and :meth:`~RestorationComponent.reset`, the
worker's for progress and the end of a restoration). They must return quickly and must not call
back into anything that waits for the worker: the Tango device only queues the events it will
push. The result of a restoration is published before the state returns to ``ON``, so a client
that sees ``ON`` reads the new result.

Live mode plugs in through :meth:`~RestorationComponent.publish_result`: any source of
:class:`asirp.Restoration` objects (a Bluesky live restorer, for example) hands each one to it
and it is published exactly like the results of :meth:`~RestorationComponent.start`; such a
source reports its failures with :meth:`~RestorationComponent.report_failure` (``ALARM``, which
its next published result clears). :mod:`asirp_device.live` is that source for a bluesky 0MQ
document stream.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from asirp.backend import resolve_device
from asirp.io import (
    HDF5_SUFFIXES,
    InputFileError,
    max_input_bytes,
    read_stream,
    split_hdf5_path,
    write_restoration,
)
from asirp.registry import RestorationCancelled, available_methods, get_method
from asirp.restore import Restoration, restore
from asirp.safe_files import DataRoot, FileIdentity, PinnedFile

# the file errors of the data root, re-exported for the device and the tests
from asirp.safe_files import DataRootError as DataRootError
from asirp.safe_files import OutputExistsError as OutputExistsError
from asirp.safe_files import ProtectedFileError as ProtectedFileError
from asirp.validation import as_image_stack

_LOG = logging.getLogger(__name__)

AUTO_CONTEXT_KEYS = ("modality", "psf_known", "budget_ms", "mode", "candidates")
"""Keys of the device's parameters that reach the selector when ``auto_select`` is on (see
:mod:`asirp.auto`); the others are method parameters for when it is off."""

MAX_SIDE_PX = 4096
"""Largest map side the device accepts, px (a float32 4096 x 4096 map is 64 MiB on the wire)."""

MAX_ITERATIONS = 100_000
"""Largest iteration cap, as in the engine's registry."""

DEVICE_MAX_INPUT_BYTES = MAX_SIDE_PX * MAX_SIDE_PX * 16
"""Largest array LoadImage reads, bytes (a complex128 4096 x 4096 map; checked before reading)."""

MAX_PINNED_FILES = 8
"""Weight files kept open, and loaded inputs remembered (for SaveResult), per component."""

INPUT_ATTRIBUTE_SOURCE = "input_image attribute"
"""The ``source`` recorded for an input written through the Tango attribute."""


class ComponentState(enum.Enum):
    """Operating state of the component (the device maps it to the Tango state of that name)."""

    ON = "ON"
    RUNNING = "RUNNING"
    ALARM = "ALARM"


class RestorationBusy(RuntimeError):
    """A restoration is running, so the request (a new restoration, a reset) is refused."""


class NotReady(RuntimeError):
    """What the request needs is not there yet (no input image, no result to save)."""


RESULT_CACHE_SIZE = 16
"""How many results (the latest ones) :meth:`RestorationComponent.fetch_result` can return."""

RESULT_CACHE_BYTES = 256 * 2**20
"""Most bytes of restored maps kept for :meth:`RestorationComponent.fetch_result` (the latest
result is always kept)."""


class UnknownRequest(LookupError):
    """No such request id, or its result is no longer kept (only the latest ones are)."""


class RequestFailed(RuntimeError):
    """The request ended without a result (the restoration failed or was aborted)."""


def _first_request_id() -> int:
    """The first request id of a component: the time in ms x 1000.

    Ids then count up by one, so a component built later (a restarted server, ``Init``) does
    not hand out an id that an earlier one gave to a client, unless the earlier one took more
    than 1000 requests a millisecond. The ids stay below 2**53 (exact in JSON) until about 2255.
    """
    return time.time_ns() // 1_000_000 * 1000


@dataclass(frozen=True)
class Settings:
    """How the next restoration runs.

    Attributes
    ----------
    method : str
        A method of :func:`asirp.available_methods`, used unless ``auto_select``.
    auto_select : bool
        Let the engine choose (``method="auto"``, see :mod:`asirp.auto`); ``iterations`` and
        ``parameters`` are then not used.
    iterations : int
        Iteration cap for iterative methods (1 to 100000); methods without iterations ignore it.
    beam_fwhm_um : float
        Beam full width at half maximum, µm (isotropic Gaussian PSF).
    pixel_um : float
        Scan step (pixel size), µm.
    parameters : dict or str
        Other keyword parameters of ``method`` (``asirp methods`` lists them), JSON values; JSON
        object text is accepted and parsed by the component (which always holds a dict).
    compute_device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``, as :func:`asirp.restore`'s ``device``.
    """

    method: str = "richardson_lucy"
    auto_select: bool = False
    iterations: int = 100
    beam_fwhm_um: float = 50.0
    pixel_um: float = 10.0
    parameters: Mapping[str, Any] | str = field(default_factory=dict)
    compute_device: str = "auto"


@dataclass(frozen=True)
class ResultRecord:
    """A published result.

    Attributes
    ----------
    restoration : asirp.Restoration
        The engine's result (``restoration.image`` is float32 ``(H, W)``, counts).
    sequence : int
        1 for the first result of this component, then 2, 3, ... (the data-ready counter).
    source : str
        Where the input came from: a file path, ``"input_image attribute"``, ``"Submit"``, or
        what a live source called itself.
    duration_s : float
        Wall time from the start of the restoration to its publication, s.
    request_id : int
        The id :meth:`RestorationComponent.start` returned for it (a live result gets a fresh
        one); :meth:`RestorationComponent.fetch_result` finds the record by it.
    """

    restoration: Restoration
    sequence: int
    source: str
    duration_s: float
    request_id: int = 0


StateCallback = Callable[[ComponentState, str], None]
ProgressCallback = Callable[[int], None]
ResultCallback = Callable[[ResultRecord], None]


def validate_method(method: Any) -> str:
    """Return ``method`` if it names a registered method, else raise a clear error."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {method!r}")
    known = available_methods()
    if method not in known:
        raise ValueError(
            f"unknown method {method!r}; available: {', '.join(known)} "
            "(set auto_select to let ASIRP choose)"
        )
    return method


def validate_iterations(iterations: Any) -> int:
    """Return ``iterations`` as an int in 1..100000, else raise a clear error."""
    if isinstance(iterations, bool) or not isinstance(iterations, int | np.integer):
        raise TypeError(f"iterations must be an integer, got {iterations!r}")
    if not 1 <= int(iterations) <= MAX_ITERATIONS:
        raise ValueError(
            f"iterations must be between 1 and {MAX_ITERATIONS} (the iteration cap of "
            f"iterative methods), got {int(iterations)}"
        )
    return int(iterations)


def validate_length_um(value: Any, name: str) -> float:
    """Return a finite length > 0 in µm as a float, else raise a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number of µm, got {value!r}")
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name} must be a finite length > 0 in µm, got {value!r}")
    return float(value)


def validate_compute_device(device: Any) -> str:
    """Return ``device`` if the engine can compute there now, else raise a clear error."""
    resolve_device(device)
    return str(device)


def parse_parameters(parameters: Mapping[str, Any] | str) -> dict[str, Any]:
    """Turn a mapping or a JSON object text into the method-parameter dict.

    Parameters
    ----------
    parameters : Mapping or str
        The parameters, or their JSON object text (at most ``MAX_PARAMETERS_CHARS``
        characters, nested at most ``MAX_PARAMETERS_DEPTH`` levels).

    Raises
    ------
    ValueError
        For text that is not a JSON object, too long or nested too deeply, or an
        ``iterations`` key (it has its own setting).
    """
    max_chars, max_depth = 64 * 1024, 32  # MAX_PARAMETERS_CHARS, MAX_PARAMETERS_DEPTH
    if isinstance(parameters, str):
        if len(parameters) > max_chars:
            raise ValueError(
                f"parameters_json is {len(parameters)} characters long; at most {max_chars} "
                "are accepted"
            )
        text = parameters.strip() or "{}"
        try:
            parameters = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"parameters must be a JSON object, got {text[:200]!r}: {error}"
            ) from None
        except RecursionError:
            raise ValueError(
                f"parameters_json is nested too deeply (at most {max_depth} levels)"
            ) from None
        pending, depth = [(parameters, 1)], 1
        while pending:  # nesting depth, without recursion
            value, level = pending.pop()
            depth = max(depth, level)
            if depth > max_depth:
                raise ValueError(
                    f"parameters_json is nested too deeply (at most {max_depth} levels)"
                )
            if isinstance(value, dict):
                pending.extend((item, level + 1) for item in value.values())
            elif isinstance(value, list):
                pending.extend((item, level + 1) for item in value)
    if not isinstance(parameters, Mapping):
        raise ValueError(f"parameters must be a JSON object, got {str(parameters)[:200]!r}")
    if "iterations" in parameters:
        raise ValueError("give the iteration cap with the iterations setting, not in parameters")
    return dict(parameters)


def engine_call(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The method and keyword arguments that :func:`asirp.restore` gets for ``settings``.

    Parameters are checked against the method's registry entry, so a mismatch (a parameter the
    method does not take, a value out of range) raises here, before any work starts.

    Returns
    -------
    method : str
        ``"auto"`` when ``settings.auto_select``, else ``settings.method``.
    kwargs : dict
        PSF description, compute device, and the method's parameters.
    """
    kwargs: dict[str, Any] = {
        "beam_fwhm_um": settings.beam_fwhm_um,
        "pixel_um": settings.pixel_um,
        "device": settings.compute_device,
    }
    if settings.auto_select:  # only the selection context applies; method parameters wait
        context = {k: v for k, v in settings.parameters.items() if k in AUTO_CONTEXT_KEYS}
        return "auto", {**kwargs, **context}
    spec = get_method(settings.method)
    params = dict(settings.parameters)
    if any(parameter.name == "iterations" for parameter in spec.parameters):
        params["iterations"] = settings.iterations
    spec.resolve_params(params)
    return settings.method, {**kwargs, **params}


def output_scale(settings: Settings) -> int:
    """How many times larger than the input the result of ``settings`` is (1 but for SR)."""
    if settings.auto_select:
        return 1
    spec = get_method(settings.method)
    return int(spec.resolve_params(dict(settings.parameters)).get("scale", spec.scale))


def validate_map(image: Any, name: str = "input_image") -> np.ndarray:
    """Check one 2-D map for the device and return a read-only float32 ``(H, W)`` copy.

    Raises
    ------
    ValueError
        For a stack or any other number of dimensions, NaN/Inf, a side below 4 px or above
        :data:`MAX_SIDE_PX`.
    TypeError
        For non-numeric or complex data.
    """
    if np.ndim(image) == 3:
        raise ValueError(
            f"{name} holds a stack of shape {np.shape(image)}; the device restores one 2-D map "
            "(rows, columns) at a time (use 'asirp restore' for stacks)"
        )
    stack, _ = as_image_stack(image, name)
    if stack.ndim != 3 or stack.shape[0] != 1:
        raise ValueError(f"{name} must be a 2-D map (rows, columns), got shape {np.shape(image)}")
    array = stack[0]
    if max(array.shape) > MAX_SIDE_PX:
        raise ValueError(
            f"{name} of shape {array.shape} is too large: each side may be at most {MAX_SIDE_PX} px"
        )
    array.flags.writeable = False
    return array


@dataclass
class _Job:
    image: np.ndarray
    source: str
    method: str
    kwargs: dict[str, Any]
    cancel: threading.Event
    started: float
    progress: int = 0
    request_id: int = 0


class RestorationComponent:
    """Settings, input, a worker thread running :func:`asirp.restore`, and change listeners.

    Parameters
    ----------
    settings : Settings, optional
        Initial settings (the device's defaults); every field is validated.
    data_root : str or os.PathLike, optional
        Folder that :meth:`load_image`, :meth:`save_result` and a ``weights`` parameter are
        confined to (an :class:`asirp.safe_files.DataRoot`: files are opened by descriptor,
        ``..`` cannot escape, no symbolic link inside the root is followed). ``None`` disables
        file access.
    overwrite_results : bool
        Let :meth:`save_result` replace an existing file (never the input of the result).
    engine : callable, optional
        The restoration function, :func:`asirp.restore` by default (same signature).

    Raises
    ------
    ValueError, TypeError
        For invalid settings, or a data root that is not an existing folder.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        data_root: str | os.PathLike | None = None,
        overwrite_results: bool = False,
        engine: Callable[..., Restoration] = restore,
    ) -> None:
        settings = settings if settings is not None else Settings()
        self._root: DataRoot | None = None
        if data_root is not None and str(data_root).strip():
            self._root = DataRoot(data_root)
        self._data_root: Path | None = self._root.path if self._root is not None else None
        self._overwrite_results = bool(overwrite_results)
        self._files_lock = threading.Lock()
        self._loaded: collections.OrderedDict[str, FileIdentity] = collections.OrderedDict()
        self._pins: collections.OrderedDict[str, PinnedFile] = collections.OrderedDict()
        self._settings = Settings(
            method=validate_method(settings.method),
            auto_select=bool(settings.auto_select),
            iterations=validate_iterations(settings.iterations),
            beam_fwhm_um=validate_length_um(settings.beam_fwhm_um, "beam_fwhm_um"),
            pixel_um=validate_length_um(settings.pixel_um, "pixel_um"),
            parameters=self._pin_weights(parse_parameters(settings.parameters)),
            compute_device=validate_compute_device(settings.compute_device),
        )
        self._engine = engine
        self._lock = threading.Lock()
        self._notify_lock = threading.RLock()
        self._state = ComponentState.ON
        self._status = "ready: write input_image (or LoadImage) and call Restore"
        self._input: np.ndarray | None = None
        self._input_source = ""
        self._job: _Job | None = None
        self._worker: threading.Thread | None = None
        self._progress = 0
        self._result: ResultRecord | None = None
        self._sequence = 0
        self._first_request = self._next_request = _first_request_id()
        self._results: collections.OrderedDict[int, ResultRecord] = collections.OrderedDict()
        self._failures: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._state_callbacks: list[StateCallback] = []
        self._progress_callbacks: list[ProgressCallback] = []
        self._result_callbacks: list[ResultCallback] = []

    # ------------------------------------------------------------------ listeners
    def add_state_callback(self, callback: StateCallback) -> None:
        """Call ``callback(state, status)`` on every change of state or status."""
        self._state_callbacks.append(callback)

    def add_progress_callback(self, callback: ProgressCallback) -> None:
        """Call ``callback(percent)`` (int, 0-100) when the progress changes by 1 % or more."""
        self._progress_callbacks.append(callback)

    def add_result_callback(self, callback: ResultCallback) -> None:
        """Call ``callback(record)`` with every new :class:`ResultRecord`."""
        self._result_callbacks.append(callback)

    def _call(self, callbacks: list[Callable[..., None]], *args: Any) -> None:
        for callback in list(callbacks):
            try:
                callback(*args)
            except Exception:  # a broken listener must not break the component
                _LOG.exception("listener %r failed", callback)

    # ------------------------------------------------------------------ read-only views
    @property
    def state(self) -> ComponentState:
        """The current :class:`ComponentState`."""
        with self._lock:
            return self._state

    @property
    def status(self) -> str:
        """One line saying what the component is doing or what went wrong."""
        with self._lock:
            return self._status

    @property
    def progress(self) -> int:
        """Progress of the current or last restoration, percent (0-100)."""
        with self._lock:
            return self._progress

    @property
    def settings(self) -> Settings:
        """The settings the next restoration will use."""
        with self._lock:
            return self._settings

    @property
    def input_image(self) -> np.ndarray | None:
        """The input map, read-only float32 ``(H, W)`` (counts), or ``None``."""
        with self._lock:
            return self._input

    @property
    def input_source(self) -> str:
        """Where the input map came from (a path, or ``"input_image attribute"``)."""
        with self._lock:
            return self._input_source

    @property
    def result(self) -> ResultRecord | None:
        """The latest published result, or ``None``."""
        with self._lock:
            return self._result

    @property
    def data_root(self) -> Path | None:
        """The resolved data root, or ``None`` when file access is disabled."""
        return self._data_root

    @property
    def busy(self) -> bool:
        """Whether a restoration is running."""
        with self._lock:
            return self._worker is not None

    @staticmethod
    def available_methods() -> list[str]:
        """The method names the engine offers."""
        return available_methods()

    # ------------------------------------------------------------------ settings
    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._settings = replace(self._settings, **changes)

    def set_method(self, method: str) -> None:
        """Choose the method used when ``auto_select`` is off (validated against the registry)."""
        self._update(method=validate_method(method))

    def set_auto_select(self, enabled: bool) -> None:
        """Let the engine choose the method (``method="auto"``) or not."""
        if not isinstance(enabled, bool | np.bool_):
            raise TypeError(f"auto_select must be true or false, got {enabled!r}")
        self._update(auto_select=bool(enabled))

    def set_iterations(self, iterations: int) -> None:
        """Set the iteration cap of iterative methods (1 to 100000)."""
        self._update(iterations=validate_iterations(iterations))

    def set_beam_fwhm_um(self, fwhm_um: float) -> None:
        """Set the beam FWHM, µm (> 0)."""
        self._update(beam_fwhm_um=validate_length_um(fwhm_um, "beam_fwhm_um"))

    def set_pixel_um(self, pixel_um: float) -> None:
        """Set the scan step (pixel size), µm (> 0)."""
        self._update(pixel_um=validate_length_um(pixel_um, "pixel_um"))

    def set_parameters(self, parameters: Mapping[str, Any] | str) -> None:
        """Set the method's other parameters (a mapping or JSON object text).

        Unless ``auto_select`` is on, they are checked against the current method now (and
        again when a restoration starts, since the method may change in between). With
        ``auto_select`` on, only the selection context among them (:data:`AUTO_CONTEXT_KEYS`:
        for example ``{"budget_ms": 200, "mode": "cheap"}``) reaches the engine, and it is
        checked when the restoration starts (a bad value ends it in ``ALARM``).

        A ``weights`` file is a path in the data root, opened now (see :meth:`_pin_weights`).
        """
        parsed = self._pin_weights(parse_parameters(parameters))
        candidate = replace(self.settings, parameters=parsed)
        if not candidate.auto_select:
            engine_call(candidate)
        self._update(parameters=parsed)

    # ------------------------------------------------------------------ input and files
    def set_input(self, image: Any, source: str = INPUT_ATTRIBUTE_SOURCE) -> None:
        """Validate and keep the map to restore next (a copy; the caller's array is untouched)."""
        self._keep_input(validate_map(image), source)

    def _keep_input(self, array: np.ndarray, source: str) -> None:
        with self._lock:
            self._input = array
            self._input_source = source

    def _require_root(self) -> DataRoot:
        if self._root is None:
            raise DataRootError(
                "file access is disabled: no data root is configured (DataRoot device property)"
            )
        return self._root

    def _pin_weights(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Open a ``weights`` file of the parameters inside the data root and hold it.

        The engine opens weight files by path, so the file is opened here by descriptor through
        the :class:`asirp.safe_files.DataRoot` (no link followed, nothing outside the root) and
        the parameter is replaced by the path of a :class:`asirp.safe_files.PinnedFile`, which
        opens exactly that file whatever happens in the root afterwards (``parameters_json``
        reads back that path; writing it back keeps the same file). Errors never say whether a
        file outside the root exists. The last few pinned files stay open for restorations
        and live sessions that still use them.
        """
        value = parameters.get("weights")
        if not isinstance(value, str) or not value.strip():
            return parameters
        with self._files_lock:
            for pinned in self._pins.values():
                if value == str(pinned.path):
                    return parameters
            root = self._require_root()
            try:
                pinned = root.pin(value, max_bytes=max_input_bytes())
            except FileNotFoundError as error:
                raise InputFileError(f"weights {error}") from None
            self._pins[str(pinned.path)] = pinned
            while len(self._pins) > MAX_PINNED_FILES:
                self._pins.popitem(last=False)[1].close()
        return {**parameters, "weights": str(pinned.path)}

    def resolve_path(self, path: str | os.PathLike, *, must_exist: bool) -> tuple[Path, str | None]:
        """Resolve ``path`` inside the data root (lexically: no link is followed).

        Parameters
        ----------
        path : str or os.PathLike
            Relative to the data root, or absolute inside it; ``file.h5::/dataset`` names an
            HDF5 dataset.
        must_exist : bool
            Whether the file must exist already (it is opened by descriptor to check).

        Returns
        -------
        file : pathlib.Path
            The file, inside the (resolved) data root.
        dataset : str or None
            The HDF5 dataset path, if one was given.

        Raises
        ------
        DataRootError
            When file access is disabled, the path leaves the data root, or it goes through a
            symbolic link (never followed inside the data root).
        asirp.io.InputFileError
            When ``must_exist`` and there is no such file.
        """
        root = self._require_root()
        file_part, dataset = split_hdf5_path(os.fspath(path).strip())
        if not str(path).strip():
            raise ValueError("the path is empty; give a file inside the data root")
        resolved = root.resolve(file_part)
        if must_exist:
            try:
                with root.open(file_part):
                    pass
            except FileNotFoundError as error:
                raise InputFileError(str(error)) from None
        return resolved, dataset

    def load_image(self, path: str | os.PathLike) -> Path:
        """Read a 2-D map (``.npy``, TIFF, ``file.h5::/dataset``) from the data root as the input.

        The file is opened by descriptor inside the data root and read from that descriptor
        (:mod:`asirp.safe_files`); its declared size is checked before its data are read, and
        HDF5 links or storage in other files are refused (:func:`asirp.io.read_array`).

        Returns
        -------
        pathlib.Path
            The file that was read, inside the (resolved) data root.
        """
        root = self._require_root()
        text = os.fspath(path).strip()
        if not text:
            raise ValueError("the path is empty; give a file inside the data root")
        file_part, dataset = split_hdf5_path(text)
        file = root.resolve(file_part)
        name = f"{file}::{dataset}" if dataset else str(file)
        limit = min(max_input_bytes(), DEVICE_MAX_INPUT_BYTES)
        try:
            stream = root.open_stream(file_part)
        except FileNotFoundError as error:
            raise InputFileError(str(error)) from None
        with stream:
            info = os.fstat(stream.fileno())
            identity = (info.st_dev, info.st_ino)
            image = read_stream(stream, name, max_bytes=limit)
        self._keep_input(validate_map(image, f"the image in {name}"), source=name)
        with self._files_lock:
            self._loaded[name] = identity
            self._loaded.move_to_end(name)
            while len(self._loaded) > MAX_PINNED_FILES:
                self._loaded.popitem(last=False)
        return file

    def save_result(self, path: str | os.PathLike) -> Path:
        """Write the latest result with its provenance to an HDF5 file inside the data root.

        An existing file is replaced only when the component was made with
        ``overwrite_results=True`` (the ``OverwriteResults`` device property), and the file the
        result was restored from never, even then. The write is atomic and the new file gets
        the usual permissions (``0o666`` less the server's umask).

        Returns
        -------
        pathlib.Path
            The written file, inside the (resolved) data root.

        Raises
        ------
        asirp.safe_files.OutputExistsError
            If the file exists and overwriting is not allowed.
        asirp.safe_files.ProtectedFileError
            If the file is the input of the result.
        """
        record = self.result
        if record is None:
            raise NotReady("there is no result to save yet: call Restore first")
        root = self._require_root()
        text = os.fspath(path).strip()
        if not text:
            raise ValueError("the path is empty; give a file inside the data root")
        file_part, dataset = split_hdf5_path(text)
        if dataset is not None:
            raise ValueError("SaveResult writes a whole HDF5 file; give a path without '::'")
        file = root.resolve(file_part)
        if file.suffix.lower() not in HDF5_SUFFIXES:
            raise ValueError(
                f"SaveResult writes HDF5: the file name must end with one of "
                f"{', '.join(HDF5_SUFFIXES)}, got {file.name!r}"
            )
        with self._files_lock:
            source = self._loaded.get(record.source)
        return write_restoration(
            file_part,
            record.restoration,
            input_path=record.source,
            overwrite=self._overwrite_results,
            protect=[source],
            root=root,
            hint="set the OverwriteResults device property to true to replace existing files",
        )

    # ------------------------------------------------------------------ state changes
    def _transition(self, state: ComponentState, status: str) -> None:
        """Set state and status, then tell the listeners (caller holds ``_notify_lock``)."""
        with self._lock:
            self._state, self._status = state, status
        self._call(self._state_callbacks, state, status)

    def _set_progress(self, percent: int) -> None:
        with self._notify_lock:
            with self._lock:
                if percent == self._progress:
                    return
                self._progress = percent
            self._call(self._progress_callbacks, percent)

    def request_settings(self, overrides: Mapping[str, Any] | None = None) -> Settings:
        """The current settings with ``overrides`` (for one request) validated and applied.

        Parameters
        ----------
        overrides : mapping, optional
            Any of ``method``, ``auto_select``, ``iterations``, ``beam_fwhm_um``, ``pixel_um``
            (µm) and ``parameters`` (a mapping or JSON object text; a ``weights`` file in them
            is opened in the data root, as by :meth:`set_parameters`).

        Raises
        ------
        ValueError, TypeError
            For an unknown key or an invalid value.
        """
        validators: dict[str, Callable[[Any], Any]] = {
            "method": validate_method,
            "auto_select": _validate_flag,
            "iterations": validate_iterations,
            "beam_fwhm_um": lambda value: validate_length_um(value, "beam_fwhm_um"),
            "pixel_um": lambda value: validate_length_um(value, "pixel_um"),
            # a weights file is opened inside the data root, as for set_parameters
            "parameters": lambda value: self._pin_weights(parse_parameters(value)),
        }
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(validators))
        if unknown:
            raise ValueError(f"unknown settings {unknown}; known: {sorted(validators)}")
        changes = {key: validators[key](value) for key, value in overrides.items()}
        return replace(self.settings, **changes)

    def start(
        self,
        image: Any = None,
        *,
        settings: Mapping[str, Any] | None = None,
        source: str = "Submit",
    ) -> int:
        """Start a restoration in the worker thread and return its request id at once.

        The state is ``RUNNING`` when this returns; it goes back to ``ON`` after the result is
        published, or to ``ALARM`` (reason in the status) if the restoration fails.

        Parameters
        ----------
        image : array_like, optional
            The map to restore, checked like :meth:`set_input`; the input map
            (:attr:`input_image`) is left as it is. ``None`` restores the input map.
        settings : mapping, optional
            Settings for this request only, over the current ones (see
            :meth:`request_settings`); the current settings do not change.
        source : str
            Provenance recorded for ``image`` (the input map keeps its own).

        Returns
        -------
        int
            The request id: the published :class:`ResultRecord` carries it, and
            :meth:`fetch_result` returns that result (and only that one) by it.

        Raises
        ------
        RestorationBusy
            If a restoration is already running.
        NotReady
            If there is no input map (and no ``image``).
        ValueError, TypeError
            If the image or the settings are invalid or do not fit the method (checked before
            anything starts).
        """
        array = None if image is None else validate_map(image)
        chosen = self.request_settings(settings) if settings else None
        with self._notify_lock:
            with self._lock:
                if self._job is not None:
                    raise RestorationBusy(
                        f"a restoration is already running ({self._progress} % done); wait "
                        "for the state to return to ON, or call Abort"
                    )
                if array is None and self._input is None:
                    raise NotReady("there is no input image: write input_image or call LoadImage")
                request_settings = chosen if chosen is not None else self._settings
                method, kwargs = engine_call(request_settings)
                scale = output_scale(request_settings)
                job_image = array if array is not None else self._input
                rows, cols = job_image.shape
                if max(rows, cols) * scale > MAX_SIDE_PX:
                    raise ValueError(
                        f"{request_settings.method} would return a {rows * scale}x"
                        f"{cols * scale} px map (scale {scale}); restored_image holds at most "
                        f"{MAX_SIDE_PX} px a side: restore a smaller map or use a smaller scale"
                    )
                request_id = self._next_request
                self._next_request += 1
                job = _Job(
                    image=job_image,
                    source=source if array is not None else self._input_source,
                    method=method,
                    kwargs=kwargs,
                    cancel=threading.Event(),
                    started=time.perf_counter(),
                    request_id=request_id,
                )
                self._job = job
                worker = threading.Thread(
                    target=self._run, args=(job,), name="asirp-restoration", daemon=True
                )
                self._worker = worker
            label = "auto-selected method" if method == "auto" else method
            rows, cols = job.image.shape
            self._transition(
                ComponentState.RUNNING,
                f"restoring a {rows}x{cols} px map with {label} (from {job.source})",
            )
            self._set_progress(0)
        worker.start()
        return request_id

    def _report(self, job: _Job, fraction: float) -> None:
        percent = min(99, max(0, int(100 * fraction)))
        job.progress = percent
        self._set_progress(percent)

    def _run(self, job: _Job) -> None:
        """Worker thread: run the engine, then publish the result or the failure."""
        result: Restoration | None = None
        try:
            result = self._engine(
                job.image,
                job.method,
                progress=lambda fraction: self._report(job, fraction),
                cancel=job.cancel,
                **job.kwargs,
            )
            bad = int(np.count_nonzero(~np.isfinite(result.image)))
            if bad:
                raise ValueError(f"the restoration produced {bad} NaN/Inf value(s)")
        except RestorationCancelled:
            elapsed = time.perf_counter() - job.started
            outcome = (
                ComponentState.ON,
                f"restoration aborted at {job.progress} % after {elapsed:.2f} s; the previous "
                "result is kept",
            )
            result = None
        except Exception as error:  # every engine failure is reported, none kills the thread
            _LOG.warning("restoration failed", exc_info=True)
            message = " ".join(str(error).split())
            outcome = (
                ComponentState.ALARM,
                f"restoration failed: {type(error).__name__}: {message}; the previous result "
                "is kept (fix the input or settings and Restore again, or Reset)",
            )
            result = None
        else:
            outcome = (ComponentState.ON, "")
        with self._notify_lock:
            if result is not None:
                record = self._publish(
                    result, job.source, time.perf_counter() - job.started, job.request_id
                )
                self._set_progress(100)
                outcome = (ComponentState.ON, _describe(record))
            with self._lock:
                if result is None:
                    self._failures[job.request_id] = outcome[1]
                    while len(self._failures) > RESULT_CACHE_SIZE:
                        self._failures.popitem(last=False)
                self._job = None
                self._worker = None
            self._transition(*outcome)

    def _publish(
        self,
        restoration: Restoration,
        source: str,
        duration_s: float,
        request_id: int | None = None,
    ) -> ResultRecord:
        """Record ``restoration`` as the latest result, keep it by request id, tell listeners.

        ``request_id`` is the id of the request it answers; ``None`` (a live result) takes a
        fresh one.
        """
        restoration.image.flags.writeable = False
        with self._notify_lock:
            with self._lock:
                if request_id is None:
                    request_id = self._next_request
                    self._next_request += 1
                self._sequence += 1
                record = ResultRecord(restoration, self._sequence, source, duration_s, request_id)
                self._result = record
                self._results[request_id] = record
                self._trim_results()
            self._call(self._result_callbacks, record)
        return record

    def _trim_results(self) -> None:
        """Drop the oldest kept results beyond the count and byte budgets (caller locks)."""
        total = sum(record.restoration.image.nbytes for record in self._results.values())
        while len(self._results) > 1 and (
            len(self._results) > RESULT_CACHE_SIZE or total > RESULT_CACHE_BYTES
        ):
            _, dropped = self._results.popitem(last=False)
            total -= dropped.restoration.image.nbytes

    def fetch_result(self, request_id: int) -> ResultRecord:
        """The result of request ``request_id``, whichever results came after it.

        Raises
        ------
        NotReady
            While that request is still running.
        RequestFailed
            If it ended without a result (failed or aborted; the message says why).
        UnknownRequest
            If no such request was made, or its result is no longer kept (only the latest
            :data:`RESULT_CACHE_SIZE`, within :data:`RESULT_CACHE_BYTES`).
        """
        if isinstance(request_id, bool) or not isinstance(request_id, int | np.integer):
            raise TypeError(f"a request id is an integer, got {request_id!r}")
        request_id = int(request_id)
        with self._lock:
            record = self._results.get(request_id)
            if record is not None:
                return record
            if self._job is not None and self._job.request_id == request_id:
                raise NotReady(
                    f"request {request_id} is still running ({self._progress} % done); "
                    "fetch it again when it ends"
                )
            failure = self._failures.get(request_id)
            issued = self._first_request <= request_id < self._next_request
        if failure is not None:
            raise RequestFailed(f"request {request_id} has no result: {failure}")
        if issued:
            raise UnknownRequest(
                f"the result of request {request_id} is no longer kept (only the latest "
                f"{RESULT_CACHE_SIZE} results are); restore the map again"
            )
        raise UnknownRequest(f"there is no request {request_id} (not issued by this device)")

    def publish_result(self, restoration: Restoration, source: str) -> ResultRecord:
        """Publish a restoration made elsewhere (live mode) as the latest result.

        Listeners get it exactly like the result of :meth:`start`. The state does not change,
        except that an ``ALARM`` (a failed restoration) returns to ``ON`` with this result in
        the status, unless a restoration of this component is running (its outcome decides).

        Parameters
        ----------
        restoration : asirp.Restoration
            A 2-D result (``restoration.image`` float32 ``(H, W)``).
        source : str
            What produced it (for example the scan's run uid), kept as provenance.

        Returns
        -------
        ResultRecord
            The published record, with its sequence number.
        """
        validate_map(restoration.image, "the restored image")
        with self._notify_lock:
            record = self._publish(restoration, source, float(restoration.elapsed_s))
            with self._lock:
                clear = self._state is ComponentState.ALARM and self._job is None
            if clear:
                self._transition(ComponentState.ON, _describe(record))
        return record

    def report_failure(self, reason: str) -> bool:
        """Enter ``ALARM`` for a restoration that failed elsewhere (live mode).

        Parameters
        ----------
        reason : str
            The status line: what failed and why.

        Returns
        -------
        bool
            Whether the state changed to ``ALARM``; it does not while a restoration of this
            component is running (the outcome of that one decides the state).
        """
        with self._notify_lock:
            with self._lock:
                if self._job is not None:
                    return False
            self._transition(ComponentState.ALARM, " ".join(str(reason).split()))
        return True

    def abort(self) -> bool:
        """Ask the running restoration to stop; return whether one was running.

        It does not wait: the engine stops at its next iteration and the state returns to
        ``ON`` with the previous result kept.
        """
        with self._lock:
            job = self._job
        if job is None:
            return False
        job.cancel.set()
        return True

    def reset(self) -> None:
        """Clear an ``ALARM`` (and the progress) and return to ``ON``; keep input and result.

        Raises
        ------
        RestorationBusy
            While a restoration is running (call :meth:`abort` first).
        """
        with self._notify_lock:
            with self._lock:
                if self._job is not None:
                    raise RestorationBusy(
                        "cannot Reset while a restoration is running; call Abort first"
                    )
                record = self._result
            self._set_progress(0)
            status = _describe(record) if record is not None else "ready after Reset"
            self._transition(ComponentState.ON, status)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running restoration (if any) to end; return whether it has ended."""
        with self._lock:
            worker = self._worker
        if worker is None:
            return True
        worker.join(timeout)
        return not worker.is_alive()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Abort any running restoration and wait up to ``timeout`` s for the worker to end."""
        self.abort()
        self.wait(timeout)


def _validate_flag(value: Any) -> bool:
    """Return ``value`` as a bool if it is one, else raise a clear error."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"auto_select must be true or false, got {value!r}")
    return bool(value)


def _describe(record: ResultRecord) -> str:
    """Status line for a result, with the engine's cautions."""
    restoration = record.restoration
    rows, cols = restoration.image.shape[-2:]
    iterations = restoration.params.get("iterations_run")
    run = f" (iterations run: {iterations})" if isinstance(iterations, int) else ""
    reason = restoration.params.get("auto_reason")
    why = f"; auto: {reason}" if reason else ""
    caution = "".join(f"; CAUTION: {note}" for note in restoration.cautions())
    return (
        f"result #{record.sequence}: {rows}x{cols} px restored with {restoration.method}{run} "
        f"in {record.duration_s:.2f} s (from {record.source}){caution}{why}"
    )

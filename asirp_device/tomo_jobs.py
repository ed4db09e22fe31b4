"""Tomography reconstructions run by the device (``ReconstructTomo``), without Tango.

:class:`TomoJobs` takes the command's JSON argument, checks it at once (the JSON, its keys and
numbers, the method, both paths against the data root, the input opened by descriptor, an
existing output), and runs :func:`asirp.tomo.pipeline.run_tomo` confined to the data root in
the component's worker slot (:meth:`asirp_device.component.RestorationComponent.start_task`):
one job at a time, restorations included, ``RUNNING`` while it runs, its progress the
component's, ``Abort`` stops it at its next step. It keeps each reconstruction's outcome by
request id (for ``longRunningCommandResult``) and the latest written volume file.

The argument, a JSON object (only ``input`` and ``output`` are required)::

    {"input": "scans/s.h5", "output": "volumes/s.nxs", "method": "auto",
     "psf_fwhm_px": 2.0, "pixel_um": 0.65, "centre": 310.5, "overwrite": false}

``psf_fwhm_um`` may replace ``psf_fwhm_px`` (not both). ``overwrite`` replaces an existing
output only where the device allows it (its ``OverwriteResults`` property); the input is never
replaced.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from asirp.io import HDF5_SUFFIXES
from asirp.registry import RestorationCancelled, available_methods
from asirp.safe_files import DataRoot, DataRootError, OutputExistsError, ProtectedFileError
from asirp.tomo.pipeline import TomoResult, run_tomo
from asirp.tomo.restore_projections import NO_RESTORATION
from asirp_device.component import NotReady, RestorationComponent
from asirp_device.long_commands import ABORTED, COMPLETED, FAILED, KEPT_COMMANDS

_LOG = logging.getLogger(__name__)

WHAT = "tomography reconstruction"

REQUIRED_KEYS = ("input", "output")
OPTIONAL_KEYS = ("method", "psf_fwhm_px", "psf_fwhm_um", "pixel_um", "centre", "overwrite")

MAX_ARGUMENT_CHARS = 4096
"""Longest JSON argument accepted, characters."""
MAX_PSF_FWHM_PX = 256.0
"""Largest detector PSF FWHM accepted, px (a blur wider than this is not a PSF to undo)."""
MAX_LENGTH_UM = 100_000.0
"""Largest PSF FWHM or pixel size accepted, µm (10 cm)."""
MAX_CENTRE_PX = 65_536.0
"""Largest rotation centre accepted, detector columns (run_tomo checks it against the width)."""

Runner = Callable[..., TomoResult]


@dataclass(frozen=True)
class TomoRequest:
    """A checked ``ReconstructTomo`` argument.

    Attributes
    ----------
    input, output : str
        Paths inside the data root (relative, or absolute inside it).
    method : str
        ``"auto"``, ``"none"`` or a registered method.
    psf_fwhm_px, psf_fwhm_um : float or None
        Detector PSF FWHM along the row, px or µm (at most one).
    pixel_um : float or None
        Detector pixel, µm (default: the file's).
    centre : float or None
        Rotation axis, detector columns (default: found).
    overwrite : bool
        Replace an existing output.
    """

    input: str
    output: str
    method: str = "auto"
    psf_fwhm_px: float | None = None
    psf_fwhm_um: float | None = None
    pixel_um: float | None = None
    centre: float | None = None
    overwrite: bool = False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"the argument gives {', '.join(repeated)} more than once")
    return dict(pairs)


def _path(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f'"{key}" must be a non-empty path inside the data root, got {value!r}')
    return value.strip()


def _number(value: Any, key: str, *, low: float, high: float, unit: str, zero: bool) -> float:
    """A finite number in ``[low, high]`` (``(low, high]`` unless ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f'"{key}" must be a number of {unit}, got {value!r}')
    number = float(value)
    above = number >= low if zero else number > low
    if not (math.isfinite(number) and above and number <= high):
        side = ">=" if zero else ">"
        raise ValueError(f'"{key}" must be {side} {low:g} and <= {high:g} {unit}, got {value!r}')
    return number


def parse_request(text: Any) -> TomoRequest:
    """Check a ``ReconstructTomo`` argument (module notes) without touching any file.

    Raises
    ------
    ValueError, TypeError
        Not a JSON object, an unknown or repeated key, a missing path, an unknown method, a
        number that is not finite or out of its range, both PSF sizes, a non-boolean
        ``overwrite``, or an output that is not HDF5 (one sentence each).
    """
    if not isinstance(text, str):
        raise TypeError(f"the argument must be JSON text, got {type(text).__name__}")
    if len(text) > MAX_ARGUMENT_CHARS:
        raise ValueError(f"the argument is {len(text)} characters; at most {MAX_ARGUMENT_CHARS}")
    try:
        given = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as error:
        raise ValueError(f"the argument is not valid JSON: {error}") from None
    if not isinstance(given, dict):
        raise TypeError(f"the argument must be a JSON object, got {type(given).__name__}")
    unknown = sorted(set(given) - {*REQUIRED_KEYS, *OPTIONAL_KEYS})
    if unknown:
        known_keys = ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {known_keys}")
    missing = [key for key in REQUIRED_KEYS if key not in given]
    if missing:
        raise ValueError(f"the argument needs {' and '.join(repr(key) for key in missing)}")
    method = given.get("method", "auto")
    known = ("auto", NO_RESTORATION, *available_methods())
    if not isinstance(method, str) or method not in known:
        raise ValueError(
            f'unknown method {method!r}; use "auto", "{NO_RESTORATION}" or one of '
            f"{', '.join(available_methods())}"
        )
    if "psf_fwhm_px" in given and "psf_fwhm_um" in given:
        raise ValueError('give "psf_fwhm_px" or "psf_fwhm_um", not both')
    overwrite = given.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise TypeError(f'"overwrite" must be true or false, got {overwrite!r}')
    limits = {
        "psf_fwhm_px": (0.0, MAX_PSF_FWHM_PX, "px", False),
        "psf_fwhm_um": (0.0, MAX_LENGTH_UM, "µm", False),
        "pixel_um": (0.0, MAX_LENGTH_UM, "µm", False),
        "centre": (0.0, MAX_CENTRE_PX, "px", True),
    }
    numbers = {
        key: _number(given[key], key, low=low, high=high, unit=unit, zero=zero)
        for key, (low, high, unit, zero) in limits.items()
        if given.get(key) is not None
    }
    output = _path(given["output"], "output")
    if not output.lower().endswith(HDF5_SUFFIXES):
        raise ValueError(
            f"the output is a NeXus/HDF5 file: its name must end with one of "
            f"{', '.join(HDF5_SUFFIXES)}, got {output!r}"
        )
    return TomoRequest(
        input=_path(given["input"], "input"),
        output=output,
        method=method,
        overwrite=overwrite,
        **numbers,
    )


def _refuse_links(root: DataRoot, path: str) -> None:
    """Refuse at once a path whose existing components include a symbolic link.

    Only an early, clear error: the write itself opens every folder with ``O_NOFOLLOW``
    (:meth:`asirp.safe_files.DataRoot.atomic_write`), so a link made after this check is
    refused there too.
    """
    current = root.path
    for part in root.parts(path):
        current = current / part
        try:
            if current.is_symlink():
                raise DataRootError(
                    f"{path!r} goes through a symbolic link: links are not followed in the data "
                    "root (they could lead outside it); use the real file or folder"
                )
        except OSError:
            return  # not a folder on the way: the write will say so
        if not current.exists():
            return


class TomoJobs:
    """``ReconstructTomo`` for one component: checks, runs, and remembers outcomes.

    Parameters
    ----------
    component : RestorationComponent
        Its data root confines the files; its worker slot runs the reconstruction (one job at
        a time, restorations included).
    allow_overwrite : bool
        Whether ``"overwrite": true`` is allowed (the ``OverwriteResults`` device property).
    runner : callable
        :func:`asirp.tomo.pipeline.run_tomo` (same signature; tests may pass another).
    """

    def __init__(
        self,
        component: RestorationComponent,
        *,
        allow_overwrite: bool = False,
        runner: Runner = run_tomo,
    ) -> None:
        self._component = component
        self._allow_overwrite = bool(allow_overwrite)
        self._runner = runner
        self._lock = threading.Lock()
        self._outcomes: OrderedDict[int, dict[str, Any] | None] = OrderedDict()
        self._last_output = ""
        self._output_callbacks: list[Callable[[str], None]] = []

    def add_output_callback(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(path)`` (from the worker) after each volume file is written."""
        self._output_callbacks.append(callback)

    @property
    def last_output(self) -> str:
        """The latest volume file written (resolved path), or ``""`` before one."""
        with self._lock:
            return self._last_output

    def outcome(self, request_id: int) -> dict[str, Any] | None:
        """The outcome of reconstruction ``request_id``, or ``None`` if it is not one.

        Returns
        -------
        dict or None
            ``{"status": COMPLETED, "output", "input", "method", "method_requested",
            "centre_px", "centre_source", "cautions", "elapsed_s"}``, or
            ``{"status": FAILED or ABORTED, "reason"}``.

        Raises
        ------
        asirp_device.component.NotReady
            While it runs.
        """
        with self._lock:
            if int(request_id) not in self._outcomes:
                return None
            outcome = self._outcomes[int(request_id)]
        if outcome is None:
            raise NotReady(f"reconstruction {request_id} is still running")
        return dict(outcome)

    def check(self, text: Any) -> tuple[TomoRequest, DataRoot]:
        """Check an argument and its files now (nothing starts); see :meth:`start`."""
        request = parse_request(text)
        if request.overwrite and not self._allow_overwrite:
            raise ValueError(
                '"overwrite": true is not allowed on this device: set its OverwriteResults '
                "property to true, or choose a new output file"
            )
        root = self._component.require_data_root()
        _refuse_links(root, request.output)
        try:
            with root.open(request.input) as stream:  # by descriptor: no link, inside the root
                info = os.fstat(stream.fileno())
        except FileNotFoundError as error:
            raise FileNotFoundError(f"tomography input {error}") from None
        target = root.identity(request.output)
        if target == (info.st_dev, info.st_ino):
            raise ProtectedFileError(
                f"the output {request.output!r} is the input; it is never replaced: choose "
                "another output file"
            )
        if target is not None and not request.overwrite:
            raise OutputExistsError(
                f"{request.output!r} already exists in the data root and is not replaced; "
                'choose a new file (or "overwrite": true where OverwriteResults allows it)'
            )
        return request, root

    def start(self, text: Any) -> int:
        """Check ``text`` (module notes) and start the reconstruction; return its request id.

        Raises
        ------
        ValueError, TypeError
            A malformed argument (see :func:`parse_request`), or ``overwrite`` not allowed.
        asirp.safe_files.DataRootError
            A path outside the data root or through a link, or no data root.
        FileNotFoundError, OSError
            A missing or unreadable input.
        asirp.safe_files.OutputExistsError
            The output exists (without ``overwrite``), or is the input.
        asirp_device.component.RestorationBusy
            A restoration or reconstruction is running.
        """
        request, root = self.check(text)
        status = f"reconstructing {request.input} into {request.output} (method {request.method})"
        return self._component.start_task(
            lambda request_id, progress, cancel: self._run(
                request, root, request_id, progress, cancel
            ),
            what=WHAT,
            status=status,
        )

    def _keep(self, request_id: int, outcome: dict[str, Any] | None) -> None:
        with self._lock:
            self._outcomes[request_id] = outcome
            while len(self._outcomes) > KEPT_COMMANDS:
                self._outcomes.popitem(last=False)

    def _run(
        self,
        request: TomoRequest,
        root: DataRoot,
        request_id: int,
        progress: Callable[[float], None],
        cancel: threading.Event,
    ) -> str:
        """Worker thread: run the reconstruction; record its outcome before returning."""
        self._keep(request_id, None)  # known as running before the component settles it

        def report(fraction: float) -> None:
            if cancel.is_set():  # run_tomo reports between steps and after every block
                raise RestorationCancelled("the reconstruction was aborted")
            progress(fraction)

        try:
            result = self._runner(
                request.input,
                request.output,
                method=request.method,
                psf_fwhm_px=request.psf_fwhm_px,
                psf_fwhm_um=request.psf_fwhm_um,
                pixel_um=request.pixel_um,
                centre=request.centre,
                device=self._component.settings.compute_device,
                overwrite=request.overwrite,
                progress=report,
                data_root=root,
            )
        except RestorationCancelled:
            self._keep(
                request_id, {"status": ABORTED, "reason": "aborted (Abort); nothing written"}
            )
            raise
        except Exception as error:
            message = " ".join(str(error).split())
            reason = f"{type(error).__name__}: {message}"
            self._keep(request_id, {"status": FAILED, "reason": reason})
            raise
        output = str(result.output)
        outcome = {
            "status": COMPLETED,
            "input": str(root.resolve(request.input)),
            "output": output,
            "method": result.plan.method,
            "method_requested": request.method,
            "centre_px": float(result.centre_px),
            "centre_source": result.centre_source,
            "cautions": list(result.cautions),
            "elapsed_s": round(float(result.elapsed_s), 3),
            "volume_shape": list(np.shape(result.raw)),
        }
        self._keep(request_id, outcome)
        with self._lock:
            self._last_output = output
        for callback in list(self._output_callbacks):
            try:
                callback(output)
            except Exception:  # a broken listener must not fail a written reconstruction
                _LOG.exception("listener %r failed", callback)
        caution = "".join(f"; CAUTION: {note}" for note in result.cautions)
        return (
            f"tomography volume written to {output} (method {result.plan.method}, centre "
            f"{result.centre_px:.2f} px {result.centre_source}, {result.elapsed_s:.1f} s){caution}"
        )


def outcome_or_result(
    jobs: TomoJobs | None, fetch: Callable[[int], Any]
) -> Callable[[int], Mapping[str, Any] | Any]:
    """A ``fetch`` for :meth:`asirp_device.long_commands.LongCommands.settle`.

    A reconstruction's outcome from ``jobs``, else ``fetch(request_id)`` (the component's
    ``fetch_result``).
    """

    def find(request_id: int) -> Any:
        outcome = jobs.outcome(request_id) if jobs is not None else None
        return outcome if outcome is not None else fetch(request_id)

    return find

"""The ``ASIRP`` Tango device: a thin shell over the restoration component.

Run it as ``ASIRP <instance>`` (the console script), registered in a Tango database as class
``ASIRP`` in server ``ASIRP/<instance>``; ``asirp serve`` does the registration (and starts an
sqlite database when there is no ``TANGO_HOST``).

Conventions: commands are PascalCase, attributes snake_case. Input and setting errors raise
``DevFailed`` with one of these reasons, and the device stays as it was:

``ASIRP_InvalidInput``
    A wrong-shaped or non-finite image, an unknown method, iterations <= 0, bad parameters.
``ASIRP_Busy``
    ``Restore``, ``Submit``, ``ReconstructTomo`` or ``Reset`` while a restoration or a
    tomography reconstruction is running.
``ASIRP_NotReady``
    ``Restore`` without an input image, ``SaveResult`` without a result.
``ASIRP_DataRoot``
    A path outside the data root, through a symbolic link (none is followed in the data root),
    an HDF5 file that would make the device read another file (external link, virtual
    dataset, external storage), or no data root configured.
``ASIRP_Exists``
    ``SaveResult`` onto an existing file while ``OverwriteResults`` is false, or onto the file
    the result was restored from (never replaced).
``ASIRP_FileError``
    A missing or unreadable file, or a write that failed.
``ASIRP_Fault``
    The device is in ``FAULT`` (its component could not be built; the status says why).
``ASIRP_LiveActive``
    ``StartLive`` while live mode runs, or a change of ``live_field``/``live_normalize`` then;
    ``StartTemporalLive`` while temporal live mode runs.
``ASIRP_LiveError``
    Live mode (or temporal live mode) could not start (the tiled server of ``TiledUri``, the
    monitor or the subscription failed).
``ASIRP_UnknownRequest``
    ``FetchResult`` of a request id this device never gave, or whose result is no longer kept
    (the latest 16 are).
``ASIRP_RequestFailed``
    ``FetchResult`` of a request that ended without a result (failed or aborted).
``ASIRP_UnknownRun``
    ``LiveResultOf`` a run that live mode never saw (or no longer remembers: the latest 64).
``ASIRP_LiveFailed``
    ``LiveResultOf`` a run whose final live restoration failed, or that was not restored (not
    a map, no point mapped, live mode ended first).

``ASIRP_NotReady`` also answers ``LiveResultOf`` while the run's final restoration has not
arrived.

Requests: ``Restore`` and ``Submit`` return a request id (DevLong64); each result carries the id
of the request it answers (``result_id``, pushed before ``restored_image``, and ``request_id``
in ``metrics_json``), and ``FetchResult(id)`` returns the result of exactly that request, so
several clients never read each other's maps: ``Submit`` the map (and settings) in one call,
retry on ``ASIRP_Busy``, then ``FetchResult`` until it stops raising ``ASIRP_NotReady``.

States (Tango's meanings): ``ON`` (ready), ``RUNNING`` (restoring; ``Restore`` is refused),
``ALARM`` (an attribute is outside its alarm limits, e.g. ``contrast_std`` with ``max_alarm``
set through ``set_attribute_config``), ``FAULT`` (bad device properties: fix them and run
``Init``). A failed restoration (local or live) is not an alarm: ``restoration_outcome`` says
``failed`` and the first line of ``Status`` gives the reason. Change and archive events are
pushed by the code for ``State``, ``Status``, the outcome, every result attribute (plus a
data-ready event on ``restored_image``, counter = result number), the settings after a write,
``progress``, the live counters, the ``change_*`` attributes and the long-running-command
attributes; scalars carry ``abs_change``/``archive_abs_change`` criteria (see docs/TANGO.md).

Settings (``method``, ``auto_select``, ``iterations``, ``beam_fwhm_um``, ``pixel_um``,
``parameters_json``, ``live_field``, ``live_normalize``) are memorized, survive ``Init`` (with
the input map) and a restart, and their write values equal their read values. ``Restore`` and
``Submit`` are followed by ska-tango-base's ``longRunningCommandStatus``/``Progress``/
``Result`` attributes, by request id (:mod:`asirp_device.long_commands`). Tango logging: INFO
on start, accepted commands, results and writes; ERROR on a failure. ``versionId`` and
``buildState`` say what runs.

Live mode (``StartLive(address)`` / ``StopLive``, see :mod:`asirp_device.live`) restores the map
scans of a bluesky 0MQ document stream and publishes every restored map (partial ones every
``LiveEveryRows`` rows, then the final one of each run) like a local result; it does not change
the state (ON between and during scans); a failed final restoration is the outcome ``failed``.
``Restore`` stays allowed while live: both publish to ``restored_image`` as their results come.
While live, ``Status`` has a second line on live mode. ``LiveResultOf(run_uid)`` gives the
request id of a run's final live result: ``FetchResult`` of it returns the restoration live
mode made (and stored in tiled as the derived run ``derived_uid`` of its header), so a client
never restores that map again.

Tomography: ``ReconstructTomo(json)`` reconstructs a Data Exchange or NXtomo scan in the data
root into a NeXus volume there (:mod:`asirp_device.tomo_jobs`, over
:func:`asirp.tomo.pipeline.run_tomo`): checked at once, then run in the worker like a
restoration (``RUNNING``, ``progress``, the long-command attributes, ``Abort``); the latest file
written is ``tomo_last_output``.

Temporal live mode (``StartTemporalLive(address)`` / ``StopTemporalLive``, see
:mod:`asirp_device.temporal_live`) follows the powder-diffraction frames of temperature ramps
(runs with ``asirp_temporal`` metadata) from a bluesky 0MQ proxy: each frame is integrated,
restored and scored, and a change of shape (a phase transition) raises a *change alarm*. It is
independent of map live mode (both may run, from the same proxy). The ``change_*`` attributes
show it (score, CUSUM and frames of the current run; count, frame, time, temperature and JSON
of the latest alarm), with change and archive events pushed as they change; a plan reads them
through :class:`asirp_device.client.ASIRPChangeClient`. A change alarm is a result, not a
failure: it shows in ``Status`` and ``change_alarm``, and the state stays ``ON``; a failure of
temporal live mode (its subscription died) is the outcome ``failed``. The ``xrd_*`` attributes
(memorized) are the analysis settings used when a run's metadata gives none; they apply from
the next ``StartTemporalLive``.

This module is one job, the Tango interface: the device class declares every property,
attribute and command with its documentation (most of its ~790 lines). The work is done by the
component (:mod:`asirp_device.component`), and the values the attributes and ``FetchResult``
return are computed, without Tango, by :mod:`asirp_device.values`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property, run

import asirp
from asirp.io import InputFileError, InputTooLargeError, UnsafeInputError
from asirp.safe_files import DataRootError, OutputExistsError
from asirp_device import SERVER_NAME
from asirp_device.component import ComponentState, NotReady, RestorationBusy, RestorationComponent
from asirp_device.live import (
    LiveBusy,
    LiveError,
    LiveMode,
    LiveOptions,
    LiveRunFailed,
    UnknownRun,
)
from asirp_device.long_commands import LongCommands
from asirp_device.requests import RequestFailed, ResultRecord, UnknownRequest
from asirp_device.settings import MAX_SIDE_PX, Settings
from asirp_device.temporal_live import (
    CHANGE_FIELDS,
    MAX_BINS,
    MIN_BINS,
    MIN_FALSE_ALARM_INTERVAL,
    ChangeValues,
    TemporalBusy,
    TemporalError,
    TemporalLiveMode,
    TemporalOptions,
)
from asirp_device.tomo_jobs import TomoJobs, outcome_or_result
from asirp_device.values import (
    MAX_CAUTIONS,
    METRIC_ATTRIBUTES,
    RESULT_ATTRIBUTES,
    fetch_reply,
    input_value,
    parameters_json,
    result_values,
)
from asirp_device.wire import decode_map

_LOG = logging.getLogger(__name__)

CHANGE_ATTRIBUTES = {name: f"change_{name}" for name in CHANGE_FIELDS}
"""Temporal live mode's :class:`ChangeValues` fields and their device attributes."""

_STATES = {
    ComponentState.ON: DevState.ON,
    ComponentState.RUNNING: DevState.RUNNING,
    # a failed restoration is an outcome (restoration_outcome, reason in Status), not an
    # attribute alarm: Tango's ALARM means an attribute is outside its alarm limits
    ComponentState.ALARM: DevState.ON,
}

SETTING_ATTRIBUTES = (
    "method",
    "auto_select",
    "iterations",
    "beam_fwhm_um",
    "pixel_um",
    "parameters_json",
    "live_field",
    "live_normalize",
)
"""The operator's settings: memorized, kept across Init, change and archive events on write."""

_TEXT_SETTINGS = frozenset({"method", "parameters_json", "live_field", "live_normalize"})

LIVE_COUNTER_ATTRIBUTES = ("live_runs_restored", "live_documents")
"""Live mode's counters (change and archive events, with abs_change criteria)."""

ALARM_CHECKED_RESULTS = (*METRIC_ATTRIBUTES, "iterations_run", "last_duration_ms")
"""Result scalars checked against their alarm limits after every result (State follows)."""

_NO_LIMIT = frozenset({"", "not specified", "nan"})


def _alarm_limit(limit: Any) -> float | None:
    """An alarm limit as Tango's configuration gives it (text or number), or None when unset."""
    text = str(limit).strip().lower()
    if text in _NO_LIMIT:
        return None
    try:
        return float(text)
    except ValueError:
        return None


LONG_COMMAND_ATTRIBUTES = (
    "longRunningCommandStatus",
    "longRunningCommandProgress",
    "longRunningCommandResult",
)
"""ska-tango-base's long-running-command attributes (change events pushed by the code)."""


@dataclass(frozen=True)
class _Carried:
    """What ``Init`` keeps: the operator's settings and the input map."""

    settings: Settings
    input_image: np.ndarray | None
    input_source: str
    live_field: str
    live_normalize: str


def _throw(reason: str, error: BaseException, origin: str) -> None:
    """Raise ``DevFailed`` with ``reason`` and the error's message as the description."""
    message = " ".join(str(error).split()) or type(error).__name__
    tango.Except.throw_exception(reason, message, origin)


@contextlib.contextmanager
def _tango_errors(origin: str) -> Iterator[None]:
    """Map the component's errors to ``DevFailed`` with a reason code and a clear message."""
    try:
        yield
    except tango.DevFailed:
        raise
    except (LiveBusy, TemporalBusy) as error:
        _throw("ASIRP_LiveActive", error, origin)
    except (LiveError, TemporalError) as error:
        _throw("ASIRP_LiveError", error, origin)
    except RestorationBusy as error:
        _throw("ASIRP_Busy", error, origin)
    except UnknownRequest as error:
        _throw("ASIRP_UnknownRequest", error, origin)
    except RequestFailed as error:
        _throw("ASIRP_RequestFailed", error, origin)
    except UnknownRun as error:
        _throw("ASIRP_UnknownRun", error, origin)
    except LiveRunFailed as error:
        _throw("ASIRP_LiveFailed", error, origin)
    except NotReady as error:
        _throw("ASIRP_NotReady", error, origin)
    except (DataRootError, UnsafeInputError) as error:
        _throw("ASIRP_DataRoot", error, origin)
    except OutputExistsError as error:
        _throw("ASIRP_Exists", error, origin)
    except InputTooLargeError as error:
        _throw("ASIRP_InvalidInput", error, origin)
    except (InputFileError, OSError) as error:
        _throw("ASIRP_FileError", error, origin)
    except (ValueError, TypeError) as error:
        _throw("ASIRP_InvalidInput", error, origin)


class _EventPublisher:
    """Pushes the device's events, in order, from one omniORB-aware thread.

    The component calls its listeners from whatever thread changed something (a Tango request
    thread, or the worker). Pushing a Tango event takes the device's serialisation monitor, so
    the listeners only queue the push; this thread does it. Nothing ever waits for this thread
    while holding the monitor, so pushes cannot deadlock with requests.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="asirp-events", daemon=True)
        self._thread.start()

    def submit(self, push: Callable[..., None], *args: Any) -> None:
        """Queue ``push(*args)``."""
        if not self._closed.is_set():
            self._queue.put((push, args))

    def _loop(self) -> None:
        with tango.EnsureOmniThread():
            while True:
                item = self._queue.get()
                if item is None or self._closed.is_set():
                    return
                push, args = item
                try:
                    push(*args)
                except Exception:  # a failed push (no client, shutdown) must not stop the rest
                    _LOG.warning("pushing an event failed", exc_info=True)

    def close(self, timeout: float = 1.0) -> None:
        """Drop what is still queued and stop the thread (waits at most ``timeout`` s)."""
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout)


class ASIRP(Device):
    """Restores synchrotron maps with the ASIRP engine (one 2-D map at a time).

    Write ``input_image`` (or ``LoadImage``), set ``method``/``iterations``/``beam_fwhm_um``/
    ``pixel_um``, call ``Restore``: the state is ``RUNNING`` until the result is published
    (change and data-ready events on ``restored_image``), then ``ON``.
    """

    # ------------------------------------------------------------------ properties
    # The settings have no Tango min/max: the device checks them and refuses a bad value with
    # ASIRP_InvalidInput and the reason (Tango's API_WAttrOutsideLimit would name no way out).
    # property and command docs are plain ASCII ("um"): Tango tools show them through
    # Latin-1 strings, where a UTF-8 "µ" became "Âµ" (attribute units round-trip, see tests)
    DataRoot = device_property(
        dtype=str,
        default_value="",
        doc="Folder that LoadImage, SaveResult and a weights file in parameters_json are "
        "confined to (no symbolic link inside it is followed); empty disables file access.",
    )
    OverwriteResults = device_property(
        dtype=bool,
        default_value=False,
        doc="Let SaveResult replace an existing file (never the file the result came from).",
    )
    DefaultMethod = device_property(
        dtype=str, default_value="richardson_lucy", doc="Initial value of method."
    )
    DefaultAutoSelect = device_property(
        dtype=bool, default_value=False, doc="Initial value of auto_select."
    )
    DefaultIterations = device_property(
        dtype=int, default_value=100, doc="Initial value of iterations (1 to 100000)."
    )
    DefaultBeamFwhmUm = device_property(
        dtype=float, default_value=50.0, doc="Initial beam FWHM, um (micrometres)."
    )
    DefaultPixelUm = device_property(
        dtype=float, default_value=10.0, doc="Initial scan step (pixel size), um (micrometres)."
    )
    DefaultParameters = device_property(
        dtype=str, default_value="{}", doc="Initial parameters_json (a JSON object)."
    )
    ComputeDevice = device_property(
        dtype=str, default_value="auto", doc="Where the engine computes: auto, cpu or cuda."
    )
    TiledUri = device_property(
        dtype=str,
        default_value="",
        doc="URI of the tiled server that receives restored runs (read back as tiled_uri); "
        "live mode writes each scan's derived run there (key: $TILED_API_KEY).",
    )
    LiveAddress = device_property(
        dtype=str,
        default_value="",
        doc="HOST:PORT of a bluesky 0MQ proxy's output: live mode starts with the device "
        "(empty: only with StartLive); if it cannot start, restoration_outcome is failed with the "
        "reason and StartLive can be tried again.",
    )
    LiveField = device_property(
        dtype=str,
        default_value="",
        doc="Initial live_field: event field mapped in live mode (several: comma-separated).",
    )
    LiveNormalize = device_property(
        dtype=str, default_value="", doc="Initial live_normalize: flux-monitor field, e.g. i0."
    )
    LiveEveryRows = device_property(
        dtype=int,
        default_value=8,
        doc="Live mode restores and publishes the partial map every N rows (0: final maps only).",
    )
    LivePositionScaleUm = device_property(
        dtype=float,
        default_value=1.0,
        doc="um (micrometres) per motor unit of the live scans (1 for um stages, 1000 for mm "
        "stages).",
    )
    LiveAllowPickle = device_property(
        dtype=bool,
        default_value=False,
        doc="Live mode also reads pickled documents (bluesky's default Publisher). Unpickling "
        "runs code chosen by the sender: this trusts every publisher that can reach the proxy "
        "(and any proxy a client names in StartLive) to run code in this server. Default: "
        "msgpack only (Publisher(..., serializer=callbacks.serialization.serializer)). "
        "Applies to temporal live mode too.",
    )
    TemporalLiveAddress = device_property(
        dtype=str,
        default_value="",
        doc="HOST:PORT of a bluesky 0MQ proxy's output: temporal live mode starts with the "
        "device (empty: only with StartTemporalLive); if it cannot start, the device is in "
        "failed (restoration_outcome) with the reason and StartTemporalLive can be tried again.",
    )

    # ------------------------------------------------------------------ life cycle
    def init_device(self) -> None:
        """Build the component from the properties; ``FAULT`` (reason in Status) if it fails."""
        self._component: RestorationComponent | None = None
        self._live: LiveMode | None = None
        self._temporal: TemporalLiveMode | None = None
        self._tomo: TomoJobs | None = None
        self._pushed_change = ChangeValues()  # what the events last said (event thread only)
        self._pushed_state = DevState.UNKNOWN  # the State the events last said (event thread)
        self._fault = ""
        self._publisher = _EventPublisher()
        self._commands = LongCommands()
        carried: _Carried | None = getattr(self, "_carried", None)  # set by an Init's delete
        self._carried = None
        try:
            super().init_device()
            self._declare_events()
            settings = Settings(
                method=self.DefaultMethod,
                auto_select=self.DefaultAutoSelect,
                iterations=self.DefaultIterations,
                beam_fwhm_um=self.DefaultBeamFwhmUm,
                pixel_um=self.DefaultPixelUm,
                parameters=self.DefaultParameters,
                compute_device=self.ComputeDevice,
            )
            component = RestorationComponent(  # bad properties: FAULT, even on an Init
                settings,
                data_root=self.DataRoot or None,
                overwrite_results=self.OverwriteResults,
            )
            if carried is not None:  # Init keeps the operator's settings; Default* are initial
                self._adopt(component, replace(carried.settings, compute_device=self.ComputeDevice))
            if carried is not None and carried.input_image is not None:
                component.set_input(carried.input_image, carried.input_source)
            live = LiveMode(
                component,
                LiveOptions(
                    field=carried.live_field if carried is not None else self.LiveField,
                    normalize=(
                        carried.live_normalize if carried is not None else self.LiveNormalize
                    ),
                    every_rows=self.LiveEveryRows,
                    position_scale_um=self.LivePositionScaleUm,
                    tiled_uri=self.TiledUri,
                    allow_pickle=bool(self.LiveAllowPickle),
                ),
            )
            temporal = TemporalLiveMode(
                component,
                TemporalOptions(
                    data_root=str(component.data_root or ""),
                    tiled_uri=self.TiledUri,
                    allow_pickle=bool(self.LiveAllowPickle),
                ),
            )
        except Exception as error:  # bad properties, engine not usable: the device is broken
            message = " ".join(str(error).split())
            self._fault = (
                f"the restoration component could not be built: {type(error).__name__}: "
                f"{message}; fix the device properties and run Init"
            )
            _LOG.error(self._fault)
            self.set_state(DevState.FAULT)
            self.set_status(self._fault)
            return
        tomo = TomoJobs(component, allow_overwrite=bool(self.OverwriteResults))
        tomo.add_output_callback(self._on_tomo_output)
        component.add_state_callback(self._on_state)
        component.add_progress_callback(self._on_progress)
        component.add_result_callback(self._on_result)
        live.add_status_callback(self._on_live_status)
        temporal.add_status_callback(self._on_live_status)
        temporal.add_values_callback(self._on_change_values)
        self._component = component
        self._live = live
        self._temporal = temporal
        self._tomo = tomo
        self._align_write_values()
        self.set_state(DevState.ON)
        self._pushed_state = DevState.ON  # what a subscriber reads first; alarms toggle it
        self.set_status(component.status)
        self.info_stream(
            f"ASIRP {asirp.__version__} ready: method {component.settings.method}, "
            f"data root {component.data_root or '(none)'}"
        )
        if self.LiveAddress:
            self._start_live_from_property(self.LiveAddress)
        if self.TemporalLiveAddress:
            self._start_temporal_from_property(self.TemporalLiveAddress)

    def _adopt(self, component: RestorationComponent, settings: Settings) -> None:
        """Give ``component`` the settings an Init kept.

        If they no longer fit (a weights file outside a new data root), the Default*
        properties stay, with a warning.
        """
        try:
            component.adopt_settings(settings)
        except (ValueError, TypeError, OSError) as error:
            self.warn_stream(f"the settings before Init no longer fit, defaults used: {error}")

    def _declare_events(self) -> None:
        """Say which events the code pushes, and which of them Tango filters by criteria.

        Scalars are pushed with detection (their abs_change/archive_abs_change criteria
        decide, so the archiver stores real changes only); the images, text and ids of a
        result are pushed without, because every result is news (each one is announced, in
        the order of RESULT_ATTRIBUTES).
        """
        for name in (*RESULT_ATTRIBUTES, "State", "Status", *LONG_COMMAND_ATTRIBUTES):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        for name in (*SETTING_ATTRIBUTES, *LIVE_COUNTER_ATTRIBUTES, "progress"):
            detect = name not in _TEXT_SETTINGS
            self.set_change_event(name, True, detect)
            self.set_archive_event(name, True, detect)
        for name in ("restoration_outcome", "result_source", "tomo_last_output"):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        for name in CHANGE_ATTRIBUTES.values():
            # pushed by the code when they change (no polling needed to subscribe)
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        self.set_data_ready_event("restored_image", True)

    def _setting_values(self) -> dict[str, Any]:
        """The memorized settings as their attributes read them."""
        component = self._require()
        live = self._require_live()
        settings = component.settings
        return {
            "method": settings.method,
            "auto_select": settings.auto_select,
            "iterations": settings.iterations,
            "beam_fwhm_um": settings.beam_fwhm_um,
            "pixel_um": settings.pixel_um,
            "parameters_json": parameters_json(settings),
            "live_field": live.options.field,
            "live_normalize": live.options.normalize,
        }

    def _align_write_values(self) -> None:
        """Make each setting's write value its read value.

        Clients such as Taurus show the write value as the set point, and Apply would send a
        stale one.
        """
        attributes = self.get_device_attr()
        for name, value in self._setting_values().items():
            attributes.get_w_attr_by_name(name).set_write_value(value)

    def _setting_written(self, name: str) -> None:
        """After a write: log it and push the setting's change and archive events."""
        value = self._setting_values()[name]
        self.info_stream(f"{name} set to {value!r}")
        self._publisher.submit(self._push_value, name, value)
        self._publisher.submit(self._push_alarm_state)

    def _push_value(self, name: str, value: Any) -> None:
        self.push_change_event(name, value)
        self.push_archive_event(name, value)

    def _alarm_scalars(self) -> dict[str, float]:
        """The numeric scalars an operator may give alarm limits: results, settings, progress."""
        component = self._require()
        values = result_values(component.result)
        scalars = {name: values[name] for name in ALARM_CHECKED_RESULTS}
        settings = component.settings
        scalars.update(
            iterations=settings.iterations,
            beam_fwhm_um=settings.beam_fwhm_um,
            pixel_um=settings.pixel_um,
            progress=component.progress,
        )
        return scalars

    def attributes_in_alarm(self) -> list[str]:
        """Names of the scalars outside the alarm limits set on them (Tango's ``<=``/``>=``).

        The same check Tango makes when State is read, done here so that the State *event*
        follows a value crossing its limits (Tango only checks on a read).
        """
        if self._component is None:
            return []
        attributes = self.get_device_attr()
        names = []
        for name, value in self._alarm_scalars().items():
            if not math.isfinite(value):
                continue
            limits = attributes.get_attr_by_name(name).get_properties()  # MultiAttrProp
            low, high = _alarm_limit(limits.min_alarm), _alarm_limit(limits.max_alarm)
            if (low is not None and value <= low) or (high is not None and value >= high):
                names.append(name)
        return names

    def _push_alarm_state(self) -> None:
        """Event thread: push State (and Status) when a value entered or left its alarm limits."""
        component = self._component
        if component is None or self._pushed_state not in (DevState.ON, DevState.ALARM):
            # RUNNING (or nothing pushed yet): the component's own transition is queued and
            # _push_state checks the alarms when it pushes it
            return
        in_alarm = self.attributes_in_alarm()
        state = DevState.ALARM if in_alarm else DevState.ON
        if state is self._pushed_state:
            return
        self._pushed_state = state
        self.set_state(state)
        self.push_change_event("State", state)
        self.push_archive_event("State", state)
        status = self._compose(component.status)
        self.push_change_event("Status", status)
        self.push_archive_event("Status", status)
        if in_alarm:
            self.warn_stream(f"attributes outside their alarm limits: {', '.join(in_alarm)}")

    def _start_live_from_property(self, address: str) -> None:
        """Start live mode from the LiveAddress property; a failure is an outcome, not FAULT."""
        try:
            self._live.start(address)
        except Exception as error:  # the device stays usable; the operator can StartLive
            message = " ".join(str(error).split())
            reason = f"live mode could not start from LiveAddress {address!r}: {message}"
            _LOG.error(reason)
            self._component.report_failure(f"{reason}; fix the property or call StartLive")

    def _start_temporal_from_property(self, address: str) -> None:
        """Start temporal live mode from TemporalLiveAddress; a failure is an outcome, not FAULT."""
        try:
            self._temporal.start(address)
        except Exception as error:  # the device stays usable; the operator can retry
            message = " ".join(str(error).split())
            reason = (
                f"temporal live mode could not start from TemporalLiveAddress {address!r}: "
                f"{message}"
            )
            _LOG.error(reason)
            self._component.report_failure(f"{reason}; fix the property or call StartTemporalLive")

    def delete_device(self) -> None:
        """Stop live mode, the worker (aborting a running restoration) and the event thread.

        The settings and the input are kept for the next ``init_device`` (``Init``).
        """
        if self._component is not None and self._live is not None:
            self._carried = _Carried(
                settings=self._component.settings,
                input_image=self._component.input_image,
                input_source=self._component.input_source,
                live_field=self._live.options.field,
                live_normalize=self._live.options.normalize,
            )
        if self._live is not None:
            self._live.stop()
        if self._temporal is not None:
            self._temporal.stop()
        if self._component is not None:
            self._component.shutdown(timeout=5.0)
        self._publisher.close()
        super().delete_device()

    def dev_state(self) -> DevState:
        """The component's state (so a read right after ``Restore`` already says RUNNING)."""
        if self._component is None:
            return DevState.FAULT
        state = _STATES[self._component.state]
        if state is DevState.RUNNING:
            return state
        # ON unless an attribute with alarm limits (e.g. contrast_std) is outside them:
        # Tango's own check reads those attributes and answers ALARM then
        self.set_state(DevState.ON)
        return super().dev_state()

    def dev_status(self) -> str:
        """The component's status line, and live mode's while live (or why it is in FAULT)."""
        if self._component is None:
            return self._fault
        return self._compose(self._component.status)

    def _compose(self, status: str) -> str:
        """``status``, followed by the status lines of the live modes that run."""
        lines = [status]
        in_alarm = self.attributes_in_alarm()
        if in_alarm:
            lines.append(f"ALARM: {', '.join(in_alarm)} outside the alarm limits set on them")
        for mode in (self._live, self._temporal):
            line = mode.status if mode is not None else ""
            if line:
                lines.append(line)
        return "\n".join(lines)

    def _require(self) -> RestorationComponent:
        component = self._component
        if component is None:
            tango.Except.throw_exception("ASIRP_Fault", self._fault, "ASIRP")
        return component

    def _require_live(self) -> LiveMode:
        self._require()
        assert self._live is not None  # built with the component
        return self._live

    def _require_tomo(self) -> TomoJobs:
        self._require()
        assert self._tomo is not None  # built with the component
        return self._tomo

    def _require_temporal(self) -> TemporalLiveMode:
        self._require()
        assert self._temporal is not None  # built with the component
        return self._temporal

    # ------------------------------------------------------------------ component listeners
    def _on_state(self, state: ComponentState, status: str) -> None:
        self._publisher.submit(self._push_state, _STATES[state], status)

    def _on_progress(self, percent: int) -> None:
        self._publisher.submit(self._push_progress, percent)

    def _on_result(self, record: ResultRecord) -> None:
        self._publisher.submit(self._push_result, record)

    def _on_live_status(self, _status: str) -> None:
        self._publisher.submit(self._push_status)

    def _on_tomo_output(self, path: str) -> None:
        self._publisher.submit(self._push_value, "tomo_last_output", path)

    def _on_change_values(self, values: ChangeValues) -> None:
        self._publisher.submit(self._push_change, values)

    def _push_state(self, state: DevState, status: str) -> None:
        status = self._compose(status)
        if state is DevState.ON and self.attributes_in_alarm():
            state = DevState.ALARM
        self._pushed_state = state
        self.set_state(state)
        self.set_status(status)
        self.push_change_event("State", state)
        self.push_archive_event("State", state)
        self.push_change_event("Status", status)
        self.push_archive_event("Status", status)
        self._push_value("restoration_outcome", self._outcome())
        component = self._component
        if component is not None and component.state is ComponentState.ALARM:
            self.error_stream(status)
        if state is not DevState.RUNNING:
            self._settle_commands()

    def _push_progress(self, percent: int) -> None:
        self._push_value("progress", percent)
        self._push_alarm_state()
        if self._commands.progress(percent):
            self._push_value("longRunningCommandProgress", self._commands.progress_pair)

    def _settle_commands(self) -> None:
        """Event thread: find how running commands ended; push the long-command attributes."""
        component = self._component
        if component is None:
            return
        if not self._commands.settle(outcome_or_result(self._tomo, component.fetch_result)):
            return
        self._push_value("longRunningCommandStatus", self._commands.status_pairs)
        self._push_value("longRunningCommandProgress", self._commands.progress_pair)
        self._push_value("longRunningCommandResult", self._commands.result_pair)

    def _begin_command(self, name: str, request_id: int) -> int:
        """Record an accepted long command; log it; push its status."""
        self.info_stream(f"{name} accepted: request {request_id}")
        self._commands.begin(request_id)
        self._publisher.submit(
            self._push_value, "longRunningCommandStatus", self._commands.status_pairs
        )
        self._publisher.submit(self._settle_commands)  # it may have ended already
        return request_id

    def _outcome(self) -> str:
        component = self._component
        if component is None:
            return "fault"
        if component.state is ComponentState.RUNNING:
            return "running"
        if component.state is ComponentState.ALARM:
            return "failed"
        return "succeeded" if component.result is not None else "none"

    def _push_status(self) -> None:
        component = self._component
        if component is None:
            return
        status = self._compose(component.status)
        self.set_status(status)
        self.push_change_event("Status", status)
        self.push_archive_event("Status", status)
        self._push_live_counters()

    def _push_live_counters(self) -> None:
        live = self._live
        if live is not None:
            self._push_value("live_runs_restored", live.runs_restored)
            self._push_value("live_documents", live.documents)

    def _push_change(self, values: ChangeValues) -> None:
        """Event thread: push change and archive events of the change values that changed."""
        changed = values.changed(self._pushed_change)
        self._pushed_change = values
        for name in changed:
            attribute_name = CHANGE_ATTRIBUTES[name]
            value = getattr(values, name)
            self.push_change_event(attribute_name, value)
            self.push_archive_event(attribute_name, value)

    def _push_result(self, record: ResultRecord) -> None:
        values = result_values(record)
        for name in RESULT_ATTRIBUTES:
            self._push_value(name, values[name])
        self.push_data_ready_event("restored_image", record.sequence)
        self._push_value("result_source", record.source)
        self._push_live_counters()
        self._push_alarm_state()
        self.info_stream(
            f"result {record.sequence} published: request {record.request_id}, "
            f"method {record.restoration.method}, source {record.source}"
        )

    def _result_value(self, name: str) -> Any:
        return result_values(self._require().result)[name]

    # ------------------------------------------------------------------ images
    @attribute(
        dtype=((np.float32,),),
        max_dim_x=MAX_SIDE_PX,
        max_dim_y=MAX_SIDE_PX,
        access=AttrWriteType.READ_WRITE,
        label="Input map",
        unit="counts",
        display_unit="counts",
        format="%.1f",
        doc="Map to restore, float32 (rows, columns), counts; 4 to 4096 px a side, finite. "
        "Empty (0 x 0) until written or loaded with LoadImage.",
    )
    def input_image(self) -> np.ndarray:
        """Map to restore, float32 (rows, columns), counts; 4 to 4096 px a side, finite.

        Empty (0 x 0) until written or loaded with LoadImage.
        """
        return input_value(self._require().input_image)

    @input_image.write
    def input_image(self, value: np.ndarray) -> None:
        """Validate and keep a new input map (refused: stacks, NaN/Inf, too small or large)."""
        with _tango_errors("ASIRP.input_image"):
            self._require().set_input(value)

    @attribute(
        dtype=((np.float32,),),
        max_dim_x=MAX_SIDE_PX,
        max_dim_y=MAX_SIDE_PX,
        label="Restored map",
        unit="counts",
        display_unit="counts",
        format="%.1f",
        doc="Latest restored map, float32 (rows, columns), counts; empty (0 x 0) before any. "
        "Change, archive and data-ready events (counter = result number) on every result.",
    )
    def restored_image(self) -> np.ndarray:
        """Latest restored map, float32 (rows, columns), counts; empty (0 x 0) before any.

        Change and data-ready events (counter = result number) on every new result.
        """
        return self._result_value("restored_image")

    @attribute(
        dtype=((np.float32,),),
        max_dim_x=MAX_SIDE_PX,
        max_dim_y=MAX_SIDE_PX,
        label="PSF",
        unit="1",
        display_unit="1",
        format="%.4g",
        doc="PSF of the latest result (used, or estimated by a blind method), float32, sum 1, "
        "(rows, columns) in pixels of the map; empty (0 x 0) before the first result.",
    )
    def psf(self) -> np.ndarray:
        """PSF of the latest result (used, or estimated by a blind method), float32, sum 1.

        Shape (rows, columns) in pixels of the map; empty (0 x 0) before the first result.
        """
        return self._result_value("psf")

    @attribute(
        dtype=str,
        label="Input source",
        doc="Where input_image came from: a resolved path, or 'input_image attribute'; empty "
        "before one. Live mode and Submit do not change input_image (see result_source).",
    )
    def input_source(self) -> str:
        """Where input_image came from: a resolved path, or 'input_image attribute'."""
        return self._require().input_source

    @attribute(
        dtype=str,
        label="Result source",
        doc="Where the input of the latest result came from: a resolved path, 'input_image "
        "attribute', 'Submit', or the raw run uid of a live result; empty before a result.",
    )
    def result_source(self) -> str:
        """Where the input of the latest result came from (a live result: the run uid)."""
        record = self._require().result
        return "" if record is None else record.source

    # ------------------------------------------------------------------ settings
    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Method",
        format="%s",
        doc="Restoration method, one of available_methods; used unless auto_select. Memorized.",
    )
    def method(self) -> str:
        """Restoration method, one of available_methods; used unless auto_select."""
        return self._require().settings.method

    @method.write
    def method(self, value: str) -> None:
        """Choose the method (refused: a name not in available_methods)."""
        with _tango_errors("ASIRP.method"):
            self._require().set_method(value)
        self._setting_written("method")

    @attribute(
        dtype=(str,),
        max_dim_x=64,
        label="Available methods",
        doc="Names of the methods the engine offers (see 'asirp methods').",
    )
    def available_methods(self) -> list[str]:
        """Names of the methods the engine offers (see 'asirp methods')."""
        return self._require().available_methods()

    @attribute(
        dtype=bool,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Auto select",
        doc="Let the engine choose the method and its parameters (method 'auto'); when true, "
        "method, iterations and parameters_json are not used. Memorized.",
    )
    def auto_select(self) -> bool:
        """Let the engine choose the method and its parameters (method 'auto').

        When true, method, iterations and parameters_json are not used.
        """
        return self._require().settings.auto_select

    @auto_select.write
    def auto_select(self, value: bool) -> None:
        """Switch automatic selection on or off."""
        with _tango_errors("ASIRP.auto_select"):
            self._require().set_auto_select(value)
        self._setting_written("auto_select")

    @attribute(
        dtype="DevLong",
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Iterations",
        unit="1",
        display_unit="1",
        format="%d",
        abs_change=1,
        archive_abs_change=1,
        doc="Iteration cap of iterative methods, 1 to 100000 (direct methods ignore it); the "
        "count run is iterations_run. Memorized.",
    )
    def iterations(self) -> int:
        """Iteration cap of iterative methods, 1 to 100000 (direct methods ignore it).

        The count actually run is iterations_run (methods may stop earlier, see their 'stop').
        """
        return self._require().settings.iterations

    @iterations.write
    def iterations(self, value: int) -> None:
        """Set the iteration cap (refused: <= 0 or > 100000)."""
        with _tango_errors("ASIRP.iterations"):
            self._require().set_iterations(value)
        self._setting_written("iterations")

    @attribute(
        dtype=float,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Beam FWHM",
        unit="µm",
        standard_unit="1e-6",
        display_unit="µm",
        format="%.2f",
        abs_change=0.01,
        archive_abs_change=0.01,
        doc="Beam full width at half maximum, µm (> 0); with pixel_um it makes the Gaussian "
        "PSF. Memorized.",
    )
    def beam_fwhm_um(self) -> float:
        """Beam full width at half maximum, µm (> 0); with pixel_um it makes the Gaussian PSF."""
        return self._require().settings.beam_fwhm_um

    @beam_fwhm_um.write
    def beam_fwhm_um(self, value: float) -> None:
        """Set the beam FWHM, µm (refused: <= 0, NaN, Inf)."""
        with _tango_errors("ASIRP.beam_fwhm_um"):
            self._require().set_beam_fwhm_um(value)
        self._setting_written("beam_fwhm_um")

    @attribute(
        dtype=float,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Pixel size",
        unit="µm",
        standard_unit="1e-6",
        display_unit="µm",
        format="%.3f",
        abs_change=0.001,
        archive_abs_change=0.001,
        doc="Scan step (pixel size), µm (> 0). Memorized.",
    )
    def pixel_um(self) -> float:
        """Scan step (pixel size), µm (> 0)."""
        return self._require().settings.pixel_um

    @pixel_um.write
    def pixel_um(self, value: float) -> None:
        """Set the scan step, µm (refused: <= 0, NaN, Inf)."""
        with _tango_errors("ASIRP.pixel_um"):
            self._require().set_pixel_um(value)
        self._setting_written("pixel_um")

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Parameters (JSON)",
        doc='Other parameters of the method as a JSON object, e.g. {"stop": "fixed"}; '
        "checked against the method when written and at Restore; not used with auto_select. "
        "Memorized.",
    )
    def parameters_json(self) -> str:
        """Other parameters of the method as a JSON object, e.g. {"stop": "fixed"}.

        'asirp methods' lists them; checked against the method when written and at Restore;
        not used with auto_select.
        """
        return parameters_json(self._require().settings)

    @parameters_json.write
    def parameters_json(self, value: str) -> None:
        """Set the method's other parameters (refused: not a JSON object, not the method's)."""
        with _tango_errors("ASIRP.parameters_json"):
            self._require().set_parameters(value)
        self._setting_written("parameters_json")

    @attribute(
        dtype=str,
        label="Tiled URI",
        doc="Tiled server that receives restored runs (the TiledUri property; empty if none).",
    )
    def tiled_uri(self) -> str:
        """Tiled server that receives restored runs (the TiledUri property; empty if none)."""
        self._require()
        return self.TiledUri

    # ------------------------------------------------------------------ results
    @attribute(
        dtype=(str,),
        max_dim_x=MAX_CAUTIONS,
        label="Result cautions",
        doc="What to be careful about in the latest result, one caution per line (for example "
        "'nothing to restore', 'structure_to_noise'); empty when there is none, or before a "
        "result. The first line of Status repeats them.",
    )
    def result_cautions(self) -> list[str]:
        """The engine's cautions on the latest result (empty when there is none)."""
        return self._result_value("result_cautions")

    @attribute(
        dtype=str,
        label="Method used",
        doc="Method of the latest result ('auto' resolved to the one that ran); empty before.",
    )
    def method_used(self) -> str:
        """Method of the latest result ('auto' resolved to the one that ran); empty before."""
        return self._result_value("method_used")

    @attribute(
        dtype=str,
        label="Metrics (JSON)",
        doc="All metrics of the latest result as a JSON object ('{}' before the first "
        "result); contrast_std and noise_sigma in counts, the others dimensionless.",
    )
    def metrics_json(self) -> str:
        """All metrics of the latest result as a JSON object ('{}' before the first result).

        contrast_std and noise_sigma are in counts, the others dimensionless; the *_input
        figures describe the measured map; request_id is the result's result_id.
        """
        return self._result_value("metrics_json")

    @attribute(
        dtype="DevLong64",
        label="Result id",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=0,
        doc="Request id of the latest result (what Restore or Submit returned for it; live "
        "results get their own); 0 before the first result. Its change event is pushed "
        "before restored_image's. Several clients: use FetchResult(id), not restored_image.",
    )
    def result_id(self) -> int:
        """Request id of the latest result, the id Restore/Submit returned (0 before any)."""
        return self._result_value("result_id")

    @attribute(
        dtype=float,
        label="Contrast",
        unit="counts",
        display_unit="counts",
        format="%.3f",
        min_value=0.0,
        doc="Contrast (standard deviation) of the latest result, counts (NaN before). Alarm "
        "limits (min_alarm/max_alarm) can be set with set_attribute_config: State is then "
        "ALARM while the value is outside them.",
    )
    def contrast_std(self) -> float:
        """Contrast (standard deviation) of the latest result, counts (NaN before)."""
        return self._result_value("contrast_std")

    @attribute(
        dtype=float,
        label="Sharpness",
        unit="1",
        display_unit="1",
        format="%.4f",
        min_value=0.0,
        doc="Sharpness of the latest result: RMS gradient over mean level (NaN before).",
    )
    def sharpness(self) -> float:
        """Sharpness of the latest result: RMS gradient over mean level (NaN before)."""
        return self._result_value("sharpness")

    @attribute(
        dtype=float,
        label="Noise sigma",
        unit="counts",
        display_unit="counts",
        format="%.3f",
        min_value=0.0,
        doc="Estimated noise standard deviation of the latest result, counts (NaN before).",
    )
    def noise_sigma(self) -> float:
        """Estimated noise standard deviation of the latest result, counts (NaN before)."""
        return self._result_value("noise_sigma")

    @attribute(
        dtype=float,
        label="Residual",
        unit="1",
        display_unit="1",
        format="%.4f",
        min_value=0.0,
        doc="Relative data residual ||y - Hx|| / ||y|| of the latest result (NaN before).",
    )
    def residual(self) -> float:
        """Relative data residual ||y - Hx|| / ||y|| of the latest result (NaN before)."""
        return self._result_value("residual")

    @attribute(
        dtype="DevLong",
        label="Iterations run",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=0,
        doc="Iterations the latest result ran (0 for direct methods and before any result).",
    )
    def iterations_run(self) -> int:
        """Iterations the latest result ran (0 for direct methods and before any result)."""
        return self._result_value("iterations_run")

    @attribute(
        dtype=float,
        label="Duration",
        unit="ms",
        standard_unit="1e-3",
        display_unit="ms",
        format="%.1f",
        min_value=0.0,
        doc="Wall time of the latest restoration, ms (NaN before the first result).",
    )
    def last_duration_ms(self) -> float:
        """Wall time of the latest restoration, ms (NaN before the first result)."""
        return self._result_value("last_duration_ms")

    @attribute(
        dtype="DevShort",
        label="Progress",
        unit="%",
        display_unit="%",
        format="%d",
        min_value=0,
        max_value=100,
        abs_change=1,
        archive_abs_change=10,
        doc="Progress of the current or last restoration, 0-100 %.",
    )
    def progress(self) -> int:
        """Progress of the current or last restoration, 0-100 %."""
        return self._require().progress

    @attribute(
        dtype=str,
        label="Restoration outcome",
        doc="Outcome of the latest restoration (local or live): none (before any), running, "
        "succeeded, failed (the reason is in Status; Reset clears it) or fault. A failure is "
        "not an attribute alarm: the state stays ON.",
    )
    def restoration_outcome(self) -> str:
        """Outcome of the latest restoration: none, running, succeeded, failed or fault."""
        return self._outcome()

    @attribute(
        dtype=(str,),
        max_dim_x=2 * 16,
        label="Long command status",
        doc="Status of the latest long commands (Restore, Submit, ReconstructTomo) as "
        "[id, status, ...]: "
        "IN_PROGRESS, COMPLETED, FAILED or ABORTED, oldest first (ska-tango-base convention; "
        "id = the request id the command returned). Change events on every change.",
    )
    def longRunningCommandStatus(self) -> list[str]:
        """[id, status, id, status, ...] of the latest long commands."""
        return self._commands.status_pairs

    @attribute(
        dtype=(str,),
        max_dim_x=2,
        label="Long command progress",
        doc="[id, percent] of the running (or latest) long command; empty before one. "
        "Change events as it advances.",
    )
    def longRunningCommandProgress(self) -> list[str]:
        """[id, percent] of the running or latest long command."""
        return self._commands.progress_pair

    @attribute(
        dtype=(str,),
        max_dim_x=2,
        label="Long command result",
        doc='(id, JSON outcome) of the latest finished long command: {"status": ...} with '
        "method, sequence and duration_ms when a restoration is COMPLETED (output, input, "
        "method, method_requested, centre_px, centre_source, cautions, elapsed_s, "
        "volume_shape for ReconstructTomo), reason when FAILED or ABORTED; "
        '("", "") before one. Change events when a command ends.',
    )
    def longRunningCommandResult(self) -> tuple[str, str]:
        """(id, JSON outcome) of the latest finished long command."""
        return self._commands.result_pair

    @attribute(
        dtype=str,
        label="Version",
        doc="Version of the ASIRP package this server runs (ska-tango-base's versionId).",
    )
    def versionId(self) -> str:
        """Version of the ASIRP package this server runs."""
        return asirp.__version__

    @attribute(
        dtype=str,
        label="Build state",
        doc="What this server was built from: ASIRP, PyTango and Python versions "
        "(ska-tango-base's buildState).",
    )
    def buildState(self) -> str:
        """ASIRP, PyTango and Python versions of this server."""
        return (
            f"asirp {asirp.__version__}, pytango {tango.__version__}, "
            f"Python {platform.python_version()}"
        )

    # ------------------------------------------------------------------ commands
    @command(
        dtype_out="DevLong64",
        doc_out="Request id of this restoration: result_id once its result is published, "
        "and the argument of FetchResult.",
    )
    def Restore(self) -> int:
        """Start restoring input_image and return at once: RUNNING, then ON (see outcomes).

        Refused (DevFailed) while RUNNING (ASIRP_Busy), without an input image, or when the
        parameters do not fit the method. input_image is shared by every client: with
        several clients, use Submit.
        """
        with _tango_errors("ASIRP.Restore"):
            return self._begin_command("Restore", self._require().start())

    @command(
        dtype_in=tango.DevEncoded,
        doc_in='Header: JSON object {"shape": [rows, columns], "dtype": "float32"} (also '
        "float64, uint8, uint16, uint32, int16, int32), optionally with settings for this "
        "request only: method, auto_select, iterations, beam_fwhm_um (um), pixel_um (um), "
        "parameters (object). Data: the map's bytes, C order, little-endian, counts; "
        "4 to 4096 px a side, finite.",
        dtype_out="DevLong64",
        doc_out="Request id: pass it to FetchResult (also result_id once published).",
    )
    def Submit(self, request: tuple[str, bytes]) -> int:
        """Start restoring the map given here (input_image is not touched); return its id.

        Returns at once (RUNNING, then ON). Refused (DevFailed): a malformed header or map, or
        settings that do not fit (ASIRP_InvalidInput), a restoration running (ASIRP_Busy:
        retry later). See asirp_device.wire for the format.
        """
        with _tango_errors("ASIRP.Submit"):
            component = self._require()
            header, data = request
            image, settings = decode_map(header, data)
            return self._begin_command(
                "Submit", component.start(image, settings=settings, source="Submit")
            )

    @command(
        dtype_in="DevLong64",
        doc_in="Request id returned by Submit, Restore or LiveResultOf.",
        dtype_out=tango.DevEncoded,
        doc_out='Header: JSON object {"request_id", "method", "shape": [rows, columns], '
        '"dtype": "float32", "sequence", "iterations_run", "duration_ms", "metrics", '
        '"source", "derived_uid"} (source: where the input came from, for a live result '
        "the raw run uid; derived_uid: the derived run in tiled holding a live result, else "
        "null). Data: the restored map, float32 counts, C order, little-endian.",
    )
    def FetchResult(self, request_id: int) -> tuple[str, bytes]:
        """The result of exactly that request (one of the latest 16), whatever came since.

        Refused (DevFailed): still running (ASIRP_NotReady: fetch again), ended without a
        result (ASIRP_RequestFailed), unknown or no longer kept (ASIRP_UnknownRequest).
        """
        with _tango_errors("ASIRP.FetchResult"):
            record = self._require().fetch_result(int(request_id))
            return fetch_reply(record)

    @command(
        dtype_in=str,
        doc_in='JSON object: {"input": "scan.h5", "output": "volume.nxs"} (paths inside the '
        'data root; input Data Exchange or NXtomo HDF5, output NeXus/HDF5), optionally "method" '
        '("auto", "none" or a method name), "psf_fwhm_px" or "psf_fwhm_um", "pixel_um" (um), '
        '"centre" (detector columns), "overwrite" (true only with OverwriteResults).',
        dtype_out="DevLong64",
        doc_out="Request id: follow it in longRunningCommandStatus/Progress/Result.",
    )
    def ReconstructTomo(self, argument: str) -> int:
        """Reconstruct a tomography scan in the data root into a NeXus volume; return at once.

        Flat/dark correction, restoration of the projections, centre, filtered back-projection
        of measured and restored projections (asirp.tomo.pipeline.run_tomo), in the worker:
        RUNNING until the volume file is written (tomo_last_output), then ON. Refused at once
        (DevFailed): a malformed argument, unknown key or method, out-of-range number
        (ASIRP_InvalidInput), a path outside the data root or through a link (ASIRP_DataRoot),
        a missing input (ASIRP_FileError), an existing output or the input as output
        (ASIRP_Exists), a restoration or reconstruction running (ASIRP_Busy). A failure while
        it runs ends it FAILED (longRunningCommandResult, Status); Abort stops it.
        """
        with _tango_errors("ASIRP.ReconstructTomo"):
            return self._begin_command("ReconstructTomo", self._require_tomo().start(argument))

    @attribute(
        dtype=str,
        label="Latest tomography volume",
        doc="The latest volume file ReconstructTomo wrote (resolved path in the data root); "
        "empty before one. Change events when a new one is written.",
    )
    def tomo_last_output(self) -> str:
        """The latest volume file ReconstructTomo wrote, or empty."""
        return self._require_tomo().last_output

    @command
    def Abort(self) -> None:
        """Stop the running restoration or ReconstructTomo at its next step (no-op when idle)."""
        self._require().abort()

    @command
    def Reset(self) -> None:
        """Clear a failed outcome and the progress; input and result are kept."""
        with _tango_errors("ASIRP.Reset"):
            self._require().reset()

    @command(
        dtype_in=str,
        doc_in="Path of a 2-D map inside the data root (.npy, .tif/.tiff, file.h5::/dataset).",
        dtype_out=str,
        doc_out="The resolved file that was read.",
    )
    def LoadImage(self, path: str) -> str:
        """Read a 2-D map from the data root into input_image."""
        with _tango_errors("ASIRP.LoadImage"):
            loaded = str(self._require().load_image(path))
        self.info_stream(f"LoadImage read {loaded}")
        return loaded

    @command(
        dtype_in=str,
        doc_in="HDF5 file (.h5, .hdf5, .hdf, .nxs) inside the data root; an existing file is "
        "replaced only with the OverwriteResults property (never the result's input).",
        dtype_out=str,
        doc_out="The resolved file that was written.",
    )
    def SaveResult(self, path: str) -> str:
        """Write the latest result with its provenance (asirp.io layout) to an HDF5 file."""
        with _tango_errors("ASIRP.SaveResult"):
            return str(self._require().save_result(path))

    # ------------------------------------------------------------------ live mode
    @command(
        dtype_in=str,
        doc_in="HOST:PORT of a bluesky 0MQ proxy's output (its --out-address), e.g. "
        "127.0.0.1:5578; tcp://HOST:PORT also works.",
        dtype_out=str,
        doc_out="The endpoint subscribed to, tcp://HOST:PORT.",
    )
    def StartLive(self, address: str) -> str:
        """Restore the map scans of a bluesky 0MQ document stream live; returns at once.

        Uses the restoration settings as they are now (method or auto_select, iterations,
        parameters_json, beam_fwhm_um, the compute device) and live_field/live_normalize; each
        scan's step is its own (pixel_um is not used). Every restored map is published like a
        Restore result (source: the scan's uid). Refused (DevFailed): a malformed or
        unresolvable address (ASIRP_InvalidInput), live mode already running
        (ASIRP_LiveActive), no live_field (ASIRP_NotReady).
        """
        with _tango_errors("ASIRP.StartLive"):
            return self._require_live().start(address)

    @command(
        dtype_in=str,
        doc_in="Uid of a raw run (its start document's uid) published to live mode's proxy.",
        dtype_out="DevLong64",
        doc_out="Request id of that run's final live result: pass it to FetchResult (its "
        "header has source = the run uid and derived_uid = its derived run in tiled).",
    )
    def LiveResultOf(self, run_uid: str) -> int:
        """The request id of the final restoration live mode published for a run.

        No restoration is made: the result is the one live mode published (and wrote to tiled
        with TiledUri). Refused (DevFailed): the final restoration has not arrived
        (ASIRP_NotReady: ask again), it failed or the run was not restored (ASIRP_LiveFailed),
        live mode never saw the run or no longer remembers it (ASIRP_UnknownRun; the latest 64
        runs are kept, across StopLive). FetchResult keeps only the latest 16 results: fetch
        it soon.
        """
        with _tango_errors("ASIRP.LiveResultOf"):
            return self._require_live().result_of(run_uid)

    @command
    def StopLive(self) -> None:
        """End live mode; a no-op when not live.

        The subscription stops at once; the scan in progress is restored on its rows measured
        so far (its derived run ends 'abort'), or, after 1 s, that restoration is cancelled
        (derived run 'fail', not a failed outcome).
        """
        self._require_live().stop()

    @attribute(
        dtype=str,
        label="Live address",
        doc="Proxy endpoint live mode reads from, tcp://HOST:PORT; empty when not live.",
    )
    def live_address(self) -> str:
        """Proxy endpoint live mode reads from, tcp://HOST:PORT; empty when not live."""
        return self._require_live().address

    @attribute(
        dtype=str,
        label="Live run uid",
        doc="Uid of the scan live mode restores, or of the last one once it ended; empty when "
        "not live, or before the first map scan.",
    )
    def live_run_uid(self) -> str:
        """Uid of the scan live mode restores, or of the last one once it ended.

        Empty when not live, or before the first map scan.
        """
        return self._require_live().run_uid

    @attribute(
        dtype="DevLong",
        label="Live runs restored",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=0,
        abs_change=1,
        archive_abs_change=1,
        doc="Scans whose final map live mode published since StartLive (0 when not live).",
    )
    def live_runs_restored(self) -> int:
        """Scans whose final map live mode published since StartLive (0 when not live)."""
        return self._require_live().runs_restored

    @attribute(
        dtype="DevLong64",
        label="Live documents",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=0,
        abs_change=1,
        archive_abs_change=100,
        doc="Bluesky documents received since StartLive (0 when not live).",
    )
    def live_documents(self) -> int:
        """Bluesky documents received since StartLive (0 when not live)."""
        return self._require_live().documents

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Live field",
        doc="Event field live mode maps, e.g. xrf_Cu (several, comma-separated, are summed); "
        "refused while live. Memorized.",
    )
    def live_field(self) -> str:
        """Event field live mode maps, e.g. xrf_Cu (several, comma-separated, are summed).

        Initially the LiveField property; refused while live.
        """
        return self._require_live().options.field

    @live_field.write
    def live_field(self, value: str) -> None:
        """Set the mapped field(s) (refused while live: StopLive first)."""
        with _tango_errors("ASIRP.live_field"):
            live = self._require_live()
            live.set_options(replace(live.options, field=value))
        self._setting_written("live_field")

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Live normalise by",
        doc="Flux-monitor field live mode normalises by, e.g. i0; empty: none; refused while "
        "live. Memorized.",
    )
    def live_normalize(self) -> str:
        """Flux-monitor field live mode normalises by, e.g. i0; empty: none.

        Initially the LiveNormalize property; refused while live.
        """
        return self._require_live().options.normalize

    @live_normalize.write
    def live_normalize(self, value: str) -> None:
        """Set the flux-monitor field (refused while live: StopLive first)."""
        with _tango_errors("ASIRP.live_normalize"):
            live = self._require_live()
            live.set_options(replace(live.options, normalize=value))
        self._setting_written("live_normalize")

    # ------------------------------------------------------------------ temporal live mode
    @command(
        dtype_in=str,
        doc_in="HOST:PORT of a bluesky 0MQ proxy's output (its --out-address), e.g. "
        "127.0.0.1:5578; tcp://HOST:PORT also works.",
        dtype_out=str,
        doc_out="The endpoint subscribed to, tcp://HOST:PORT.",
    )
    def StartTemporalLive(self, address: str) -> str:
        """Detect changes in the diffraction frames of a bluesky 0MQ document stream; at once.

        Analyses the runs whose start document has asirp_temporal metadata, with the xrd_*
        settings as they are now where the metadata gives none; external frame files are read
        inside DataRoot only. The change_* attributes follow the current run; the values are
        cleared. Independent of StartLive. Refused (DevFailed): a malformed or unresolvable
        address (ASIRP_InvalidInput), temporal live mode already running (ASIRP_LiveActive),
        the tiled server of TiledUri unreachable (ASIRP_LiveError).
        """
        with _tango_errors("ASIRP.StartTemporalLive"):
            return self._require_temporal().start(address)

    @command
    def StopTemporalLive(self) -> None:
        """End temporal live mode (queued frames are analysed first); a no-op when not live.

        The change_* attributes keep their values until the next StartTemporalLive.
        """
        self._require_temporal().stop()

    @attribute(
        dtype=str,
        label="Temporal live address",
        doc="Proxy endpoint temporal live mode reads from, tcp://HOST:PORT; empty when not live.",
    )
    def temporal_address(self) -> str:
        """Proxy endpoint temporal live mode reads from; empty when not live."""
        return self._require_temporal().address

    @attribute(
        dtype="DevLong64",
        label="Temporal documents",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=0,
        doc="Bluesky documents received since StartTemporalLive (0 when not live).",
    )
    def temporal_documents(self) -> int:
        """Bluesky documents received since StartTemporalLive (0 when not live)."""
        return self._require_temporal().documents

    def _change(self, name: str) -> Any:
        return getattr(self._require_temporal().values, name)

    @attribute(
        dtype=str,
        label="Change run uid",
        doc="Uid of the current run of temporal live mode (the latest run with asirp_temporal "
        "metadata); empty before one. The other change_* values of a run start with it.",
    )
    def change_run_uid(self) -> str:
        """Uid of the run the change_* values describe; empty before one."""
        return self._change("run_uid")

    @attribute(
        dtype="DevLong64",
        label="Frames handled",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=0,
        doc="Frames of the current run handled so far: analysed (integrated, restored, "
        "scored) or skipped as unusable (change_frames_skipped of them), so a plan waiting "
        "for the analysis to reach its frames never waits behind a bad frame.",
    )
    def change_frames(self) -> int:
        """Frames of the current run handled so far (analysed or skipped)."""
        return self._change("frames")

    @attribute(
        dtype="DevLong64",
        label="Frames skipped",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=0,
        doc="Frames of the current run skipped: unreadable (outside DataRoot, missing), "
        "wrong shape, NaN pixels, no temperature (the log says why); counted when the next "
        "frame is analysed.",
    )
    def change_frames_skipped(self) -> int:
        """Frames of the current run skipped as unusable."""
        return self._change("frames_skipped")

    @attribute(
        dtype=float,
        label="Change score",
        unit="1",
        display_unit="1",
        format="%.3f",
        doc="Per-frame change score of the latest frame, dimensionless (about N(0, 1) while "
        "the pattern only shifts with temperature); NaN before the run's first frame.",
    )
    def change_score(self) -> float:
        """Per-frame change score of the latest frame (NaN before one)."""
        return self._change("score")

    @attribute(
        dtype=float,
        label="Change CUSUM",
        unit="1",
        display_unit="1",
        format="%.3f",
        doc="CUSUM of the change scores after the latest frame, dimensionless; an alarm is "
        "raised when it crosses its threshold. NaN before the run's first frame.",
    )
    def change_cusum(self) -> float:
        """CUSUM of the change scores after the latest frame (NaN before one)."""
        return self._change("cusum")

    @attribute(
        dtype=bool,
        label="Change alarm",
        doc="Whether a change alarm (a change of the pattern's shape, e.g. a phase "
        "transition) was raised on the current run. Not a failure: the state stays ON.",
    )
    def change_alarm(self) -> bool:
        """Whether a change alarm was raised on the current run."""
        return self._change("alarm")

    @attribute(
        dtype="DevLong64",
        label="Change alarms",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=0,
        doc="Change alarms raised since StartTemporalLive; never decreases while live, so a "
        "plan detects a new alarm as an increase.",
    )
    def change_alarm_count(self) -> int:
        """Change alarms raised since StartTemporalLive."""
        return self._change("alarm_count")

    @attribute(
        dtype="DevLong64",
        label="Alarm frame",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=-1,
        doc="Frame index (in its run, from 0) of the latest change alarm; -1 before one.",
    )
    def change_alarm_frame(self) -> int:
        """Frame index of the latest change alarm; -1 before one."""
        return self._change("alarm_frame")

    @attribute(
        dtype=float,
        label="Alarm time",
        unit="s",
        standard_unit="1",
        display_unit="s",
        format="%.3f",
        doc="Time of the latest change alarm's frame, s since its run started; NaN before one.",
    )
    def change_alarm_time_s(self) -> float:
        """Time of the latest change alarm's frame, s since its run started (NaN before)."""
        return self._change("alarm_time_s")

    @attribute(
        dtype=float,
        label="Alarm temperature",
        unit="K",
        standard_unit="1",
        display_unit="K",
        format="%.2f",
        doc="Sample temperature of the latest change alarm's frame, K; NaN before one or when "
        "the run records no temperature.",
    )
    def change_alarm_temperature_K(self) -> float:
        """Sample temperature of the latest change alarm's frame, K (NaN before or unknown)."""
        return self._change("alarm_temperature_K")

    @attribute(
        dtype=str,
        label="Alarm (JSON)",
        doc="The latest change alarm as a JSON object: run_uid, frame_index, time_s (s), "
        "temperature_K (K), onset_frame_index (the estimated first changed frame), "
        "q_ranges_A ([[low, high], ...] in 1/angstrom where the pattern changed, strongest "
        'first), confidence (0.5 to 1), score, threshold, cusum; "{}" before one.',
    )
    def change_alarm_json(self) -> str:
        """The latest change alarm as a JSON object ('{}' before one)."""
        return self._change("alarm_json")

    @attribute(
        dtype="DevLong",
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="I(q) bins",
        unit="1",
        display_unit="1",
        format="%d",
        min_value=MIN_BINS,
        max_value=MAX_BINS,
        doc="Bins of the integrated pattern I(q) for runs whose metadata sets none; applies "
        "from the next StartTemporalLive.",
    )
    def xrd_n_bins(self) -> int:
        """Bins of I(q) used when a run's metadata sets none."""
        return self._require_temporal().options.n_bins

    @xrd_n_bins.write
    def xrd_n_bins(self, value: int) -> None:
        """Set the bins of I(q) (applies from the next StartTemporalLive)."""
        self._set_temporal_option("xrd_n_bins", n_bins=int(value))

    @attribute(
        dtype=bool,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Restore I(q)",
        doc="Remove the instrumental broadening from I(q) before scoring, for runs whose "
        "metadata does not say; applies from the next StartTemporalLive.",
    )
    def xrd_restore(self) -> bool:
        """Whether I(q) is restored before scoring (runs whose metadata does not say)."""
        return self._require_temporal().options.restore

    @xrd_restore.write
    def xrd_restore(self, value: bool) -> None:
        """Switch the restoration of I(q) (applies from the next StartTemporalLive)."""
        self._set_temporal_option("xrd_restore", restore=bool(value))

    @attribute(
        dtype=float,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="False-alarm interval",
        unit="frames",
        standard_unit="1",
        display_unit="frames",
        format="%.0f",
        min_value=MIN_FALSE_ALARM_INTERVAL,
        doc="Mean frames between false change alarms on a sample that does not change (sets "
        "the CUSUM threshold; larger: fewer false alarms, later detection), for runs whose "
        "metadata sets none; applies from the next StartTemporalLive.",
    )
    def xrd_false_alarm_interval_frames(self) -> float:
        """Mean frames between false change alarms (runs whose metadata sets none)."""
        return self._require_temporal().options.false_alarm_interval_frames

    @xrd_false_alarm_interval_frames.write
    def xrd_false_alarm_interval_frames(self, value: float) -> None:
        """Set the false-alarm interval, frames (applies from the next StartTemporalLive)."""
        self._set_temporal_option(
            "xrd_false_alarm_interval_frames", false_alarm_interval_frames=float(value)
        )

    def _set_temporal_option(self, attribute_name: str, **change: Any) -> None:
        with _tango_errors(f"ASIRP.{attribute_name}"):
            temporal = self._require_temporal()
            temporal.set_options(replace(temporal.options, **change))


def main(args: Sequence[str] | None = None) -> None:
    """Run the ``ASIRP`` device server: ``ASIRP <instance> [Tango/ORB options]``.

    Parameters
    ----------
    args : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``). The server name is
        always ``ASIRP``, whatever the program is called.
    """
    arguments = list(sys.argv[1:] if args is None else args)
    run((ASIRP,), args=[SERVER_NAME, *arguments])


if __name__ == "__main__":
    main()

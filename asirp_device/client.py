"""An ophyd-async client of the ASIRP Tango device, for Bluesky plans.

:class:`ASIRPClient` is a declarative :class:`ophyd_async.tango.core.TangoDevice` (only the
attributes and commands annotated below are connected) and a
:class:`~ophyd_async.core.StandardReadable`: reading it gives the restored map, the method used,
the metrics and the state; its configuration is the method and PSF settings. Triggering it runs a
restoration on the device and completes when the device is back to ``ON``, so
``bps.trigger_and_read([asirp])`` records a restored map. It never imports the server module.

One client per device: ``input_image`` and ``restored_image`` are shared by every client of the
device. :meth:`ASIRPClient.trigger` checks that the device's ``result_id`` is the request id its
``Restore`` returned when the restoration ends, and raises :class:`ResultTaken` otherwise (another
client restored in between); a ``restored_image`` read *after* the trigger can still be replaced
by another client's result. Clients that share a device use ``Submit`` and ``FetchResult``
(:mod:`asirp_device.wire` encodes them), which never mix results.

Live mode: :meth:`ASIRPClient.live_result` returns the final restoration the device's live mode
published for a raw run (``LiveResultOf``, then ``FetchResult``), decoded, as a plain
:class:`LiveReply`, so a plan reads the map that was restored and stored in tiled instead of
restoring it again; it never raises for a result that is not there yet or failed.

Temporal live mode: :class:`ASIRPChangeClient` reads the device's change detection (its
``change_*`` attributes) as the signals a reactive plan reads from its change monitor
(``alarm_count``, ``alarm_frame``, ``alarm_temperature_K``, ``frames_processed``, ``score``):
pass it as ``monitor`` to :func:`bluesky_plans.ramp.reactive_ramp`.

Examples
--------
>>> import bluesky.plan_stubs as bps
>>> asirp = ASIRPClient("tango://127.0.0.1:10000/asirp/restoration/1", name="asirp")
>>> def restore_map(image):  # doctest: +SKIP
...     yield from bps.mv(asirp.input_image, image)
...     yield from bps.trigger(asirp, wait=True)
...     return (yield from bps.rd(asirp.restored_image))
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated as A
from typing import Any

import numpy as np
import numpy.typing as npt
import tango
from ophyd_async.core import (
    AsyncStatus,
    Command,
    SignalR,
    SignalRW,
    StandardReadable,
    StandardReadableFormat,
    TriggerableCommand,
)
from ophyd_async.tango.core import DevStateEnum, TangoDevice, tango_signal_r
from tango.asyncio_executor import AsyncioExecutor, get_global_executor, set_global_executor

from asirp_device.wire import decode_result

_READ = StandardReadableFormat.UNCACHED_SIGNAL
_CONFIG = StandardReadableFormat.CONFIG_SIGNAL

DEFAULT_RESTORE_TIMEOUT_S = 600.0
"""How long :meth:`ASIRPClient.trigger` waits for a restoration by default, s."""


class RestorationFailed(RuntimeError):
    """The device's restoration failed, or it is in ``FAULT`` (the message is its status)."""


class ResultTaken(RestorationFailed):
    """When the restoration ended, the device's latest result was another request's."""


LIVE_STATES = {
    "ASIRP_NotReady": "pending",
    "ASIRP_UnknownRun": "unknown",
    "ASIRP_LiveFailed": "failed",
}
"""``LiveResultOf`` refusal reasons and the :attr:`LiveReply.state` each one gives."""


@dataclass(frozen=True)
class LiveReply:
    """What :meth:`ASIRPClient.live_result` found for a raw run (plain values, never raises).

    Attributes
    ----------
    state : {"ready", "pending", "unknown", "failed", "error"}
        ``ready``: the final live result is in ``header`` and ``image``; ``pending``: its
        final restoration has not arrived (ask again); ``unknown``: live mode has not seen
        the run (not yet, or never); ``failed``: the restoration failed or the run is not
        restored; ``error``: any other refusal or a communication failure.
    reason : str
        Empty when ready; otherwise the device's reason code and message (or the error).
    header : dict
        The ``FetchResult`` header (``request_id``, ``method``, ``metrics``, ``source`` = the
        run uid, ``derived_uid`` = its derived run in tiled or ``None``, ...); empty unless
        ready.
    image : numpy.ndarray or None
        ``(H, W)`` float32 restored map (counts, read-only) when ready.
    """

    state: str
    reason: str = ""
    header: dict[str, Any] = field(default_factory=dict)
    image: np.ndarray | None = None

    @property
    def ready(self) -> bool:
        """Whether the final live result is here."""
        return self.state == "ready"


class ASIRPClient(TangoDevice, StandardReadable):
    """The ASIRP device as an ophyd-async device.

    Field names are the Tango attribute and command names. ``restored_image`` and
    ``input_image`` are float32 Tango images, read as ``npt.NDArray[float]`` (the annotation
    ophyd-async's Tango backend connects with for float images); ``input_image`` accepts any
    real 2-D array and the device converts it to float32.

    Parameters
    ----------
    trl : str
        Tango resource locator of the device, e.g.
        ``"tango://127.0.0.1:10000/asirp/restoration/1"`` (or a name resolved through
        ``TANGO_HOST``).
    name : str
        Name of the device in Bluesky documents.
    restore_timeout : float
        How long :meth:`trigger` waits for a restoration to end, s.
    """

    restored_image: A[SignalR[npt.NDArray[float]], _READ]
    method_used: A[SignalR[str], _READ]
    metrics_json: A[SignalR[str], _READ]
    State: A[SignalR[DevStateEnum], _READ]
    Status: SignalR[str]
    input_image: SignalRW[npt.NDArray[float]]
    method: A[SignalRW[str], _CONFIG]
    auto_select: A[SignalRW[bool], _CONFIG]
    iterations: A[SignalRW[int], _CONFIG]
    beam_fwhm_um: A[SignalRW[float], _CONFIG]
    pixel_um: A[SignalRW[float], _CONFIG]
    result_id: SignalR[int]
    restoration_outcome: SignalR[str]
    Restore: Command[[], int]
    Abort: TriggerableCommand

    def __init__(
        self,
        trl: str,
        name: str = "",
        restore_timeout: float = DEFAULT_RESTORE_TIMEOUT_S,
    ) -> None:
        self._restore_timeout = restore_timeout
        self.last_request_id: int | None = None
        """Request id that the last :meth:`trigger`'s ``Restore`` returned."""
        super().__init__(trl, support_events=True, name=name, auto_fill_signals=False)

    async def connect(self, *args: Any, **kwargs: Any) -> None:
        """Connect (arguments as :meth:`ophyd_async.core.Device.connect`) from this event loop.

        pytango keeps one global asyncio executor, tied to the thread that created it, and
        ophyd-async 0.21 creates the device's ``DeviceProxy`` without checking it: once a first
        RunEngine's event loop has used Tango, connecting from a second RunEngine's loop got a
        plain synchronous proxy (``TypeError: ... can't be used in 'await' expression``). The
        executor is moved to the running loop first, as ophyd-async does before reads/writes.
        """
        _use_this_loop()
        await super().connect(*args, **kwargs)

    async def live_result(self, run_uid: str) -> LiveReply:
        """The final live-mode restoration of raw run ``run_uid``, without restoring it again.

        Calls ``LiveResultOf(run_uid)`` and ``FetchResult`` of the id it returns, and decodes
        the reply (:func:`asirp_device.wire.decode_result`). One attempt: while the result is
        ``pending`` (or ``unknown``, the run's documents not there yet) ask again later; a plan
        waits with ``bps.sleep`` in between (see :class:`bluesky_plans.maps.TangoMaps`).

        Parameters
        ----------
        run_uid : str
            Uid of the raw run (its start document's ``uid``).

        Returns
        -------
        LiveReply
            The result, or why there is none; device refusals and communication failures are
            in :attr:`LiveReply.state` and :attr:`LiveReply.reason`, never raised.
        """
        proxy = self.get_proxy()
        if proxy is None:
            return LiveReply("error", f"{self.name}: not connected (connect the client first)")
        _use_this_loop()
        try:
            request_id = await proxy.command_inout("LiveResultOf", str(run_uid))
            reply = await proxy.command_inout("FetchResult", request_id)
            header, image = decode_result(reply)
        except tango.DevFailed as error:
            failure = error.args[0]
            reason = f"{failure.reason}: {' '.join(str(failure.desc).split())}"
            return LiveReply(LIVE_STATES.get(failure.reason, "error"), reason)
        except Exception as error:  # a reply that does not decode, a broken connection
            return LiveReply("error", f"{type(error).__name__}: {' '.join(str(error).split())}")
        return LiveReply("ready", "", header, image)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        """Restore the current ``input_image`` and wait until the device leaves ``RUNNING``.

        ``Restore`` switches the device to ``RUNNING`` before it returns, so the first state
        read afterwards that is not ``RUNNING`` belongs to this restoration. The state is read
        from the device each time (never from a monitor's cache, which may still hold the state
        from before ``Restore``), every 5 ms at first, then less often, at most every 50 ms.
        ``Restore``'s request id is kept in :attr:`last_request_id`.

        Raises
        ------
        RestorationFailed
            If the restoration failed (``restoration_outcome`` is ``failed``) or the device is
            in ``FAULT``, with its status.
        ResultTaken
            If the device's ``result_id`` is not this request's when it is no longer
            ``RUNNING``
            (another client's restoration came after it: ``restored_image`` is not ours).
        TimeoutError
            If it is still ``RUNNING`` after ``restore_timeout`` s.
        """
        request_id = int(await self.Restore.execute())
        self.last_request_id = request_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._restore_timeout
        pause = 0.005
        while (state := await self.State.get_value(cached=False)) == DevStateEnum.RUNNING:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{self.name}: still RUNNING after {self._restore_timeout} s; call Abort"
                )
            await asyncio.sleep(pause)
            pause = min(0.05, 1.5 * pause)
        # ALARM (an attribute outside its alarm limits) is not a failed restoration
        outcome = await self.restoration_outcome.get_value(cached=False)
        if outcome == "failed" or state == DevStateEnum.FAULT:
            status = await self.Status.get_value(cached=False)
            raise RestorationFailed(f"{self.name}: the restoration {outcome}: {status}")
        latest = await self.result_id.get_value(cached=False)
        if latest != request_id:
            raise ResultTaken(
                f"{self.name}: the device's latest result is request {latest}, not this "
                f"trigger's {request_id}: another client restored on the same device; use "
                f"FetchResult({request_id}) (or Submit/FetchResult) to get this one"
            )


CHANGE_SIGNALS = {
    "alarm_count": (int, "change_alarm_count"),
    "frames_processed": (int, "change_frames"),
    "score": (float, "change_score"),
    "cusum": (float, "change_cusum"),
    "alarm": (bool, "change_alarm"),
    "alarm_frame": (int, "change_alarm_frame"),
    "alarm_time_s": (float, "change_alarm_time_s"),
    "alarm_temperature_K": (float, "change_alarm_temperature_K"),
}
"""Signals of :class:`ASIRPChangeClient`: name -> (Python type, device attribute)."""


class ASIRPChangeClient(StandardReadable):
    """The change detection of the ASIRP device's temporal live mode, for reactive plans.

    Read-only signals backed by the device's ``change_*`` attributes (one Tango attribute
    each, read from the device at every read): what :func:`bluesky_plans.ramp.reactive_ramp`
    reads from its ``monitor`` after each frame, ``yield from bps.rd(change.alarm_count)``.

    ``alarm_count``
        Change alarms since ``StartTemporalLive`` (``change_alarm_count``); it only grows
        while live, so a plan compares it with the value it read at its start.
    ``frames_processed``
        Frames of the current run handled, analysed or skipped as unusable
        (``change_frames``): a plan waits for it to reach the frames it took before it
        decides.
    ``score``, ``cusum``
        The latest frame's change score and CUSUM, dimensionless (NaN before a frame).
    ``alarm``
        Whether the current run raised an alarm.
    ``alarm_frame``, ``alarm_time_s``, ``alarm_temperature_K``
        The latest alarm's frame (-1: none), time since its run's start (s) and sample
        temperature (K; NaN: none or unknown).

    The device must run temporal live mode on the proxy the plan's RunEngine publishes to.
    Never imports the server module.

    Parameters
    ----------
    trl : str
        Tango resource locator of the device, e.g.
        ``"tango://127.0.0.1:10000/asirp/restoration/1"`` (a ``#dbase=no`` suffix is kept).
    name : str
        Name of the device in Bluesky documents (signals are ``{name}-{signal}``).

    Examples
    --------
    >>> change = ASIRPChangeClient("tango://127.0.0.1:10000/asirp/restoration/1", name="change")
    >>> # RE(reactive_ramp([xrd], temperature, 300, 420, 2, monitor=change))  # doctest: +SKIP
    """

    alarm_count: SignalR[int]
    frames_processed: SignalR[int]
    score: SignalR[float]
    cusum: SignalR[float]
    alarm: SignalR[bool]
    alarm_frame: SignalR[int]
    alarm_time_s: SignalR[float]
    alarm_temperature_K: SignalR[float]

    def __init__(self, trl: str, name: str = "") -> None:
        with self.add_children_as_readables(_READ):
            for signal, (datatype, attribute) in CHANGE_SIGNALS.items():
                setattr(self, signal, tango_signal_r(datatype, attribute_trl(trl, attribute)))
        super().__init__(name=name)

    async def connect(self, *args: Any, **kwargs: Any) -> None:
        """Connect from this event loop (see :meth:`ASIRPClient.connect` for why)."""
        _use_this_loop()
        await super().connect(*args, **kwargs)


def attribute_trl(device_trl: str, attribute: str) -> str:
    """The TRL of ``attribute`` of the device at ``device_trl`` (``#dbase=no`` kept last).

    Examples
    --------
    >>> attribute_trl("tango://127.0.0.1:5000/test/asirp/1#dbase=no", "change_score")
    'tango://127.0.0.1:5000/test/asirp/1/change_score#dbase=no'
    """
    device, hash_sign, suffix = device_trl.partition("#")
    return f"{device.rstrip('/')}/{attribute}{hash_sign}{suffix}"


def _use_this_loop() -> None:
    """Tie pytango's global asyncio executor to the running loop (see ASIRPClient.connect)."""
    if not get_global_executor().in_executor_context():
        set_global_executor(AsyncioExecutor())

"""Bluesky callbacks of ASIRP: live map restoration, derived runs in tiled, the 0MQ worker.

- :class:`~callbacks.live.LiveRestorer`: subscribe it to a RunEngine (or a 0MQ
  ``RemoteDispatcher``); it maps a reading of grid and fly scans live, restores the partial and
  full maps in a worker thread and publishes each raw run's restoration as a derived run. Its
  parts, one job each:

  - :mod:`callbacks.result`: :class:`~callbacks.result.LiveResult`, what listeners receive.
  - :mod:`callbacks.assembler`: :class:`~callbacks.assembler.MapAssembler`, one run's raw map
    from its documents (usable alone), with :mod:`callbacks.geometry` (where a point lands) and
    :mod:`callbacks.mapping` (what is mapped, the map being filled).
  - :mod:`callbacks.jobs`: when a run asks for a restoration, and how one is carried out.
  - :mod:`callbacks.worker`: :class:`~callbacks.worker.CoalescingWorker`, one thread, the
    latest job of each run winning.
- :mod:`callbacks.publish`: the derived-run schema, writing to tiled, finding derived runs.
- :mod:`callbacks.tiled_server`: an embedded local tiled server, or a client of an existing one.
- :mod:`callbacks.remote`: the same callback in its own process, fed by ``bluesky-0MQ-proxy``
  (``asirp live --zmq HOST:PORT``).
- :mod:`callbacks.serialization` and :mod:`callbacks.dispatcher`: document streams as data
  (msgpack, never pickle unless asked): the publisher's ``serializer`` and
  :class:`~callbacks.dispatcher.SafeRemoteDispatcher`, which drops what does not decode.
- :mod:`callbacks.address`: 0MQ addresses, and URIs with their secrets redacted.
- :mod:`callbacks.plot`: an optional live plot of raw vs restored maps (a listener).
- :class:`~callbacks.temporal.TemporalMonitor`: temporal feedback. Subscribe it to a RunEngine
  (or run ``asirp live --temporal``); it integrates the diffraction frames of temperature ramps
  and scores each one for a change of shape, in frame order, in one worker thread, and
  publishes each raw run's patterns, scores and alarms as a derived run. Its parts:

  - :mod:`callbacks.temporal_config`: which runs, from untrusted ``asirp_temporal`` metadata.
  - :mod:`callbacks.frames`: frames inline or in AD_HDF5 files, read only inside a data root
    (:class:`~callbacks.frames.SafeADHDF5Handler`, an ``event_model.Filler``), and checked.
  - :mod:`callbacks.ordered_worker`: :class:`~callbacks.ordered_worker.OrderedWorker`, one
    thread, first in first out, a bounded frame backlog.
  - :mod:`callbacks.temporal_publish`: the temporal derived-run schema.
  - :mod:`callbacks.change_signals`: :class:`~callbacks.change_signals.ChangeSignals`, ophyd
    signals of the latest state, which in-process plans read.
- :class:`~callbacks.tomo.LiveTomoReconstruction`: live tomography. At the stop document of a
  :func:`bluesky_plans.tomo.tomo_scan` run it writes the raw scan as Data Exchange HDF5 and
  reconstructs it with :func:`asirp.tomo.pipeline.run_tomo`, in a worker thread.

This package imports bluesky, event-model and tiled lazily: importing it (as the ``asirp``
command does to register ``asirp live``) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LiveRestorer": "callbacks.live",
    "LiveResult": "callbacks.result",
    "MapAssembler": "callbacks.assembler",
    "MapSource": "callbacks.mapping",
    "ScanGeometry": "callbacks.geometry",
    "GeometryError": "callbacks.geometry",
    "DerivedRun": "callbacks.publish",
    "derived_runs": "callbacks.publish",
    "read_final_map": "callbacks.publish",
    "raw_run_writer": "callbacks.publish",
    "scan_from_run": "callbacks.tiled_scan",
    "EmbeddedTiledServer": "callbacks.tiled_server",
    "LiveMapPlot": "callbacks.plot",
    "run_remote": "callbacks.remote",
    "SafeRemoteDispatcher": "callbacks.dispatcher",
    "serializer": "callbacks.serialization",
    "deserializer": "callbacks.serialization",
    "TemporalMonitor": "callbacks.temporal",
    "TemporalUpdate": "callbacks.temporal",
    "ChangeSignals": "callbacks.change_signals",
    "SafeADHDF5Handler": "callbacks.frames",
    "frame_filler": "callbacks.frames",
    "TemporalDerivedRun": "callbacks.temporal_publish",
    "temporal_runs": "callbacks.temporal_publish",
    "LiveTomoReconstruction": "callbacks.tomo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'callbacks' has no attribute {name!r}")
    return getattr(import_module(module), name)

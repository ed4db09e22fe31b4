"""Temporal feedback on the embedded default, as ``asirp control-room --temporal`` runs it.

1. An embedded tiled server writing to the output folder (the temporal derived runs).
2. An embedded sqlite Tango database and the ASIRP device server (child processes); a 0MQ
   document proxy (child process) that the RunEngine publishes to; the device's temporal live
   mode (``StartTemporalLive``) reads it, analyses every frame (pyFAI integration, restoration
   of I(q), change detection) and writes its derived run to tiled. Without Tango
   (``use_tango=False``) an in-process :class:`callbacks.temporal.TemporalMonitor` and
   :class:`callbacks.change_signals.ChangeSignals` do the same.
3. The simulated powder-diffraction beamline (:func:`sim.xrd_devices.make_xrd_beamline`): a
   temperature ramp over a sample with a hidden transition (a cubic-to-tetragonal splitting by
   default), 1024 x 1024 px frames written as areaDetector HDF5 files into the data root. The
   instrumental profile is fitted on a CeO2 calibrant frame first.
4. :func:`bluesky_plans.ramp.reactive_ramp`, whose change monitor is the device (through its
   ophyd-async client) or the in-process signals: on an alarm it holds, slows the ramp with a
   longer exposure, then resumes.
5. A report: ``temporal.png`` (the restored I(q) waterfall with the alarm and the true onset,
   the score and CUSUM, the recorded temperatures, I(q) before and after the event),
   ``temporal_summary.json`` and ``temporal_summary.md``.

Every process started is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from control_room.loop import DEVICE_NAME, start_device_server

SERVER_INSTANCE = "control_room_temporal"
IMAGE_FIELD = "xrd_image"
TEMPERATURE_FIELD = "xrd_temperature"


def _stream(documents: list[tuple[str, dict]], name: str) -> list[dict]:
    """The data of the events of one stream, in order."""
    descriptors = {d["uid"] for n, d in documents if n == "descriptor" and d["name"] == name}
    return [d["data"] for n, d in documents if n == "event" and d["descriptor"] in descriptors]


def temporal_metadata(beamline: Any, settings: Any, *, seed: int) -> dict[str, Any]:
    """The ``asirp_temporal`` start metadata: geometry, settings and the CeO2-fitted profile."""
    from asirp.diffraction import PatternIntegrator, fit_instrument_profile

    calibrant = beamline.calibrant_frame(np.random.default_rng(seed + 1_000_003), exposure_s=10.0)
    pattern = PatternIntegrator(beamline.geometry, n_bins=settings.n_bins)(calibrant)
    profile = fit_instrument_profile(pattern)
    return {
        "geometry": beamline.geometry.as_dict(),
        "settings": settings.as_dict(),
        "profile": profile.as_dict(),
        "image_field": IMAGE_FIELD,
        "temperature_field": TEMPERATURE_FIELD,
    }


def run_temporal_demo(
    output: str | Path,
    *,
    seed: int = 0,
    kind: str = "splitting",
    ramp_K: tuple[float, float] = (300.0, 420.0),
    step_K: float = 1.0,
    side_px: int = 1024,
    use_tango: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the reacting ramp and write the report; return the summary.

    Parameters
    ----------
    output : str or Path
        Output folder (Tango database, frames, tiled data, figure, summary).
    seed : int
        Seed of the simulated sample, its hidden event and the counts.
    kind : {"splitting", "new_phase", "none"}
        The hidden event.
    ramp_K : (float, float)
        First and last temperature, K.
    step_K : float
        Normal temperature step, K.
    side_px : int
        Detector side, px (1024: one megapixel, 75 µm pixels; smaller sides bin the pixels
        so the rings stay where they are).
    use_tango : bool
        Analyse on the Tango device's temporal live mode (``False``: in-process monitor).
    log : callable
        Progress messages.
    """
    import bluesky.plan_stubs  # noqa: F401  (imported early: the RunEngine's loop needs it)
    from bluesky import RunEngine

    from asirp.diffraction import DetectorGeometry, TemporalSettings
    from bluesky_plans.ramp import reactive_ramp
    from callbacks import EmbeddedTiledServer
    from callbacks.temporal_publish import temporal_runs
    from sim.diffraction import small_geometry
    from sim.xrd_devices import make_xrd_beamline

    if side_px not in (256, 512, 1024):
        raise ValueError(f"side_px must be 256, 512 or 1024, got {side_px}")
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    data_root = folder / "data"
    data_root.mkdir(exist_ok=True)
    started = time.perf_counter()
    stack: list[Callable[[], None]] = []
    geometry = DetectorGeometry()
    if side_px != 1024:
        geometry = small_geometry(geometry, factor=1024 // side_px)
    n_frames = round(abs(ramp_K[1] - ramp_K[0]) / step_K) + 1
    beamline = make_xrd_beamline(
        kind,
        seed=seed,
        geometry=geometry,
        inline=False,
        write_root=data_root,
        ramp_K=ramp_K,
        n_frames=n_frames,
    )
    settings = TemporalSettings(restore=True)
    metadata = temporal_metadata(beamline, settings, seed=seed)
    documents: list[tuple[str, dict]] = []
    try:
        tiled_server = EmbeddedTiledServer(folder / "tiled")
        stack.append(tiled_server.close)
        catalog = tiled_server.client()
        engine = RunEngine({}, call_returns_result=True)
        engine.subscribe(lambda name, doc: documents.append((name, doc)))
        if use_tango:
            monitor = _tango_temporal(stack, engine, folder, data_root, tiled_server, log)
        else:
            from callbacks.change_signals import ChangeSignals
            from callbacks.temporal import TemporalMonitor

            temporal = TemporalMonitor(data_root=data_root, tiled=catalog)
            stack.append(lambda: temporal.close(60))
            engine.subscribe(temporal)
            monitor = ChangeSignals(name="change")
            monitor.attach(temporal)
        log(
            f"ramp {ramp_K[0]:g}-{ramp_K[1]:g} K in {step_K:g} K steps, {side_px}² px frames, "
            f"hidden event: {kind}"
        )
        result = engine(
            reactive_ramp(
                [beamline.detector],
                beamline.temperature,
                ramp_K[0],
                ramp_K[1],
                step_K,
                monitor=monitor,
                slow_step_K=step_K / 4,
                slow_span_K=4 * step_K,
                hold_frames=2,
                exposure=beamline.detector.exposure,
                analysis_wait_s=30.0,
                md={"asirp_temporal": metadata, "sample": f"simulated {kind}", "seed": seed},
            )
        )
        raw_uid = result.run_start_uids[0]
        derived = _wait_for_derived(catalog, temporal_runs, raw_uid, 120.0)
        summary = _summarise(beamline, documents, derived, result.plan_result, raw_uid)
        summary.update(
            {
                "use_tango": use_tango,
                "kind": kind,
                "seed": seed,
                "frame_shape_px": list(geometry.shape_px),
                "wall_s": round(time.perf_counter() - started, 1),
                "tiled": str(tiled_server.directory),
            }
        )
        _figure(folder / "temporal.png", summary, derived)
    finally:
        for close in reversed(stack):
            try:
                close()
            except Exception as error:  # stop everything else regardless
                log(f"while stopping: {error}")
    (folder / "temporal_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (folder / "temporal_summary.md").write_text(_markdown(summary), encoding="utf-8")
    return summary


def _tango_temporal(
    stack: list[Callable[[], None]],
    engine: Any,
    folder: Path,
    data_root: Path,
    tiled_server: Any,
    log: Callable[[str], None],
) -> Any:
    """The device in temporal live mode on this RunEngine's documents; its change client."""
    import tango
    from bluesky.callbacks.zmq import Publisher
    from ophyd_async.core import init_devices

    from asirp_device.client import ASIRPChangeClient
    from asirp_device.document_proxy import DocumentProxyProcess, handshake
    from callbacks.serialization import serializer

    tango_host = start_device_server(
        stack, folder, SERVER_INSTANCE, tiled_server, {"DataRoot": str(data_root.resolve())}
    )
    proxy = DocumentProxyProcess()
    proxy.start()
    stack.append(proxy.stop)
    publisher = Publisher(proxy.in_address, serializer=serializer)
    stack.append(publisher.close)
    trl = f"tango://{tango_host}/{DEVICE_NAME}"
    device = tango.DeviceProxy(trl)
    device.StartTemporalLive(proxy.out_address)
    stack.append(device.StopTemporalLive)
    handshake(publisher, lambda: device.temporal_documents)  # no document is lost
    engine.subscribe(publisher)
    with init_devices():
        change = ASIRPChangeClient(trl, name="change")
    log(f"Tango: {DEVICE_NAME} in temporal live mode on the 0MQ proxy {proxy.out_address}")
    return change


def _wait_for_derived(catalog: Any, find: Callable, raw_uid: str, timeout_s: float) -> Any:
    """The temporal derived run of ``raw_uid`` once its stop document is in tiled."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = find(catalog, raw_uid)
        if len(found):
            run = found.values().first()
            if run.metadata.get("stop"):
                return run
        time.sleep(0.2)
    raise TimeoutError(f"no finished temporal derived run of {raw_uid} in tiled")


def _summarise(
    beamline: Any, documents: list, derived: Any, decisions: list, raw_uid: str
) -> dict[str, Any]:
    """Figures of the run: the truth, the alarms, the reaction, the recorded temperatures."""
    events = _stream(documents, "primary")
    temperatures = [float(e["temperature_readback"]) for e in events]
    setpoints = [float(e["temperature_setpoint"]) for e in events]
    primary = derived["primary"].read()
    alarms = derived["alarms"].read() if "alarms" in derived else None
    truth = beamline.sequence
    onset_K = truth.onset_K
    alarm_list = []
    for i in range(0 if alarms is None else len(alarms["frame_index"])):
        alarm_list.append(
            {
                "frame_index": int(alarms["frame_index"][i]),
                "temperature_K": float(alarms["temperature_K"][i]),
                "onset_frame_index": int(alarms["onset_frame_index"][i]),
                "confidence": float(alarms["confidence"][i]),
            }
        )
    first_alarm = alarm_list[0] if alarm_list else None
    onset_frame = None
    if onset_K is not None:
        direction = 1.0 if temperatures[-1] >= temperatures[0] else -1.0
        after = [i for i, t in enumerate(temperatures) if (t - onset_K) * direction >= 0]
        onset_frame = after[0] if after else None
    delay = None  # the first alarm at or after the true onset
    if onset_frame is not None:
        hits = [a["frame_index"] for a in alarm_list if a["frame_index"] >= onset_frame]
        delay = hits[0] - onset_frame if hits else None
    stop = derived.metadata["stop"]
    steps = np.diff(setpoints)
    return {
        "raw_uid": raw_uid,
        "derived_uid": derived.metadata["start"]["uid"],
        "true_onset_K": onset_K,
        "true_onset_frame": onset_frame,
        "first_alarm": first_alarm,
        "alarms": alarm_list,
        "delay_frames": delay,
        "early_alarms": sum(
            1 for a in alarm_list if onset_frame is None or a["frame_index"] < onset_frame
        ),
        "frames": len(temperatures),
        "frames_analysed": int(stop.get("frames_processed", len(primary["score"]))),
        "frames_skipped": int(stop.get("frames_skipped", 0)),
        "decisions": decisions,
        "temperature_steps_K": sorted({round(float(s), 3) for s in steps}),
        "temperatures_K": temperatures,
        "setpoints_K": setpoints,
    }


def _figure(path: Path, summary: dict[str, Any], derived: Any) -> None:
    """Waterfall, score, temperatures and I(q) before/after, with the alarm and the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = derived["primary"].read()
    q = np.asarray(derived["axes"].read()["q_A"])[0]
    restored = primary["restored"] if "restored" in primary else primary["intensity"]
    patterns = np.asarray(restored)
    frames = np.asarray(primary["frame_index"])
    onset = summary["true_onset_frame"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    waterfall = axes[0, 0]
    rings = q > 0.25 * q[-1]  # the rings; the beam stop's shadow is nothing to see
    waterfall.imshow(
        np.sqrt(np.clip(patterns[:, rings], 0, None)),
        aspect="auto",
        origin="lower",
        extent=(q[rings][0], q[-1], frames[0] - 0.5, frames[-1] + 0.5),
        cmap="magma",
        interpolation="nearest",
    )
    waterfall.set(xlabel="q (1/Å)", ylabel="frame", title="restored I(q) (square root)")
    score = axes[0, 1]
    score.plot(frames, primary["score"], lw=0.8, label="score")
    score.plot(frames, primary["cusum"], lw=1.2, label="CUSUM")
    score.plot(frames, primary["threshold"], "k--", lw=0.8, label="threshold")
    score.set(xlabel="frame", ylabel="statistic", title="change detection")
    temperature = axes[1, 0]
    temperature.plot(summary["setpoints_K"], ".-", ms=3)
    temperature.set(xlabel="frame", ylabel="temperature (K)", title="the ramp as recorded")
    for axis in (waterfall, score, temperature):
        horizontal = axis is waterfall
        line = axis.axhline if horizontal else axis.axvline
        if onset is not None:
            line(onset, color="tab:green", ls=":", label="true onset")
        for k, each in enumerate(summary["alarms"]):
            line(each["frame_index"], color="tab:red", ls="--", label="alarm" if k == 0 else None)
    score.legend(loc="upper left")
    temperature.legend(loc="upper left")
    before_after = axes[1, 1]
    first, last = 0, len(frames) - 1
    if onset is not None:
        first = max(0, int(np.searchsorted(frames, onset)) - 1)
    strongest = int(np.argmax(np.where(rings, patterns[0], 0)))
    window = slice(max(0, strongest - 40), strongest + 40)
    before_after.plot(q[window], patterns[first][window], label=f"frame {frames[first]}")
    before_after.plot(q[window], patterns[last][window], label=f"frame {frames[last]}")
    before_after.set(xlabel="q (1/Å)", ylabel="restored I(q)", title="strongest ring")
    before_after.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(summary: dict[str, Any]) -> str:
    """The summary as a short report."""
    alarm = summary["first_alarm"]
    lines = [
        "# Temporal feedback: a reacting temperature ramp",
        "",
        f"- hidden event: **{summary['kind']}** (seed {summary['seed']}), true onset "
        + (
            f"{summary['true_onset_K']:.2f} K (frame {summary['true_onset_frame']})"
            if summary["true_onset_K"] is not None
            else "none"
        ),
        f"- analysed on: {'the Tango device (temporal live mode)' if summary['use_tango'] else 'in-process monitor'}",  # noqa: E501
        f"- frames: {summary['frames']} of {summary['frame_shape_px'][0]}x"
        f"{summary['frame_shape_px'][1]} px, {summary['frames_analysed']} analysed, "
        f"{summary['frames_skipped']} skipped",
    ]
    if not summary["alarms"]:
        lines.append("- no alarm")
    for alarm in summary["alarms"]:
        lines.append(
            f"- alarm: frame {alarm['frame_index']} at {alarm['temperature_K']:.2f} K "
            f"(estimated start: frame {alarm['onset_frame_index']}; confidence "
            f"{alarm['confidence']:.2f})"
        )
    lines.append(
        f"- detection delay after the true onset: {summary['delay_frames']} frames; alarms "
        f"before it: {summary['early_alarms']}"
    )
    for decision in summary["decisions"]:
        lines.append(f"- plan: **{decision['action']}**: {decision['reason']}")
    lines += [
        f"- temperature steps recorded (K): {summary['temperature_steps_K']}",
        "",
        "Figure: `temporal.png`. Derived run in tiled: "
        f"`{summary['derived_uid']}` (raw run `{summary['raw_uid']}`).",
        "",
    ]
    return "\n".join(lines)

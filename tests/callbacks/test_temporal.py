"""TemporalMonitor with a real RunEngine and the simulated powder beamline: inline and file
frames, the derived run (validated, linked), bad frames and files skipped while the run goes
on, the pre-event buffer, ChangeSignals read by a plan, and the derived run in tiled."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky.plans import list_scan
from event_model import DocumentNames, compose_run, schema_validators
from ophyd.utils import ReadOnlyError

from asirp.diffraction import Alarm, FrameScore, TemporalSettings
from callbacks.change_signals import ChangeSignals
from callbacks.temporal import TemporalMonitor
from callbacks.temporal_publish import (
    MAX_Q_RANGES,
    TEMPORAL_PLAN_NAME,
    TEMPORAL_PURPOSE,
    temporal_runs,
)
from sim.diffraction import small_geometry
from sim.xrd_devices import make_xrd_beamline

GEOMETRY = small_geometry(factor=8)  # 128 x 128 px of 600 µm
SETTINGS = TemporalSettings(restore=False, n_bins=300)
N_FRAMES = 60


def beamline(kind="splitting", seed=0, **kwargs):
    return make_xrd_beamline(
        kind, seed, geometry=GEOMETRY, n_frames=N_FRAMES, approximate_noise=True, **kwargs
    )


def ramp(bl, md=None):
    return list_scan(
        [bl.detector, bl.temperature], bl.temperature, list(bl.temperatures()), md=md or {}
    )


def record(run_engine, plan):
    documents = []
    token = run_engine.subscribe(lambda name, doc: documents.append((name, doc)))
    try:
        run_engine(plan)
    finally:
        run_engine.unsubscribe(token)
    return documents


class Derived:
    """Every document a monitor publishes, validated by event-model's schemas on arrival."""

    def __init__(self, monitor):
        self.documents = []
        monitor.subscribe_documents(self)

    def __call__(self, name, doc):
        schema_validators[DocumentNames[name]].validate(doc)
        self.documents.append((name, doc))

    def runs(self):
        return [doc for name, doc in self.documents if name == "start"]

    def stream(self, run_uid, stream):
        descriptors = {
            doc["uid"]
            for name, doc in self.documents
            if name == "descriptor" and doc["run_start"] == run_uid and doc["name"] == stream
        }
        return [
            doc["data"]
            for name, doc in self.documents
            if name == "event" and doc["descriptor"] in descriptors
        ]

    def descriptor(self, run_uid, stream):
        (found,) = [
            doc
            for name, doc in self.documents
            if name == "descriptor" and doc["run_start"] == run_uid and doc["name"] == stream
        ]
        return found

    def stop(self, run_uid):
        (found,) = [d for n, d in self.documents if n == "stop" and d["run_start"] == run_uid]
        return found


# -- a stand-in analyser with known alarms, for the publication and the threads ---------------
Q = np.linspace(1.0, 4.0, 32)


@dataclass
class Scripted:
    """``process`` returns a FrameScore; alarms at the given frame indices; optional gate."""

    alarm_at: tuple[int, ...] = ()
    gate: threading.Event | None = None

    def __post_init__(self):
        self.index = 0
        self.seen = []

    def process(self, frame, *, time_s, temperature_K=None):
        if self.gate is not None:
            self.gate.wait(30)
        index = self.index
        self.index += 1
        self.seen.append(float(frame.mean()))
        alarm = None
        if index in self.alarm_at:
            alarm = Alarm(
                frame_index=index,
                time_s=time_s,
                temperature_K=temperature_K,
                onset_frame_index=index - 2,
                q_ranges_A=((2.0, 2.1), (3.0, 3.2)),
                confidence=0.9,
                score=5.0,
                threshold=4.0,
            )
        return FrameScore(
            frame_index=index,
            time_s=time_s,
            temperature_K=temperature_K,
            q_A=Q,
            intensity=np.full(Q.size, frame.mean()),
            restored=None,
            score=float(index),
            cusum=0.5 * index,
            alarm=alarm,
        )


def scripted_run(frames, temperatures, *, md=None, page_from=None, shape=None):
    """Documents of a run of inline frames (``event_page`` from frame ``page_from`` on)."""
    bundle = compose_run(metadata=md or {})
    shape = shape or list(GEOMETRY.shape_px)
    descriptor = bundle.compose_descriptor(
        name="primary",
        data_keys={
            "xrd_image": {"source": "sim", "dtype": "array", "shape": shape},
            "temperature_readback": {"source": "sim", "dtype": "number", "shape": [], "units": "K"},
        },
    )
    documents = [("start", bundle.start_doc), ("descriptor", descriptor.descriptor_doc)]
    rows = [
        {"xrd_image": frame, "temperature_readback": temperature}
        for frame, temperature in zip(frames, temperatures, strict=True)
    ]
    single = rows if page_from is None else rows[:page_from]
    for data in single:
        documents.append(
            ("event", descriptor.compose_event(data=data, timestamps=dict.fromkeys(data, 0.0)))
        )
    if page_from is not None:
        paged = rows[page_from:]
        data = {key: [row[key] for row in paged] for key in paged[0]}
        page = descriptor.compose_event_page(
            data=data,
            timestamps={key: [0.0] * len(paged) for key in data},
            seq_num=list(range(page_from + 1, len(rows) + 1)),
            time=[bundle.start_doc["time"] + i for i in range(len(paged))],
            uid=[f"page-{i}" for i in range(len(paged))],
        )
        documents.append(("event_page", page))
    documents.append(("stop", bundle.compose_stop()))
    return documents


def flat_frames(n, value=10.0):
    return [np.full(GEOMETRY.shape_px, value + i, dtype=np.float32) for i in range(n)]


# -- with the simulator and the real analyser -------------------------------------------------
def test_inline_ramp_is_analysed_in_order_with_a_validated_linked_derived_run(caplog):
    bl = beamline("splitting", seed=3)
    monitor = TemporalMonitor(GEOMETRY, SETTINGS)
    derived = Derived(monitor)
    signals = ChangeSignals(name="change")
    signals.attach(monitor)
    updates = []
    monitor.add_listener(updates.append)
    run_engine = RunEngine({})
    run_engine.subscribe(monitor)
    documents = record(run_engine, ramp(bl, md={"sample": "perovskite"}))
    assert monitor.wait(120)
    raw_start = documents[0][1]
    uid = raw_start["uid"]

    (start,) = derived.runs()
    assert start["parent_uid"] == uid
    assert start["plan_name"] == TEMPORAL_PLAN_NAME
    assert start["purpose"] == TEMPORAL_PURPOSE
    assert start["parent_plan_name"] == "list_scan"
    assert start["parent_sample"] == "perovskite"
    assert start["temporal"]["geometry"] == GEOMETRY.as_dict()
    assert start["temporal"]["settings"] == SETTINGS.as_dict()
    assert start["temporal"]["source"] == "defaults"
    assert {"asirp", "pyFAI", "numpy"} <= set(start["versions"])
    assert monitor.derived_uid(uid) == start["uid"]

    raw_events = [doc for name, doc in documents if name == "event"]
    primary = derived.stream(start["uid"], "primary")
    assert [e["frame_index"] for e in primary] == list(range(N_FRAMES))
    assert [e["raw_seq_num"] for e in primary] == [e["seq_num"] for e in raw_events]
    np.testing.assert_allclose(
        [e["temperature_K"] for e in primary],
        [e["data"]["temperature_readback"] for e in raw_events],
    )
    assert all(e["intensity"].shape == (SETTINGS.n_bins,) for e in primary)
    assert "restored" not in primary[0]  # restore is off: the key is left out
    (axes,) = derived.stream(start["uid"], "axes")
    np.testing.assert_allclose(axes["q_A"], updates[0].score.q_A)
    assert derived.descriptor(start["uid"], "axes")["data_keys"]["q_A"]["units"] == "1/angstrom"

    stop = derived.stop(start["uid"])
    assert stop["exit_status"] == "success"
    assert stop["frames_processed"] == N_FRAMES
    assert stop["frames_skipped"] == 0
    alarms = monitor.alarms(uid)
    assert stop["alarms"] == len(alarms) == stop["num_events"].get("alarms", 0)
    assert [u.score.frame_index for u in updates] == list(range(N_FRAMES))

    # the splitting is found, after its true onset
    onset = bl.sequence.onset_frame
    assert alarms, "no alarm on a splitting ramp"
    assert alarms[0].frame_index >= onset
    (first,) = [a for a in derived.stream(start["uid"], "alarms") if a["alarm_index"] == 0]
    assert first["frame_index"] == alarms[0].frame_index
    assert first["temperature_K"] == pytest.approx(alarms[0].temperature_K)
    assert "ALARM at frame" in caplog.text

    # the plan-facing signals follow, and a plan reads them
    assert signals.frames_processed.get() == N_FRAMES
    assert signals.alarm_count.get() == len(alarms)
    assert signals.alarm_frame.get() == alarms[-1].frame_index
    assert signals.alarm_temperature_K.get() == pytest.approx(alarms[-1].temperature_K)
    assert signals.run_uid.get() == uid
    seen = []

    def react():
        count = yield from bps.rd(signals.alarm_count)
        seen.append((count, (yield from bps.rd(signals.alarm_frame))))

    run_engine(react())
    assert seen == [(len(alarms), alarms[-1].frame_index)]
    with pytest.raises(ReadOnlyError):
        signals.alarm_count.put(0)
    monitor.close(10)


def test_a_quiet_ramp_runs_through_and_external_frames_equal_the_inline_ones(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    inline, files = (
        beamline("none", seed=0),
        beamline("none", seed=0, inline=False, write_root=data),
    )
    monitor = TemporalMonitor(GEOMETRY, SETTINGS, data_root=data)
    derived = Derived(monitor)
    run_engine = RunEngine({})
    run_engine.subscribe(monitor)
    uids = [record(run_engine, ramp(bl))[0][1]["uid"] for bl in (inline, files)]
    assert monitor.wait(120)
    assert len(list(data.iterdir())) == N_FRAMES
    patterns = []
    for uid in uids:
        derived_uid = monitor.derived_uid(uid)
        assert derived.stop(derived_uid)["frames_processed"] == N_FRAMES
        patterns.append(np.array([e["intensity"] for e in derived.stream(derived_uid, "primary")]))
    np.testing.assert_array_equal(patterns[0], patterns[1])  # same seed: the same counts
    assert monitor.alarms(uids[0]) == monitor.alarms(uids[1]) == []  # expansion only: quiet
    assert monitor.latest(uids[1]).frames_processed == N_FRAMES
    monitor.close(10)


def _replace_file(path, frame):
    path.unlink()
    with h5py.File(path, "w") as handle:
        handle.create_group("entry").create_group("data").create_dataset(
            "data", data=frame[np.newaxis]
        )


def test_bad_files_and_frames_are_logged_and_skipped_and_later_frames_analysed(tmp_path, caplog):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    bl = beamline("none", seed=1, inline=False, write_root=data)
    documents = record(RunEngine({}), ramp(bl))
    paths = [r.path for r in bl.detector.records]  # frame i has seq_num i + 1
    resources = {
        doc["resource_path"]: index
        for index, (name, doc) in enumerate(documents)
        if name == "resource"
    }

    def resource_of(frame):
        return resources[paths[frame].name]

    # frame 12: its resource names a folder outside the data root (a copy of the file is there)
    shutil.copy(paths[12], outside / paths[12].name)
    index = resource_of(12)
    documents[index] = ("resource", {**documents[index][1], "root": str(outside)})
    # frame 14: climbs out with '..'
    shutil.copy(paths[14], outside / paths[14].name)
    index = resource_of(14)
    documents[index] = (
        "resource",
        {**documents[index][1], "resource_path": f"../outside/{paths[14].name}"},
    )
    # frame 16: a symbolic link (to a good file inside the root)
    paths[16].rename(data / "real16.h5")
    os.symlink(data / "real16.h5", paths[16])
    paths[18].unlink()  # frame 18: vanished
    paths[20].write_bytes(b"not an HDF5 file at all")  # frame 20: corrupt
    good = np.asarray(h5py.File(paths[22], "r")["entry/data/data"][0], dtype=np.float32)
    nan = good.copy()
    nan[5, 7] = np.nan
    _replace_file(paths[22], nan)  # frame 22: a NaN pixel
    _replace_file(paths[24], good[:64, :64])  # frame 24: the wrong shape

    monitor = TemporalMonitor(GEOMETRY, SETTINGS, data_root=data, retry_intervals=())
    derived = Derived(monitor)
    caplog.set_level(logging.WARNING, logger="callbacks.temporal")
    for name, doc in documents:
        monitor(name, doc)
    assert monitor.wait(120)

    derived_uid = monitor.derived_uid(documents[0][1]["uid"])
    stop = derived.stop(derived_uid)
    assert stop["exit_status"] == "success"
    assert stop["skipped"] == {"unreadable": 5, "nonfinite": 1, "shape": 1}
    assert stop["frames_processed"] == N_FRAMES - 7
    analysed = [e["raw_seq_num"] for e in derived.stream(derived_uid, "primary")]
    bad = {13, 15, 17, 19, 21, 23, 25}
    assert analysed == [n for n in range(1, N_FRAMES + 1) if n not in bad]
    for text in (
        "outside the data root",
        "symbolic link",
        "file not found",
        "NaN or infinite",
        "frame shape (64, 64)",
    ):
        assert text in caplog.text
    monitor.close(10)


def test_inline_bad_frames_pages_and_temperatures_are_skipped_without_raising(caplog):
    frames = flat_frames(12)
    temperatures = [300.0 + i for i in range(12)]
    frames[3] = frames[3].copy()
    frames[3][0, 0] = np.inf
    frames[4] = np.zeros((8, 8), dtype=np.float32)
    temperatures[5] = float("nan")
    frames[8] = "not a frame"
    temperatures[9] = -1.0
    documents = scripted_run(frames, temperatures, page_from=6)
    del documents[3][1]["data"]["temperature_readback"]  # frame 1: no temperature at all
    analyzer = Scripted()
    monitor = TemporalMonitor(GEOMETRY, analyzer_factory=lambda config: analyzer)
    derived = Derived(monitor)
    run_engine_thread_errors = []
    for name, doc in documents:
        try:
            monitor(name, doc)
        except Exception as error:  # pragma: no cover - the assertion below reports it
            run_engine_thread_errors.append(error)
    assert monitor.wait(30)
    assert run_engine_thread_errors == []
    stop = derived.stop(derived.runs()[0]["uid"])
    assert stop["skipped"] == {"nonfinite": 1, "shape": 1, "temperature": 3, "type": 1}
    analysed = [e["raw_seq_num"] for e in derived.stream(derived.runs()[0]["uid"], "primary")]
    assert analysed == [1, 3, 7, 8, 11, 12]  # events and the page's rows, in order
    np.testing.assert_allclose(analyzer.seen, [10, 12, 16, 17, 20, 21])
    monitor.close(10)


def test_start_metadata_selects_configures_or_refuses_runs(caplog):
    settings = TemporalSettings(restore=False, n_bins=200)
    good = {
        "asirp_temporal": {
            "geometry": GEOMETRY.as_dict(),
            "settings": settings.as_dict(),
            "image_field": "xrd_image",
            "temperature_field": "temperature_readback",
        }
    }
    bad = {"asirp_temporal": {"geometry": {**GEOMETRY.as_dict(), "pixel_um": "wide"}}}
    monitor = TemporalMonitor()  # no defaults: only runs that ask are analysed
    derived = Derived(monitor)
    run_engine = RunEngine({})
    run_engine.subscribe(monitor)
    bl = make_xrd_beamline("none", 2, geometry=GEOMETRY, n_frames=30, approximate_noise=True)
    plain = record(run_engine, ramp(bl))[0][1]["uid"]
    refused = record(run_engine, ramp(bl, md=bad))[0][1]["uid"]
    asked = record(run_engine, ramp(bl, md=good))[0][1]["uid"]
    assert monitor.wait(60)
    (start,) = derived.runs()
    assert start["parent_uid"] == asked
    assert start["temporal"]["source"] == "metadata"
    assert start["temporal"]["settings"]["n_bins"] == 200
    assert derived.stream(start["uid"], "primary")[0]["intensity"].shape == (200,)
    assert monitor.derived_uid(plain) is None
    assert monitor.derived_uid(refused) is None
    assert f"run {refused}: not analysed: asirp_temporal.geometry is invalid" in caplog.text
    monitor.close(10)


def test_alarms_publish_the_pre_event_buffer_and_a_full_queue_skips_frames():
    gate = threading.Event()
    analyzer = Scripted(alarm_at=(7,), gate=gate)
    frame_bytes = GEOMETRY.n_pixels * 4
    monitor = TemporalMonitor(
        GEOMETRY,
        analyzer_factory=lambda config: analyzer,
        pre_event_frames=5,
        pre_event_frame_bytes=3 * frame_bytes,
        max_queue_frames=8,
    )
    derived = Derived(monitor)
    documents = scripted_run(flat_frames(12), [300.0 + i for i in range(12)])
    for name, doc in documents:
        monitor(name, doc)  # the analyser is held: frames pile up, none blocks this thread
    assert monitor.stats["refused"] >= 3
    gate.set()
    assert monitor.wait(30)
    uid = derived.runs()[0]["uid"]
    stop = derived.stop(uid)
    skipped = stop["skipped"]["queue_full"]
    assert stop["frames_processed"] == 12 - skipped
    assert stop["frames_processed"] >= 8  # the bound, plus the frame the worker held

    (alarm,) = derived.stream(uid, "alarms")
    assert alarm["frame_index"] == 7
    assert alarm["onset_frame_index"] == 5
    assert alarm["temperature_K"] == pytest.approx(307.0)
    assert alarm["onset_temperature_K"] == pytest.approx(305.0)
    assert alarm["n_q_ranges"] == 2
    assert alarm["q_ranges_A"].shape == (MAX_Q_RANGES, 2)
    np.testing.assert_allclose(alarm["q_ranges_A"][:2], [[2.0, 2.1], [3.0, 3.2]])
    assert np.isnan(alarm["q_ranges_A"][2:]).all()
    pre = derived.stream(uid, "pre_event")
    assert [e["frame_index"] for e in pre] == [2, 3, 4, 5, 6]  # the five frames before it
    assert all(e["alarm_index"] == 0 for e in pre)
    kept = derived.stream(uid, "pre_event_frames")
    assert [e["frame_index"] for e in kept] == [4, 5, 6]  # raw frames: the byte cap holds 3
    np.testing.assert_allclose(kept[-1]["frame"].mean(), analyzer.seen[6])
    monitor.close(10)


def test_change_signals_restart_with_each_run_and_apply_updates_whole():
    from callbacks.temporal import TemporalUpdate

    signals = ChangeSignals(name="chg")
    alarm = Alarm(7, 3.5, 320.0, 5, ((2.0, 2.1),), 0.9, 6.0, 4.0)
    seen = []
    signals.alarm_count.subscribe(
        lambda value, **kw: seen.append((value, signals.alarm_frame.get())), run=False
    )

    def update(run, index, count, alarm=None):
        score = FrameScore(index, 0.5 * index, 300.0, Q, Q, None, 1.0, 2.0, alarm)
        return TemporalUpdate(run, "d", score, index + 1, index + 1, 0, count)

    signals(update("r1", 6, 0))
    signals(update("r1", 7, 1, alarm))
    assert seen[-1] == (1, 7)  # the alarm's frame was set before the count rose
    assert signals.alarm_temperature_K.get() == 320.0
    assert signals.alarm_time_s.get() == 3.5
    assert signals.alarm_onset_frame.get() == 5
    signals(update("r2", 0, 0))
    assert signals.run_uid.get() == "r2"
    assert signals.alarm_frame.get() == -1
    assert np.isnan(signals.alarm_temperature_K.get())
    assert signals.frames_processed.get() == 1
    assert signals.alarm_count.get() == 0
    reading = signals.read()
    assert reading["chg_alarm_count"]["value"] == 0


def test_derived_run_arrives_in_tiled(tiled_client):
    analyzer = Scripted(alarm_at=(4,))
    monitor = TemporalMonitor(
        GEOMETRY,
        analyzer_factory=lambda config: analyzer,
        tiled=tiled_client,
        pre_event_frames=3,
        pre_event_frame_bytes=GEOMETRY.n_pixels * 4,
    )
    documents = scripted_run(flat_frames(8), [300.0 + i for i in range(8)])
    for name, doc in documents:
        monitor(name, doc)
    assert monitor.wait(60)
    assert monitor.close(10)
    assert monitor.tiled.errors == 0, monitor.tiled.last_error
    raw_uid = documents[0][1]["uid"]
    (run,) = temporal_runs(tiled_client, raw_uid).values()
    assert run.metadata["start"]["parent_uid"] == raw_uid
    assert run.metadata["stop"]["frames_processed"] == 8
    intensity = run["primary"]["intensity"].read()
    assert intensity.shape == (8, Q.size)
    np.testing.assert_allclose(intensity[:, 0], analyzer.seen)
    np.testing.assert_allclose(run["axes"]["q_A"].read()[0], Q)
    assert list(run["alarms"]["frame_index"].read()) == [4]
    assert run["alarms"]["q_ranges_A"].read().shape == (1, MAX_Q_RANGES, 2)
    assert list(run["pre_event"]["frame_index"].read()) == [1, 2, 3]
    assert run["pre_event_frames"]["frame"].read().shape == (1, *GEOMETRY.shape_px)


def test_runs_left_open_at_shutdown_end_their_derived_runs_as_aborted():
    monitor = TemporalMonitor(GEOMETRY, analyzer_factory=lambda config: Scripted())
    derived = Derived(monitor)
    documents = scripted_run(flat_frames(4), [300.0, 301.0, 302.0, 303.0])
    for name, doc in documents[:-2]:  # the last event and the stop never come
        monitor(name, doc)
    raw_uid = documents[0][1]["uid"]
    assert monitor.finish_open_runs("asirp live stopped by SIGTERM") == [raw_uid]
    monitor(*documents[-1])  # a late stop of a finished run is ignored
    assert monitor.wait(30)
    stop = derived.stop(monitor.derived_uid(raw_uid))
    assert stop["exit_status"] == "abort"
    assert stop["reason"] == "asirp live stopped by SIGTERM"
    assert stop["frames_processed"] == 3
    assert monitor.close(10)


def test_runs_that_never_stop_are_ended_when_too_many_are_open(monkeypatch):
    import callbacks.temporal

    monkeypatch.setattr(callbacks.temporal, "MAX_OPEN_RUNS", 2)
    monitor = TemporalMonitor(GEOMETRY, analyzer_factory=lambda config: Scripted())
    derived = Derived(monitor)
    runs = [scripted_run(flat_frames(1), [300.0]) for _ in range(3)]
    for documents in runs:
        for name, doc in documents[:-1]:  # no stop document
            monitor(name, doc)
    assert monitor.wait(30)
    first = monitor.derived_uid(runs[0][0][1]["uid"])
    assert derived.stop(first)["exit_status"] == "abort"
    assert [d["run_start"] for n, d in derived.documents if n == "stop"] == [first]
    assert monitor.finish_open_runs("end") == [r[0][1]["uid"] for r in runs[1:]]
    assert monitor.close(10)

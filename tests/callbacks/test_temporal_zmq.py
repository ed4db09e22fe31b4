"""``asirp live --temporal`` as beamlines run it, on loopback: ``bluesky-0MQ-proxy`` and the
temporal worker in child processes, the RunEngine here publishing msgpack documents of a
simulated ramp, the derived run read back from the session's tiled server; and the command's
refusals of bad options before anything starts."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher

from asirp.cli import main
from asirp.diffraction import TemporalSettings
from callbacks.serialization import serializer
from callbacks.temporal_publish import temporal_runs
from sim.diffraction import small_geometry
from sim.xrd_devices import make_xrd_beamline
from tests.callbacks.test_system import STARTUP_TIMEOUT_S, Child, _free_port
from tests.callbacks.test_temporal import ramp

GEOMETRY = small_geometry(factor=8)
N_FRAMES = 30


def _wait_for_stopped_temporal_run(client, uid: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = temporal_runs(client, uid)
        if len(found) == 1:
            run = next(iter(found.values()))
            if "stop" in run.metadata:
                return run
        time.sleep(0.5)
    raise AssertionError(f"no finished temporal run of {uid} in tiled after {timeout} s")


def test_temporal_worker_behind_the_0mq_proxy_publishes_to_tiled(
    tiled_server, tiled_client, tmp_path
):
    geometry_json = tmp_path / "geometry.json"
    geometry_json.write_text(json.dumps(GEOMETRY.as_dict()))
    settings_json = tmp_path / "settings.json"
    settings_json.write_text(json.dumps(TemporalSettings(restore=False, n_bins=200).as_dict()))
    in_port, out_port = _free_port(), _free_port()
    proxy = Child(
        [
            str(Path(sys.executable).parent / "bluesky-0MQ-proxy"),
            "--in-address",
            f"127.0.0.1:{in_port}",
            "--out-address",
            f"127.0.0.1:{out_port}",
        ]
    )
    live = Child(
        [
            sys.executable,
            "-m",
            "asirp.cli",
            "live",
            "--temporal",
            "--zmq",
            f"127.0.0.1:{out_port}",
            "--tiled-uri",
            tiled_server.uri,
            "--geometry-json",
            str(geometry_json),
            "--settings-json",
            str(settings_json),
        ]
    )
    try:
        proxy.wait_for(r"Receiving on address", STARTUP_TIMEOUT_S)
        live.wait_for(r"asirp live --temporal: subscribed to tcp://127\.0\.0\.1", STARTUP_TIMEOUT_S)
        time.sleep(1.0)  # let both 0MQ connections settle (PUB/SUB drop messages until then)
        publisher = Publisher(f"127.0.0.1:{in_port}", serializer=serializer)
        run_engine = RunEngine({})
        run_engine.subscribe(publisher)
        time.sleep(0.5)  # the publisher's connection to the proxy
        bl = make_xrd_beamline(
            "none", 4, geometry=GEOMETRY, n_frames=N_FRAMES, approximate_noise=True
        )
        try:
            (uid,) = run_engine(ramp(bl))
        finally:
            publisher.close()
        derived = _wait_for_stopped_temporal_run(tiled_client, uid)
        metadata = derived.metadata
        assert metadata["start"]["parent_uid"] == uid
        assert metadata["start"]["temporal"]["geometry"] == GEOMETRY.as_dict()
        assert metadata["stop"]["exit_status"] == "success"
        assert metadata["stop"]["frames_processed"] == N_FRAMES
        assert derived["primary"]["intensity"].read().shape == (N_FRAMES, 200)
        live.wait_for(rf"run {uid}: {N_FRAMES} frame\(s\) analysed, 0 skipped", 10.0)
        live.process.send_signal(signal.SIGTERM)
        assert live.process.wait(60) == 0
        live.wait_for(r"asirp live --temporal: stopped \(SIGTERM\)", 5.0)
    finally:
        live.stop()
        proxy.stop()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--field", "det"], "--field: map options, not used with --temporal"),
        (["--geometry-json", "missing.json"], "--geometry-json missing.json"),
        (["--settings-json", "BAD_JSON"], "--settings-json BAD_JSON: not JSON"),
        (["--geometry-json", "GEOMETRY", "--pre-event", "-1"], "--pre-event"),
        (["--geometry-json", "BAD_GEOMETRY"], "geometry is invalid"),
        (["--root-map", "nothing"], "FROM=TO"),
        (["--data-root", "no/such/folder"], "is not an existing folder"),
    ],
)
def test_temporal_command_refuses_bad_options_before_connecting(
    arguments, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    Path("GEOMETRY").write_text(json.dumps(GEOMETRY.as_dict()))
    Path("BAD_JSON").write_text("{bad")
    Path("BAD_GEOMETRY").write_text(json.dumps({**GEOMETRY.as_dict(), "shape_px": 3}))
    status = main(["live", "--temporal", "--zmq", "127.0.0.1:1", "--no-tiled", *arguments])
    assert status == 2
    assert message in capsys.readouterr().err

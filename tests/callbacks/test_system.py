"""System test of the out-of-process mode, as beamlines run it, all on loopback:

``bluesky-0MQ-proxy`` and ``asirp live --zmq ... --tiled-uri ... --write-raw`` run as child
processes; this process runs the RunEngine (publishing msgpack documents to the proxy with
bluesky's ``Publisher``) and the session's embedded tiled server. The derived run read back
from tiled must equal ``asirp.restore`` of the raw run read back from tiled; SIGTERM in the
middle of a run must end it cleanly (derived run ``abort`` with the reason, raw run closed).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher

import asirp
from callbacks.publish import derived_runs, read_final_map
from callbacks.serialization import serializer
from tests.callbacks.conftest import BEAM_FWHM_UM, assemble, assert_same_restoration, grid_plan

STARTUP_TIMEOUT_S = 90.0
STEP_UM = 20.0  # a small PSF (11 px), so partial maps are restored after a few rows


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Child:
    """A child process whose merged stdout/stderr lines are collected by a thread."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            self._queue.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        for line in self.lines:
            if match := regex.search(line):
                return match
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self._queue.empty():
                    break
                continue
            if match := regex.search(line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.lines)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def live_system(tiled_server) -> Iterator[tuple[int, Child]]:
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
            "--zmq",
            f"127.0.0.1:{out_port}",
            "--tiled-uri",
            tiled_server.uri,
            "--write-raw",
            "--field",
            "xrf_Cu",
            "--normalize",
            "i0",
            "--beam-fwhm-um",
            str(BEAM_FWHM_UM),
            "--method",
            "richardson_lucy",
            "--every-rows",
            "2",
            "--min-rows",
            "4",
            "--device",
            "cpu",
        ]
    )
    try:
        proxy.wait_for(r"Receiving on address", STARTUP_TIMEOUT_S)
        live.wait_for(r"asirp live: subscribed to tcp://127\.0\.0\.1", STARTUP_TIMEOUT_S)
        time.sleep(1.0)  # let both 0MQ connections settle (PUB/SUB drop messages until then)
        yield in_port, live
    finally:
        live.stop()
        proxy.stop()


def _wait_for_stopped_derived_run(client, uid: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = derived_runs(client, uid)
        if len(found) == 1:
            run = next(iter(found.values()))
            if "stop" in run.metadata:
                return run
        time.sleep(0.5)
    raise AssertionError(f"no finished derived run of {uid} in tiled after {timeout} s")


def test_out_of_process_live_restoration_through_the_0mq_proxy(live_system, beamline, tiled_client):
    in_port, live = live_system
    publisher = Publisher(f"127.0.0.1:{in_port}", serializer=serializer)
    run_engine = RunEngine({})
    run_engine.subscribe(publisher)
    time.sleep(0.5)  # the publisher's connection to the proxy
    try:
        (uid,) = run_engine(grid_plan(beamline, 12, step_um=STEP_UM))
    finally:
        publisher.close()
    derived = _wait_for_stopped_derived_run(tiled_client, uid)
    raw = tiled_client[uid]  # written by the live process (--write-raw)
    start = raw.metadata["start"]
    primary = raw["primary"]
    image = assemble(
        *(primary[key].read() for key in ("y", "x", "xrf_Cu", "i0")),
        start["extents"],
        tuple(start["shape"]),
    )
    assert np.isfinite(image).all()
    i0 = np.asarray(primary["i0"].read(), dtype=np.float64)
    offline = asirp.restore(
        image,
        "richardson_lucy",
        beam_fwhm_um=BEAM_FWHM_UM,
        pixel_um=STEP_UM,
        device="cpu",
        counts_gain=float(np.mean(i0.mean() / i0)),  # the live restorer's: from the monitor
    )
    np.testing.assert_allclose(derived["restored"]["input_map"].read()[-1], image, rtol=1e-6)
    assert_same_restoration(read_final_map(derived), offline.image)
    metadata = derived.metadata
    assert metadata["start"]["parent_uid"] == uid
    assert metadata["start"]["method"] == "richardson_lucy"
    assert metadata["start"]["psf"]["pixel_um"] == pytest.approx([STEP_UM, STEP_UM])
    assert metadata["stop"]["exit_status"] == "success"
    live.wait_for(rf"run {uid}: partial restoration", 5.0)
    assert live.process.poll() is None


def test_sigterm_mid_run_finishes_the_open_run_and_exits_cleanly(
    live_system, beamline, tiled_client
):
    in_port, live = live_system
    documents = []
    run_engine = RunEngine({})
    run_engine.subscribe(lambda name, doc: documents.append((name, doc)))
    (uid,) = run_engine(grid_plan(beamline, 10, step_um=STEP_UM))
    # Publish the start, the descriptor and the first 6 rows; the stop never comes.
    publisher = Publisher(f"127.0.0.1:{in_port}", serializer=serializer)
    time.sleep(0.5)
    try:
        for name, doc in documents:
            if name == "stop" or (name == "event" and doc["seq_num"] > 60):
                continue
            publisher(name, doc)
        live.wait_for(rf"run {uid}: partial restoration \d+: richardson_lucy on 6 row", 60.0)
    finally:
        publisher.close()
    live.process.send_signal(signal.SIGTERM)
    assert live.process.wait(60) == 0
    live.wait_for(r"asirp live: stopped \(SIGTERM\)", 5.0)

    derived = _wait_for_stopped_derived_run(tiled_client, uid, timeout=10.0)
    stop = derived.metadata["stop"]
    assert stop["exit_status"] == "abort"
    assert "SIGTERM" in stop["reason"]
    rows = derived["restored"]["rows_restored"].read()
    assert list(rows) == [6]  # the complete rows measured
    restored = read_final_map(derived)
    assert np.isfinite(restored[:6]).all()
    assert np.isnan(restored[6:]).all()
    raw_stop = tiled_client[uid].metadata["stop"]
    assert raw_stop["exit_status"] == "abort"

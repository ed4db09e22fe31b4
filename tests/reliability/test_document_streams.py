"""Hostile bluesky document streams: documents are data, never code (security issue #12).

Everything runs on 127.0.0.1: ``bluesky-0MQ-proxy`` in a child process, the receivers (``asirp
live`` and the Tango device server in child processes, :class:`asirp_device.live.LiveMode` in
this one), and the publishers here. A hostile publisher sends, through the proxy: a pickle whose
``__reduce__`` creates a file, a document with an unknown name, bytes that are no document, and
a start document of a 12000 x 12000 map. None of it may run code, kill the receiver or allocate
the map; the next normal run (msgpack, :func:`callbacks.serialization.serializer`) must still
be restored. Pickle is read only when explicitly allowed, with a warning. ``asirp live`` turns
a bad ``--zmq`` address into one line with exit status 2 and never prints tiled secrets.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import pickle
import re
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np
import pytest
import tango
from bluesky.callbacks.zmq import Publisher

from asirp.cli import main
from asirp_device.live import LiveMode, LiveOptions
from callbacks.address import redact_uri
from callbacks.live import LiveRestorer
from callbacks.serialization import DocumentDecodeError, deserializer, serializer
from tests.asirp_device._scans import BEAM_FWHM_UM, ITERATIONS, run_scan, wait_until
from tests.asirp_device.conftest import (
    STARTUP_TIMEOUT_S,
    ChildServer,
    DocumentProxy,
    child_environment,
    free_port,
    start_nodb_server,
)
from tests.asirp_device.test_live import make_component

pytestmark = pytest.mark.timeout(600)

SCAN_ROWS = 8
HUGE_SHAPE = [12000, 12000]  # about 2.3 GB of live map (values, monitor, flags) if allocated
MAX_RSS_GROWTH = 100 * 2**20
SECRET = "SECRET123"
LIVE_ARGUMENTS = [
    "--no-tiled",
    "--field",
    "xrf_Cu",
    "--normalize",
    "i0",
    "--beam-fwhm-um",
    str(BEAM_FWHM_UM),
    "--method",
    "richardson_lucy",
    "--iterations",
    str(ITERATIONS),
    "--every-rows",
    "0",
    "--device",
    "cpu",
]
DEVICE_PROPERTIES = {
    "DefaultIterations": ITERATIONS,
    "DefaultBeamFwhmUm": BEAM_FWHM_UM,
    "ComputeDevice": "cpu",
    "LiveField": "xrf_Cu",
    "LiveNormalize": "i0",
    "LiveEveryRows": 0,
}

Send = Callable[[str, bytes], None]


# ---------------------------------------------------------------------------------- payloads
class _Touch:
    """Unpickling this creates ``path``: code chosen by the sender runs in the receiver."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def pickle_bomb(target: Path) -> bytes:
    """A pickled 'start document' whose unpickling creates ``target``."""
    return pickle.dumps({"uid": str(uuid.uuid4()), "time": time.time(), "x": _Touch(target)})


def hostile_messages(target: Path) -> list[tuple[str, bytes]]:
    """(name, payload) of messages that must be dropped; none may create ``target``."""
    bomb = pickle_bomb(target)
    object_array = msgpack.packb(  # msgpack_numpy's own decoder would unpickle this
        {"uid": str(uuid.uuid4()), "time": 0.0, "a": np.array([_Touch(target)], dtype=object)},
        default=msgpack_numpy.encode,
        use_bin_type=True,
    )
    return [
        ("start", bomb),
        ("event", bomb),
        ("start", object_array),
        ("bogus", serializer({"uid": str(uuid.uuid4()), "time": 0.0})),
        ("start", b"\xc1\x00 garbage \xff"),
        ("descriptor", serializer([1, 2, 3])),
    ]


Encode = Callable[[Any], bytes]


def marker(send: Send, encode: Encode = serializer) -> str:
    """Publish a start document without a map (logged, not restored); return its uid."""
    uid = str(uuid.uuid4())
    send("start", encode({"uid": uid, "time": time.time(), "purpose": "marker"}))
    return uid


def scan_documents(rows: int = SCAN_ROWS) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """A ``rows x rows`` grid scan of the simulated beamline: its uid and documents."""
    scan = run_scan(rows)
    return scan.uid, scan.documents


def huge_run(documents: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """``documents`` of a scan as a new run whose start says ``shape`` 12000 x 12000."""
    uid = str(uuid.uuid4())
    out = []
    for name, doc in documents:
        doc = copy.deepcopy(doc)
        if name == "start":
            doc["uid"], doc["shape"] = uid, HUGE_SHAPE
        elif name in ("descriptor", "stop"):
            doc["run_start"] = uid
            doc["uid"] = str(uuid.uuid4())
        elif name == "event":
            doc["uid"] = str(uuid.uuid4())
        out.append((name, doc))
    return out


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux ``/proc``), bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def proxy() -> Iterator[DocumentProxy]:
    proxy = DocumentProxy()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def send(proxy: DocumentProxy) -> Iterator[Send]:
    """Publish raw payloads (``send(name, payload_bytes)``) into the proxy, in order."""
    publisher = Publisher(proxy.in_address, serializer=lambda payload: payload)
    yield publisher
    publisher.close()


def publish(
    send: Send, documents: list[tuple[str, dict[str, Any]]], encode: Encode = serializer
) -> None:
    """Publish ``documents`` encoded with ``encode`` (msgpack by default)."""
    for name, doc in documents:
        send(name, encode(doc))


def connect(
    send: Send, seen: Callable[[str], bool], encode: Encode = serializer, timeout: float = 60.0
) -> None:
    """Publish markers until the receiver shows one (0MQ drops messages until joined)."""
    deadline = time.monotonic() + timeout
    while True:
        uid = marker(send, encode)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            if seen(uid):
                return
            time.sleep(0.05)
        assert time.monotonic() < deadline, f"no marker reached the receiver in {timeout} s"


def live_command(proxy: DocumentProxy, *extra: str) -> ChildServer:
    child = ChildServer(
        [sys.executable, "-m", "asirp.cli", "live", "--zmq", proxy.out_address, *extra],
        r"asirp live: subscribed to",
        env=child_environment(PYTHONUNBUFFERED="1"),
    )
    child.wait_ready(STARTUP_TIMEOUT_S)
    return child


def stop_child(child: ChildServer) -> int:
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(60)
        except subprocess.TimeoutExpired:
            child.process.kill()
    return child.finish()


def in_output(child: ChildServer, text: str) -> bool:
    return any(text in line for line in list(child.lines))


@pytest.fixture(scope="module")
def live_child(proxy: DocumentProxy) -> Iterator[ChildServer]:
    """``asirp live`` (msgpack only) subscribed to ``proxy``."""
    child = live_command(proxy, *LIVE_ARGUMENTS)
    try:
        yield child
    finally:
        assert stop_child(child) == 0, child.output()


def restored_by_command(child: ChildServer, uid: str) -> bool:
    return in_output(child, f"run {uid}: final restoration")


# ---------------------------------------------------------------------------------- the format
def test_the_pickle_bomb_runs_code_when_unpickled(tmp_path):
    """Control: the payload used below does run code when unpickled."""
    target = tmp_path / "control"
    pickle.loads(pickle_bomb(target))
    assert target.exists()


def test_documents_round_trip_as_msgpack_with_arrays():
    doc = {
        "uid": "u",
        "shape": (8, 8),
        "data": {"spectrum": np.arange(12, dtype=">f4").reshape(3, 4), "i0": np.float32(2.5)},
        "flags": np.array([True, False]),
        "names": np.array(["a", "b"]),
    }
    decoded = deserializer(serializer(doc))
    assert decoded["shape"] == [8, 8]
    np.testing.assert_array_equal(decoded["data"]["spectrum"], doc["data"]["spectrum"])
    assert decoded["data"]["spectrum"].dtype == np.dtype(">f4")
    assert decoded["data"]["spectrum"].flags.writeable
    assert decoded["data"]["i0"] == 2.5
    assert decoded["flags"].dtype == bool
    assert decoded["names"] == ["a", "b"]


def test_the_deserializer_refuses_what_is_not_plain_data(tmp_path):
    target = tmp_path / "pwned"
    for name, payload in hostile_messages(target):
        if name == "bogus":
            continue  # a valid payload: the dispatcher drops it by its name
        with pytest.raises(DocumentDecodeError):
            deserializer(payload)
    liar = msgpack.packb(
        {"a": {b"nd": True, b"type": "<f8", b"kind": b"", b"shape": [10**9], b"data": b"1" * 8}},
        use_bin_type=True,
    )
    with pytest.raises(DocumentDecodeError, match="does not hold 8 bytes"):
        deserializer(liar)
    assert not target.exists()


def test_redact_uri_hides_keys_and_passwords():
    uri = f"http://me:{SECRET}@tiled:8000/api/v1?api_key={SECRET}&x=1"
    redacted = redact_uri(uri)
    assert SECRET not in redacted
    assert redacted.startswith("http://me:***@tiled:8000/api/v1?")
    assert "api_key=***" in redacted
    assert "x=1" in redacted


def test_a_tiny_step_with_a_wide_beam_allocates_no_huge_kernel():
    """A start document's extents set the PSF in pixels; a 0.017 µm step and a 50 µm beam
    would make a 9995 x 9995 kernel (380 MB) when the run starts if it were not cropped."""
    _uid, documents = scan_documents()
    start = dict(documents[0][1], extents=[[0.0, 0.12], [0.0, 0.12]])
    restorer = LiveRestorer(
        "xrf_Cu", "richardson_lucy", normalize="i0", beam_fwhm_um=BEAM_FWHM_UM, every_rows=None
    )
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the peak includes them
    try:
        restorer("start", start)
        _, peak = tracemalloc.get_traced_memory()
        assert restorer.active_run == start["uid"]  # the run is mapped, not refused
    finally:
        tracemalloc.stop()
        restorer.close(timeout=10, cancel=True)
    assert peak < MAX_RSS_GROWTH, f"{peak / 2**20:.0f} MiB allocated at the start document"


# ---------------------------------------------------------------------------------- asirp live
def test_asirp_live_never_unpickles_and_survives_bad_messages(live_child, send, tmp_path):
    connect(send, lambda uid: in_output(live_child, uid))
    target = tmp_path / "pwned"
    for name, payload in hostile_messages(target):
        send(name, payload)
    uid, documents = scan_documents()
    publish(send, documents)
    wait_until(lambda: restored_by_command(live_child, uid), 120, "the next run restored")
    assert not target.exists()
    assert live_child.process.poll() is None
    assert in_output(live_child, "unknown document name 'bogus'")
    assert in_output(live_child, "does not decode")


def test_asirp_live_refuses_a_huge_map_without_allocating_it(live_child, send):
    connect(send, lambda uid: in_output(live_child, uid))
    uid, documents = scan_documents()
    publish(send, documents)  # warm-up: the first restoration's own allocations
    wait_until(lambda: restored_by_command(live_child, uid), 120, "the warm-up run restored")
    huge = huge_run(scan_documents()[1])
    before = rss_bytes(live_child.process.pid)
    publish(send, huge[:-1])  # start, descriptor, events: the run is still open
    after_uid = marker(send)
    wait_until(lambda: in_output(live_child, after_uid), 60, "the documents after the huge start")
    growth = rss_bytes(live_child.process.pid) - before
    publish(send, huge[-1:])
    assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.0f} MiB"
    assert in_output(live_child, "larger than the live-map limit")
    uid, documents = scan_documents()
    publish(send, documents)
    wait_until(lambda: restored_by_command(live_child, uid), 120, "the next run restored")


def test_asirp_live_reads_pickle_only_when_allowed_and_warns(proxy, send):
    child = live_command(proxy, *LIVE_ARGUMENTS, "--allow-pickle")
    try:
        connect(send, lambda uid: in_output(child, uid), pickle.dumps)
        uid, documents = scan_documents()
        publish(send, documents, encode=pickle.dumps)
        wait_until(lambda: restored_by_command(child, uid), 120, "the pickled run restored")
        assert in_output(child, "trusts every publisher that can reach the 0MQ proxy")
    finally:
        assert stop_child(child) == 0, child.output()


# ---------------------------------------------------------------------------------- LiveMode
@contextlib.contextmanager
def live_mode(proxy: DocumentProxy, allow_pickle: bool = False) -> Iterator[LiveMode]:
    component, _ = make_component()
    mode = LiveMode(
        component,
        LiveOptions(field="xrf_Cu", normalize="i0", every_rows=0, allow_pickle=allow_pickle),
    )
    mode.start(proxy.out_address)
    try:
        yield mode
    finally:
        mode.stop()


def test_live_mode_never_unpickles_and_survives_bad_messages(proxy, send, tmp_path):
    with live_mode(proxy) as mode:
        connect(send, lambda uid: uid in mode.status)
        target = tmp_path / "pwned"
        for name, payload in hostile_messages(target):
            send(name, payload)
        _uid, documents = scan_documents()
        publish(send, documents)
        wait_until(lambda: mode.runs_restored == 1, 120, "the next run restored")
        assert not target.exists()
        assert mode.live


def test_live_mode_refuses_a_huge_map_without_allocating_it(proxy, send, caplog):
    with live_mode(proxy) as mode:
        connect(send, lambda uid: uid in mode.status)
        publish(send, scan_documents()[1])
        wait_until(lambda: mode.runs_restored == 1, 120, "the warm-up run restored")
        huge = huge_run(scan_documents()[1])
        before = rss_bytes()
        publish(send, huge[:-1])
        after_uid = marker(send)
        wait_until(lambda: after_uid in mode.status, 60, "the documents after the huge start")
        growth = rss_bytes() - before
        publish(send, huge[-1:])
        assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.0f} MiB"
        assert "larger than the live-map limit" in caplog.text
        publish(send, scan_documents()[1])
        wait_until(lambda: mode.runs_restored == 2, 120, "the next run restored")


def test_live_mode_reads_pickle_only_when_allowed_and_warns(proxy, send, caplog):
    with (
        caplog.at_level(logging.WARNING, logger="callbacks.dispatcher"),
        live_mode(proxy, allow_pickle=True) as mode,
    ):
        connect(send, lambda uid: uid in mode.status, pickle.dumps)
        publish(send, scan_documents()[1], encode=pickle.dumps)
        wait_until(lambda: mode.runs_restored == 1, 120, "the pickled run restored")
    assert "trusts every publisher that can reach the 0MQ proxy" in caplog.text


# ---------------------------------------------------------------------------------- device
@contextlib.contextmanager
def device_server(properties: dict[str, Any]) -> Iterator[tuple[ChildServer, tango.DeviceProxy]]:
    child = start_nodb_server(properties)
    try:
        device = tango.DeviceProxy(child.wait_ready()["trl"])
        yield child, device
        device.StopLive()
    finally:
        status = child.stop()
    assert status == 0, child.output()


def test_device_server_never_unpickles_refuses_huge_maps_and_keeps_restoring(proxy, send, tmp_path):
    with device_server(DEVICE_PROPERTIES) as (child, device):
        device.StartLive(proxy.out_address)
        connect(send, lambda uid: uid in device.status())
        target = tmp_path / "pwned"
        for name, payload in hostile_messages(target):
            send(name, payload)
        publish(send, scan_documents()[1])
        wait_until(lambda: device.live_runs_restored == 1, 120, "the next run restored")
        assert not target.exists()

        huge = huge_run(scan_documents()[1])
        before = rss_bytes(child.process.pid)
        publish(send, huge[:-1])
        after_uid = marker(send)
        wait_until(lambda: after_uid in device.status(), 60, "the documents after the huge map")
        growth = rss_bytes(child.process.pid) - before
        publish(send, huge[-1:])
        assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.0f} MiB"
        publish(send, scan_documents()[1])
        wait_until(lambda: device.live_runs_restored == 2, 120, "the run after the huge one")
        assert device.state() == tango.DevState.ON, device.status()
    assert in_output(child, "unknown document name 'bogus'")
    assert in_output(child, "larger than the live-map limit")


def test_device_server_reads_pickle_only_with_live_allow_pickle(proxy, send):
    with device_server({**DEVICE_PROPERTIES, "LiveAllowPickle": True}) as (child, device):
        device.StartLive(proxy.out_address)
        connect(send, lambda uid: uid in device.status(), pickle.dumps)
        publish(send, scan_documents()[1], encode=pickle.dumps)
        wait_until(lambda: device.live_runs_restored == 1, 120, "the pickled run restored")
    assert in_output(child, "trusts every publisher that can reach the 0MQ proxy")


# ---------------------------------------------------------------------------------- the CLI
def test_a_bad_zmq_address_is_one_line_and_exit_status_2():
    completed = subprocess.run(
        [sys.executable, "-m", "asirp.cli", "live", "--zmq", "nonsense", "--field", "f"],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_environment(),
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("asirp: error: malformed --zmq address")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:0", "between 1 and 65535"),
        ("127.0.0.1:port", "malformed --zmq address"),
        ("no-such-host.invalid:5578", "cannot resolve the host"),
    ],
)
def test_other_bad_zmq_addresses_are_refused_before_anything_starts(address, message, capsys):
    assert main(["live", "--zmq", address, "--field", "f", "--no-tiled"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asirp: error:")
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "tiled",
    [
        ["--tiled-uri", f"http://127.0.0.1:1/api/v1?api_key={SECRET}"],
        ["--tiled-uri", "http://127.0.0.1:1/api/v1", "--api-key", SECRET],
        ["--tiled-uri", f"http://user:{SECRET}@127.0.0.1:1/api/v1"],
    ],
)
def test_asirp_live_never_prints_the_tiled_secret(tiled):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "asirp.cli",
            "live",
            "--zmq",
            f"127.0.0.1:{free_port()}",
            "--field",
            "f",
            *tiled,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=child_environment(TILED_API_KEY=None, TILED_RETRY_ATTEMPTS="1"),  # refused at once
    )
    output = completed.stdout + completed.stderr
    assert SECRET not in output
    assert "Traceback" not in output
    assert completed.returncode == 2, output
    assert "asirp: error: cannot connect to the tiled server http://" in completed.stderr


def test_asirp_live_with_an_embedded_server_never_prints_its_key(proxy, tmp_path):
    child = live_command(
        proxy, "--field", "f", "--tiled-dir", str(tmp_path / "tiled"), "--api-key", SECRET
    )
    try:
        assert in_output(child, "asirp live: tiled at http://127.0.0.1:")
    finally:
        status = stop_child(child)
    assert status == 0, child.output()
    assert SECRET not in "\n".join(child.lines)

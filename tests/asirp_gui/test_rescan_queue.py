"""ROI rescans from the live tab to a real RE Manager (redis and the manager in child processes).

One manager serves the module, its environment open with the shipped profile (the manager
checks plans and devices against the lists it got from there). Each test leaves the queue empty.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from bluesky_queueserver_api.zmq import REManagerAPI
from qtpy.QtCore import QTimer

from asirp.cli import EXIT_BAD_INPUT, build_parser, main
from asirp_gui.command import QUEUE_SERVER_ENV
from asirp_gui.rescan import PUBLIC_KEY_ENV, QueueServerSender, rescan_item
from tests.asirp_device.conftest import free_port, small_map
from tests.qserver_support import manager_api, open_environment, re_manager, redis_server

WAIT_MS = 20_000
SEND_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory) -> Iterator[tuple[str, REManagerAPI]]:
    """The control address of an RE Manager with an open environment, and a client of it."""
    folder = tmp_path_factory.mktemp("qserver")
    with (
        redis_server(folder) as redis_addr,
        re_manager(redis_addr, folder) as control,
        manager_api(control) as api,
    ):
        open_environment(api)
        yield control, api


@pytest.fixture
def manager(queue_server) -> Iterator[REManagerAPI]:
    """The module's manager client; the queue is emptied after the test."""
    _, api = queue_server
    yield api
    api.queue_clear()


def live_tab_with_roi(window):
    """The live tab showing a 32 x 32 map of 8 µm pixels with the default ROI drawn."""
    live = window.live
    live.pixel_um.setValue(8.0)
    live.beam_fwhm_um.setValue(40.0)
    live.target_resolution_um.setValue(40.0)  # a 20 µm step: 7 x 7 points
    live.show_restored(small_map((32, 32), seed=1))
    live.restored_view.add_roi()
    return live


def test_the_live_tab_sends_its_roi_into_the_queue(qtbot, window, queue_server, manager):
    control, _ = queue_server
    live = live_tab_with_roi(window)
    live.sender = QueueServerSender(control)
    item = live.send_roi()
    assert item is not None
    qtbot.waitUntil(lambda: live.last_item is not None, timeout=WAIT_MS)
    assert live.last_item == item
    (queued,) = manager.queue_get()["items"]
    assert queued["name"] == "grid_scan"
    assert queued["args"] == [["xrf", "i0"], "sample_y", 64.0, 184.0, 7, "sample_x", 64.0, 184.0, 7]
    assert queued["args"] == item["args"]
    assert queued["kwargs"] == item["kwargs"]
    assert queued["user_group"] == "primary"
    assert queued["user"] == "asirp operator"
    message = live.message.text()
    assert message == f"rescan {queued['item_uid']} queued at position 1 of 1 on {control}"


def test_the_sender_reports_the_position_and_a_refusal(queue_server, manager):
    control, _ = queue_server
    sender = QueueServerSender(control, user="beamline scientist")
    item = rescan_item((0, 40), (0, 40), beam_fwhm_um=50.0, target_resolution_um=40.0)
    assert sender(item).endswith(f"queued at position 1 of 1 on {control}")
    assert sender(item).endswith(f"queued at position 2 of 2 on {control}")
    assert [queued["user"] for queued in manager.queue_get()["items"]] == ["beamline scientist"] * 2
    forbidden = {**item, "name": "rel_grid_scan"}
    with pytest.raises(ValueError, match="refused the rescan") as refused:
        sender(forbidden)
    assert str(refused.value) == (
        f"the queue server at {control} refused the rescan: Plan validation failed: "
        "Plan 'rel_grid_scan' is not in the list of allowed plans."
    )
    assert "\n" not in str(refused.value)
    outsider = QueueServerSender(control, user_group="no_such_group")
    with pytest.raises(ValueError, match="no_such_group"):
        outsider(item)
    assert len(manager.queue_get()["items"]) == 2


def test_a_manager_that_is_down_gives_a_message_and_the_window_stays_responsive(qtbot, window):
    live = live_tab_with_roi(window)
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    live.sender = QueueServerSender(nowhere, timeout_s=SEND_TIMEOUT_S)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(50)
    started = time.monotonic()
    assert live.send_roi() is not None  # the item is made; sending goes on in a worker
    qtbot.waitUntil(lambda: not live.busy(), timeout=WAIT_MS)
    elapsed = time.monotonic() - started
    qtbot.waitUntil(lambda: "Rescan not sent" in live.message.text(), timeout=WAIT_MS)
    timer.stop()
    message = live.message.text()
    assert message.startswith("Rescan not sent: OSError: no answer from the queue server at ")
    assert nowhere in message
    assert SEND_TIMEOUT_S <= elapsed < SEND_TIMEOUT_S + 3.0
    assert live.last_item is None
    # the GUI thread kept running while the sender waited
    assert len(ticks) >= 10
    assert np.diff(ticks).max() < 0.5


def test_a_malformed_address_or_key_is_one_clear_line(monkeypatch):
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        QueueServerSender("127.0.0.1:60615")
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        QueueServerSender("tcp://localhost")
    key = "not-a-z85-key"
    monkeypatch.setenv(PUBLIC_KEY_ENV, key)
    with pytest.raises(ValueError, match=PUBLIC_KEY_ENV) as bad_key:
        QueueServerSender(f"tcp://127.0.0.1:{free_port()}")
    assert key not in str(bad_key.value)
    good_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # the z85 example of the ZeroMQ RFC 32
    sender = QueueServerSender(f"tcp://127.0.0.1:{free_port()}", zmq_public_key=good_key)
    assert good_key not in repr(sender)


def test_the_gui_command_takes_the_queue_server_from_its_option_or_the_environment(
    monkeypatch, capsys
):
    monkeypatch.setenv(QUEUE_SERVER_ENV, "tcp://127.0.0.1:60999")
    assert build_parser().parse_args(["gui"]).queue_server == "tcp://127.0.0.1:60999"
    option = build_parser().parse_args(["gui", "--queue-server", "tcp://127.0.0.1:1"])
    assert option.queue_server == "tcp://127.0.0.1:1"
    monkeypatch.delenv(QUEUE_SERVER_ENV)
    assert build_parser().parse_args(["gui"]).queue_server is None
    # a malformed address stops the command before Qt starts, with one line
    assert main(["gui", "--queue-server", "localhost"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.startswith("asirp: error: queue server address must look like tcp://HOST:PORT")
    assert error.count("\n") == 1

"""The "Results" tab on a real tiled server holding results published by the live pipeline.

One embedded tiled server (module scope) receives two 12 x 12 grid scans of the simulated
beamline, restored live by a ``LiveRestorer`` (Wiener, then Richardson-Lucy with 5 iterations)
exactly as ``asirp live`` publishes them. The browser lists them, shows one, and turns a server
that is down, slow, or not a URI at all into one line in its message area.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from asirp_gui.tiled_results import (
    API_KEY_ENV,
    check_uri,
    describe_source,
    extent_from_centres,
    list_results,
    read_result,
    storable_uri,
    summarise,
)
from tests.asirp_device.conftest import free_port

WAIT_MS = 30_000
STEP_UM = 10.0
N = 12  # a 12 x 12 grid: cells centred at -55 .. 55 µm
METHODS = (("wiener", {}), ("richardson_lucy", {"iterations": 5}))


@dataclass
class Published:
    """The server and what it holds: derived run uids (oldest first) and their maps."""

    server: object
    derived_uids: list[str]
    raw_uids: list[str]
    restored: list[np.ndarray]
    inputs: list[np.ndarray]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[Published]:
    from bluesky import RunEngine

    import sim
    from callbacks.live import LiveRestorer
    from callbacks.publish import derived_runs, raw_run_writer, read_final_map
    from callbacks.tiled_server import EmbeddedTiledServer
    from tests.callbacks.conftest import BEAM_FWHM_UM, grid_plan

    server = EmbeddedTiledServer(tmp_path_factory.mktemp("results-tiled"))
    try:
        client = server.client()
        run_engine = RunEngine({})
        run_engine.subscribe(raw_run_writer(client))
        found = Published(server, [], [], [], [])
        for method, params in METHODS:
            restorer = LiveRestorer(
                "xrf_Cu",
                method,
                params,
                normalize="i0",
                beam_fwhm_um=BEAM_FWHM_UM,
                every_rows=None,
                device="cpu",
                tiled=client,
            )
            token = run_engine.subscribe(restorer)
            beamline = sim.make_beamline(sample="ag300", beam_fwhm_um=BEAM_FWHM_UM, seed=0)
            (uid,) = run_engine(grid_plan(beamline, N, step_um=STEP_UM))
            assert restorer.wait(60)
            assert restorer.close(10)
            run_engine.unsubscribe(token)
            (derived,) = derived_runs(client, uid).values()
            found.raw_uids.append(uid)
            found.derived_uids.append(derived.metadata["start"]["uid"])
            found.restored.append(read_final_map(derived))
            found.inputs.append(np.asarray(derived["restored"]["input_map"].read()[-1]))
        yield found
    finally:
        server.close()


@pytest.fixture
def browser(window, monkeypatch):
    """The results tab, with no API key in the environment unless a test sets one."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    return window.results


def wait_idle(qtbot, browser) -> None:
    qtbot.waitUntil(lambda: not browser.busy(), timeout=WAIT_MS)


def connect(qtbot, browser, uri: str) -> None:
    browser.connect_tiled(uri)
    wait_idle(qtbot, browser)


def bare_uri(server) -> str:
    return server.uri.split("?", 1)[0]


def test_listing_shows_both_results_newest_first_with_their_method(
    qtbot, browser, published, settings_path: Path, caplog
):
    with caplog.at_level(logging.DEBUG):
        connect(qtbot, browser, published.server.uri)  # the API key in the URI
    assert browser.client is not None, browser.message.text()
    assert [run.uid for run in browser.runs] == published.derived_uids[::-1]
    assert [run.method for run in browser.runs] == ["richardson_lucy", "wiener"]
    assert [run.raw_uid for run in browser.runs] == published.raw_uids[::-1]
    assert browser.runs[0].time > browser.runs[1].time
    assert {run.shape for run in browser.runs} == {(N, N)}
    assert {run.source for run in browser.runs} == {"xrf_Cu / i0"}
    assert {run.outcome for run in browser.runs} == {"success"}
    assert browser.table.rowCount() == 2
    assert browser.table.item(0, 3).text() == "richardson_lucy"
    assert "2 result(s)" in browser.message.text()
    # the URI is remembered without its API key, which is shown nowhere
    saved = browser.settings.value("results/tiled_uri")
    assert saved == bare_uri(published.server)
    key = published.server.api_key
    assert key not in settings_path.read_text()
    assert key not in browser.message.text()
    # httpx logs request URLs, httpcore headers: the key is redacted in both (the server's
    # own access log, in this process only because the test serves tiled, is not the panel's)
    client_side = [r.getMessage() for r in caplog.records if r.name.startswith("http")]
    assert any("api_key=***" in text for text in client_side)
    assert not [text for text in client_side if key in text]


def test_selecting_a_result_shows_what_tiled_holds_and_its_provenance(
    qtbot, browser, published, monkeypatch
):
    monkeypatch.setenv(API_KEY_ENV, published.server.api_key)  # the key from the environment
    connect(qtbot, browser, bare_uri(published.server))
    assert len(browser.runs) == 2, browser.message.text()

    browser.select(1)  # the older: Wiener
    wait_idle(qtbot, browser)
    np.testing.assert_array_equal(browser.restored, published.restored[0])
    np.testing.assert_array_equal(browser.raw, published.inputs[0])
    np.testing.assert_array_equal(browser.restored_view.data, published.restored[0])
    # cell centres -55 .. 55 µm at 10 µm steps: the map spans -60 .. 60 µm
    assert browser.raw_view.extent_um == pytest.approx((-60.0, 60.0, -60.0, 60.0))
    assert browser.restored_view.extent_um == pytest.approx((-60.0, 60.0, -60.0, 60.0))
    text = browser.details.toPlainText()
    assert browser.details.isReadOnly()
    assert '"method": "wiener"' in text
    assert published.raw_uids[0] in text
    assert '"cautions"' in text
    assert "wiener" in browser.message.text()

    browser.select(0)  # the newest: Richardson-Lucy
    wait_idle(qtbot, browser)
    np.testing.assert_array_equal(browser.restored, published.restored[1])
    np.testing.assert_array_equal(browser.raw, published.inputs[1])
    assert '"method": "richardson_lucy"' in browser.details.toPlainText()
    assert '"iterations": 5' in browser.details.toPlainText()
    assert "caution(s)" in browser.table.item(0, 5).text()

    browser.refresh()
    wait_idle(qtbot, browser)
    assert len(browser.runs) == 2
    assert browser.restored is None  # a new listing shows no result until one is selected


def test_a_map_over_the_pixel_limit_is_not_read(qtbot, browser, published):
    connect(qtbot, browser, published.server.uri)
    browser.max_pixels = N * N - 1
    browser.select(0)
    wait_idle(qtbot, browser)
    assert browser.raw is None
    assert browser.restored is None
    assert "more than the 143 shown here" in browser.message.text()
    assert '"method": "richardson_lucy"' in browser.details.toPlainText()  # provenance still


def test_a_server_that_is_down_gives_a_message(qtbot, browser):
    connect(qtbot, browser, f"http://127.0.0.1:{free_port()}/api/v1")
    assert browser.client is None
    assert browser.runs == []
    assert browser.message.text().startswith("no tiled server answers at 127.0.0.1:")
    browser.select(0)
    assert browser.message.text() == "No result in row 0: 0 listed."


def test_a_server_that_never_answers_gives_a_message_without_freezing(qtbot, browser, monkeypatch):
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)  # no 45 s of retries
    with socket.socket() as silent:  # the kernel accepts connections; nobody ever replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        browser.read_timeout_s = 0.5
        browser.connect_tiled(f"http://127.0.0.1:{silent.getsockname()[1]}/api/v1")
        assert browser.busy()  # the call runs in a worker; the window goes on
        assert browser.message.text() == "Connecting to tiled…"
        wait_idle(qtbot, browser)
    assert browser.client is None
    assert "cannot open tiled at http://127.0.0.1:" in browser.message.text()
    assert "Timeout" in browser.message.text()


def test_a_wrong_api_key_gives_a_message_that_does_not_show_it(qtbot, browser, published):
    wrong = "not-the-key-0123456789"
    connect(qtbot, browser, f"{bare_uri(published.server)}?api_key={wrong}")
    assert browser.client is None
    message = browser.message.text()
    assert message.startswith("cannot open tiled at"), message
    assert wrong not in message
    assert "api_key=***" in message


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("not a uri", "not a tiled URI"),
        ("ftp://127.0.0.1/api/v1", "not a tiled URI"),
        ("http://127.0.0.1:99999/api/v1", "malformed tiled URI"),
        ("", "Give a tiled URI"),
    ],
)
def test_an_unknown_or_garbled_uri_gives_a_message(qtbot, browser, uri, expected):
    browser.connect_tiled(uri)
    assert not browser.busy()  # refused before any worker starts
    assert browser.message.text().startswith(expected)
    assert browser.client is None


# -- the tiled-reading functions without Qt ------------------------------------------------------
def test_list_and_read_without_qt(published):
    from tiled.client import from_uri

    client = from_uri(published.server.uri)
    try:
        assert [s.uid for s in list_results(client, limit=1)] == [published.derived_uids[1]]
        result = read_result(client, published.derived_uids[0])
        np.testing.assert_array_equal(result.restored, published.restored[0])
        assert result.details["outcome"]["exit_status"] == "success"
        assert result.details["parent_uid"] == published.raw_uids[0]
        assert result.cautions == []
        assert result.note == ""
    finally:
        client.context.close()


def test_uri_checks_and_what_is_saved():
    assert check_uri("http://tiled.example:8000/api/v1") == ("tiled.example", 8000)
    assert check_uri("https://tiled.example/api/v1") == ("tiled.example", 443)
    with pytest.raises(ValueError, match=r"api_key=\*\*\*"):
        check_uri("tiled.example:8000?api_key=secret")
    assert (
        storable_uri("http://me:pw@tiled:8000/api/v1?api_key=abc&x=1")
        == "http://tiled:8000/api/v1?x=1"
    )


def test_summaries_of_odd_metadata_are_text_not_errors():
    odd = summarise("abc", {"start": {"map": "nonsense", "time": "yesterday"}, "stop": None})
    assert odd.uid == "abc"
    assert odd.time is None
    assert odd.shape is None
    assert odd.outcome == "running"
    assert odd.row() == ("—", "?", "—", "?", "—", "running")
    failed = summarise(
        "d",
        {
            "start": {"uid": "d", "parent_uid": "r" * 36, "parent_scan_id": 7, "method": "m"},
            "stop": {"exit_status": "fail", "reason": "boom\nagain", "failed_restorations": 2},
        },
    )
    assert failed.row()[1] == "#7 rrrrrrrr"
    assert failed.row()[5] == "fail, 2 failed"
    assert failed.reason == "boom again"
    assert describe_source({"kind": "element", "element": "Fe", "normalize": None}) == "Fe"
    assert describe_source({"kind": "spectrum", "spectrum": "xrf", "channels": [5, 9]}) == (
        "xrf[5-9]"
    )


def test_extents_come_from_cell_centres_in_scan_order():
    y = np.array([30.0, 20.0, 10.0])  # y runs down: the extent says so
    x = np.array([0.0, 5.0])
    assert extent_from_centres(y, x) == (-2.5, 7.5, 35.0, 5.0)
    assert extent_from_centres(np.array([1.0]), x) is None
    assert extent_from_centres(y, np.array([1.0, np.nan])) is None

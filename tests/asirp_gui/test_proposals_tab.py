"""The "Proposals" tab on a real tiled server holding an agent's decision.

An embedded tiled server holds a decision record with three proposals, as the rescan agent
writes it; the tab lists them, accepts one, edits one, rejects one, refuses what is no longer
pending or a bad box, and turns a server that is not there into one line.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callbacks.tiled_server import EmbeddedTiledServer
from control_room.agent import proposals_table, records
from tests.asirp_device.conftest import free_port

WAIT_MS = 30_000
CAMPAIGN = "panel"


def _proposal(index: int) -> dict:
    x0 = 100.0 * index
    return {
        "_id": f"p-panel-{index}", "x_range_um": [x0, x0 + 50.0], "y_range_um": [0.0, 50.0],
        "step_um": 12.5, "coarse_uid": "panel-coarse", "sample": "tissue",
        "score": 10.0 - index, "estimated_s": 9.0, "why": f"found on the restored map; {index}",
    }  # fmt: skip


@pytest.fixture(scope="module")
def tiled(tmp_path_factory) -> Iterator[EmbeddedTiledServer]:
    with EmbeddedTiledServer(tmp_path_factory.mktemp("proposals-tiled")) as server:
        records.write_record(
            server.client(), records.DECISION, CAMPAIGN,
            {"coarse_uid": "panel-coarse", "proposals": [_proposal(k) for k in range(3)],
             "auto_accepted": []},
        )  # fmt: skip
        yield server


def _states(tab) -> dict[str, str]:
    return {row["id"]: row["state"] for row in tab.rows}


def test_the_operator_accepts_edits_and_rejects_from_the_panel(qtbot, window, tiled):
    tab = window.proposals
    tab.operator.setText("beamline scientist")
    tab.connect_tiled(tiled.uri, CAMPAIGN)
    qtbot.waitUntil(lambda: len(tab.rows) == 3, timeout=WAIT_MS)
    assert set(_states(tab).values()) == {"pending"}
    assert tab.table.item(0, 0).text() == "p-panel-0"
    assert "3 pending" in tab.message.text()

    tab.select("p-panel-0")
    tab.accept_button.click()
    qtbot.waitUntil(lambda: _states(tab)["p-panel-0"] == "accepted", timeout=WAIT_MS)

    tab.select("p-panel-1")
    assert tab.box["x0"].value() == 100.0  # the selected box, ready to edit
    tab.box["x0"].setValue(75.0)
    tab.edit_button.click()
    qtbot.waitUntil(lambda: _states(tab)["p-panel-1"] == "accepted", timeout=WAIT_MS)
    edited = next(row for row in tab.rows if row["id"] == "p-panel-1")
    assert edited["x_range_um"] == [75.0, 150.0]

    tab.select("p-panel-2")
    tab.box["x1"].setValue(100.0)  # below x0 = 200: refused, nothing recorded
    tab.edit_button.click()
    qtbot.waitUntil(lambda: "x_range_um is empty" in tab.message.text(), timeout=WAIT_MS)
    tab.reason.setText("known feature")
    tab.reject_button.click()
    qtbot.waitUntil(lambda: _states(tab)["p-panel-2"] == "rejected", timeout=WAIT_MS)

    tab.select("p-panel-0")
    tab.reject_button.click()  # no longer pending
    qtbot.waitUntil(lambda: "not pending" in tab.message.text(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not tab.busy(), timeout=WAIT_MS)

    reviews = records.find_records(tiled.client(), records.REVIEW, CAMPAIGN)
    assert [(r["proposal_id"], r["action"]) for r in reviews] == [
        ("p-panel-0", "accept"), ("p-panel-1", "edit"), ("p-panel-2", "reject"),
    ]  # fmt: skip
    assert {r["operator"] for r in reviews} == {"beamline scientist"}
    assert reviews[2]["reason"] == "known feature"
    table = {row["id"]: row for row in proposals_table(tiled.client(), CAMPAIGN)}
    assert table["p-panel-1"]["x_range_um"] == [75.0, 150.0]


def test_a_server_that_is_not_there_is_one_line(qtbot, window):
    tab = window.proposals
    tab.connect_tiled(f"http://127.0.0.1:{free_port()}/api/v1", CAMPAIGN)
    qtbot.waitUntil(lambda: "no tiled server answers" in tab.message.text(), timeout=WAIT_MS)
    assert tab.client is None
    tab.accept_button.click()
    assert tab.message.text() == "Not connected."

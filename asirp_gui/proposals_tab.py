"""The "Proposals" tab: the rescan agent's proposals of one campaign, reviewed by the operator.

The operator gives the tiled URI the agent reads (the API key comes from ``$TILED_API_KEY`` or
the URI, and is never shown or saved), the campaign and their name, and connects. The table
lists every proposal with its state, box, step, estimated beam time and why the agent proposed
it (:func:`control_room.agent.proposals_table`), refreshed every few seconds. **Accept**,
**Reject** and **Edit** (with the box in the four fields below the table) record a review in
tiled (:func:`control_room.agent.reviews.review`), exactly as ``asirp agent accept``,
``reject`` and ``edit`` do; the agent submits what was accepted at its next poll. Every tiled
call runs in a :class:`~asirp_gui.workers.TaskWorker`, so a server that is down gives one
line in the message area, never a frozen window; a review that cannot be made (no longer
pending, a bad box) says why and records nothing.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QSettings, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from asirp_gui.tiled_results import (
    API_KEY_ENV,
    READ_TIMEOUT_S,
    api_key_from_environment,
    check_uri,
    close_client,
    open_client,
    storable_uri,
)
from asirp_gui.workers import TaskWorker, start_task
from callbacks.address import redact, uri_secrets

URI_SETTING = "proposals/tiled_uri"
CAMPAIGN_SETTING = "proposals/campaign"
COLUMNS = ("Proposal", "State", "x (µm)", "y (µm)", "Step (µm)", "Time (s)", "Why")
REFRESH_MS = 3000
"""How often the list is read again while connected, ms."""
STAGE_LIMIT_UM = 100_000.0
"""Largest box edge the edit fields take, µm (the plan checks the stage's own limits)."""


def _span(values: Any) -> str:
    low, high = values
    return f"{float(low):g} .. {float(high):g}"


class ProposalsTab(QWidget):
    """List a campaign's proposals and accept, edit or reject them.

    Parameters
    ----------
    settings : QSettings
        Remembers the tiled URI (without secrets) and the campaign.
    parent : QWidget, optional

    Attributes
    ----------
    rows : list of dict
        The proposals listed (:func:`control_room.agent.proposals_table`), oldest first.
    client : tiled client or None
        The connected catalog.
    message : QLabel
        One line for the operator.
    """

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.client: Any = None
        self.rows: list[dict[str, Any]] = []
        self.workers: list[TaskWorker] = []
        self._secrets: list[str] = []
        self._retired: list[Any] = []
        self._generation = 0  # answers for an older connection or campaign are dropped
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self._tick)

    def _build(self) -> None:
        self.uri = QLineEdit(str(self.settings.value(URI_SETTING, "") or ""))
        self.uri.setPlaceholderText("http://tiled-host:8000/api/v1")
        self.uri.setToolTip(f"The API key is read from ${API_KEY_ENV} (or the URI's api_key=).")
        self.campaign = QLineEdit(str(self.settings.value(CAMPAIGN_SETTING, "") or ""))
        self.campaign.setPlaceholderText("campaign")
        self.operator = QLineEdit(getpass.getuser())
        self.connect_button = QPushButton("Connect")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.box = {}
        for name in ("x0", "x1", "y0", "y1"):
            field = QDoubleSpinBox()
            field.setRange(-STAGE_LIMIT_UM, STAGE_LIMIT_UM)
            field.setDecimals(1)
            field.setSuffix(" µm")
            self.box[name] = field
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("why (recorded with the review)")
        self.accept_button = QPushButton("Accept")
        self.edit_button = QPushButton("Edit and accept")
        self.reject_button = QPushButton("Reject")
        self.message = QLabel("Give the agent's tiled URI and campaign, and connect.")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)

        address = QHBoxLayout()
        for label, widget, stretch in (
            ("tiled URI", self.uri, 3),
            ("campaign", self.campaign, 1),
            ("operator", self.operator, 1),
        ):
            address.addWidget(QLabel(label))
            address.addWidget(widget, stretch)
        address.addWidget(self.connect_button)
        edit = QHBoxLayout()
        for name, field in self.box.items():
            edit.addWidget(QLabel(name))
            edit.addWidget(field)
        edit.addWidget(self.reason, 1)
        edit.addWidget(self.accept_button)
        edit.addWidget(self.edit_button)
        edit.addWidget(self.reject_button)
        layout = QVBoxLayout(self)
        layout.addLayout(address)
        layout.addWidget(self.table, 1)
        layout.addLayout(edit)
        layout.addWidget(self.message)

        self.connect_button.clicked.connect(lambda: self.connect_tiled())
        self.accept_button.clicked.connect(lambda: self.review_selected("accept"))
        self.edit_button.clicked.connect(lambda: self.review_selected("edit"))
        self.reject_button.clicked.connect(lambda: self.review_selected("reject"))
        self.table.itemSelectionChanged.connect(self._selection_changed)

    # -- plumbing -------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Show ``text`` in the message area (secrets known to this tab are replaced)."""
        self.message.setText(redact(text, self._secrets))

    def _run(self, task: Callable[[], Any], done: Callable[[Any], None]) -> None:
        start_task(self.workers, task, done, self._failed)

    def _failed(self, text: str) -> None:
        for prefix in ("ConnectionError: ", "ValueError: ", "ReviewError: "):
            text = text.removeprefix(prefix)
        self.say(text)

    def busy(self) -> bool:
        """Whether a tiled call is still running (or its outcome not yet shown)."""
        return bool(self.workers)

    # -- connection and listing -----------------------------------------------------------
    def connect_tiled(self, uri: str | None = None, campaign: str | None = None) -> None:
        """Connect to the agent's tiled server and list the campaign's proposals."""
        if uri is not None:
            self.uri.setText(uri)
        if campaign is not None:
            self.campaign.setText(campaign)
        text, name = self.uri.text().strip(), self.campaign.text().strip()
        if not text or not name:
            self.say("Give the tiled URI and the campaign.")
            return
        api_key = api_key_from_environment()
        self._secrets = uri_secrets(text, api_key)
        try:
            check_uri(text)
        except ValueError as error:
            self.say(str(error))
            return
        if self.client is not None:
            self._retired.append(self.client)
            self.client = None
        self.timer.stop()
        self._generation += 1
        generation = self._generation
        self.say("Connecting to tiled…")

        def connect_and_list() -> tuple[Any, list[dict[str, Any]]]:
            from control_room.agent import proposals_table

            client = open_client(text, api_key, read_timeout_s=READ_TIMEOUT_S)
            try:
                return client, proposals_table(client, name)
            except Exception:
                close_client(client)
                raise

        def connected(outcome: tuple[Any, list[dict[str, Any]]]) -> None:
            client, rows = outcome
            if generation != self._generation:
                self._retired.append(client)
                return
            self.client = client
            self.settings.setValue(URI_SETTING, storable_uri(text))
            self.settings.setValue(CAMPAIGN_SETTING, name)
            self.settings.sync()
            self.show_rows(rows)
            self.timer.start()

        self._run(connect_and_list, connected)

    def refresh(self) -> None:
        """Read the campaign's proposals again."""
        client, name, generation = self.client, self.campaign.text().strip(), self._generation
        if client is None:
            self.connect_tiled()
            return

        def listed(rows: list[dict[str, Any]]) -> None:
            if generation == self._generation:
                self.show_rows(rows, quiet=True)

        def read() -> list[dict[str, Any]]:
            from control_room.agent import proposals_table

            return proposals_table(client, name)

        self._run(read, listed)

    def _tick(self) -> None:
        if not self.busy():  # never pile up reads behind a slow server
            self.refresh()

    def show_rows(self, rows: list[dict[str, Any]], *, quiet: bool = False) -> None:
        """List ``rows`` in the table, keeping the selected proposal selected."""
        selected = self.selected_id()
        self.rows = list(rows)
        self.table.blockSignals(True)
        self.table.clearContents()
        self.table.setRowCount(len(self.rows))
        for row, entry in enumerate(self.rows):
            cells = (
                entry["id"],
                entry["state"],
                _span(entry["x_range_um"]),
                _span(entry["y_range_um"]),
                f"{float(entry['step_um']):g}",
                f"{float(entry.get('estimated_s') or 0.0):.0f}",
                str(entry.get("why") or ""),
            )
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(entry.get("why") or ""))
                self.table.setItem(row, column, item)
            if entry["id"] == selected:
                self.table.selectRow(row)
        self.table.blockSignals(False)
        if not quiet:
            pending = sum(entry["state"] == "pending" for entry in self.rows)
            self.say(f"{len(self.rows)} proposal(s), {pending} pending.")

    # -- reviews --------------------------------------------------------------------------
    def selected_id(self) -> str | None:
        """The selected proposal's id, or ``None``."""
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        if len(rows) != 1:
            return None
        row = rows.pop()
        return self.rows[row]["id"] if row < len(self.rows) else None

    def _selection_changed(self) -> None:
        ident = self.selected_id()
        entry = next((e for e in self.rows if e["id"] == ident), None)
        if entry is None:
            return
        (x0, x1), (y0, y1) = entry["x_range_um"], entry["y_range_um"]
        for name, value in (("x0", x0), ("x1", x1), ("y0", y0), ("y1", y1)):
            self.box[name].setValue(float(value))

    def select(self, ident: str) -> None:
        """Select proposal ``ident`` in the table (its box goes to the edit fields)."""
        for row, entry in enumerate(self.rows):
            if entry["id"] == ident:
                self.table.selectRow(row)
                return
        self.say(f"No proposal {ident} listed.")

    def review_selected(self, action: str) -> None:
        """Record ``action`` (accept, edit, reject) for the selected proposal, then refresh."""
        ident, client = self.selected_id(), self.client
        if client is None:
            self.say("Not connected.")
            return
        if ident is None:
            self.say("Select one proposal first.")
            return
        name, operator = self.campaign.text().strip(), self.operator.text().strip()
        box = {key: field.value() for key, field in self.box.items()}
        reason = self.reason.text()

        def record() -> str:
            from control_room.agent import review

            edit = {}
            if action == "edit":
                edit = {"x_range_um": [box["x0"], box["x1"]], "y_range_um": [box["y0"], box["y1"]]}
            return review(client, name, ident, action, operator=operator, reason=reason, **edit)

        def recorded(uid: str) -> None:
            self.say(f"{ident}: {action} recorded ({uid[:8]}); the agent submits at its next poll.")
            self.reason.clear()
            self.refresh()

        self.say(f"Recording {action} of {ident}…")
        self._run(record, recorded)

    # -- closing --------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop refreshing, let running calls end, and close the clients."""
        self.timer.stop()
        for worker in list(self.workers):
            worker.wait(READ_TIMEOUT_S + 5.0)
        for client in [self.client, *self._retired]:
            if client is not None:
                close_client(client)
        self.client = None
        self._retired.clear()

"""The "Results" tab: past restorations published to tiled, listed and shown side by side.

The operator gives a tiled URI (the API key comes from ``$TILED_API_KEY`` or the URI, and is
never shown, logged or saved) and connects: the newest derived runs are listed, newest first
(:func:`asirp_gui.tiled_results.list_results`). Selecting one reads its raw (input) and
restored maps with their µm extents and shows its provenance and cautions as JSON
(:func:`asirp_gui.tiled_results.read_result`). Every tiled call runs in a
:class:`~asirp_gui.workers.TaskWorker`, so a server that is down or slow gives one line in the
message area, never a frozen window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QSettings, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from asirp_gui.image_view import MapView
from asirp_gui.tiled_results import (
    API_KEY_ENV,
    COLUMNS,
    MAX_MAP_PIXELS,
    MAX_RUNS,
    READ_TIMEOUT_S,
    ResultMaps,
    ResultSummary,
    api_key_from_environment,
    check_uri,
    close_client,
    details_text,
    list_results,
    open_client,
    read_result,
    storable_uri,
)
from asirp_gui.workers import TaskWorker, one_line, start_task
from callbacks.address import redact, uri_secrets

URI_SETTING = "results/tiled_uri"
"""QSettings key of the last tiled URI connected to (saved without its secrets)."""


class ResultsBrowser(QWidget):
    """List past restorations from tiled and show one: raw and restored maps, provenance.

    Parameters
    ----------
    settings : QSettings
        Remembers the tiled URI (:data:`URI_SETTING`).
    parent : QWidget, optional

    Attributes
    ----------
    runs : list of ResultSummary
        The derived runs listed, newest first.
    raw, restored : numpy.ndarray or None
        Maps of the selected run, ``(H, W)`` and ``(H * s, W * s)`` counts.
    shown : ResultMaps or None
        Everything read for the selected run.
    client : tiled client or None
        The connected catalog.
    max_runs, max_pixels : int
        Most runs listed; largest map read, pixels.
    read_timeout_s : float
        Longest wait for one reply of the server, s (tiled retries a failed request).
    message : QLabel
        One line for the operator.
    details : QPlainTextEdit
        Provenance, outcome and cautions of the selected run (read-only JSON).
    """

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.client: Any = None
        self.runs: list[ResultSummary] = []
        self.raw: np.ndarray | None = None
        self.restored: np.ndarray | None = None
        self.shown: ResultMaps | None = None
        self.workers: list[TaskWorker] = []
        self.max_runs = MAX_RUNS
        self.max_pixels = MAX_MAP_PIXELS
        self.read_timeout_s = READ_TIMEOUT_S
        self._secrets: list[str] = []
        self._retired: list[Any] = []  # clients replaced while a worker may still use them
        self._connection = 0  # the newest connection asked for; older answers are dropped
        self._selection = 0  # likewise for the run asked for
        self._build()

    def _build(self) -> None:
        self.uri = QLineEdit(str(self.settings.value(URI_SETTING, "") or ""))
        self.uri.setPlaceholderText("http://tiled-host:8000/api/v1")
        self.uri.setToolTip(f"The API key is read from ${API_KEY_ENV} (or the URI's api_key=).")
        self.connect_button = QPushButton("Connect")
        self.refresh_button = QPushButton("Refresh")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.raw_view = MapView("Raw (map that went in)")
        self.restored_view = MapView("Restored")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Select a result to see its provenance and cautions.")
        self.message = QLabel("Give a tiled URI and connect.")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)

        address = QHBoxLayout()
        address.addWidget(QLabel("tiled URI"))
        address.addWidget(self.uri, 1)
        address.addWidget(self.connect_button)
        address.addWidget(self.refresh_button)
        maps = QWidget()
        maps_layout = QHBoxLayout(maps)
        maps_layout.setContentsMargins(0, 0, 0, 0)
        maps_layout.addWidget(self.raw_view)
        maps_layout.addWidget(self.restored_view)
        right = QSplitter(Qt.Vertical)
        right.addWidget(maps)
        right.addWidget(self.details)
        right.setSizes([500, 220])  # px; the maps first, the provenance below
        body = QSplitter(Qt.Horizontal)
        body.addWidget(self.table)
        body.addWidget(right)
        body.setSizes([700, 700])  # px: the list wide enough for its six columns
        layout = QVBoxLayout(self)
        layout.addLayout(address)
        layout.addWidget(body, 1)
        layout.addWidget(self.message)

        self.connect_button.clicked.connect(lambda: self.connect_tiled())
        self.refresh_button.clicked.connect(self.refresh)
        self.table.itemSelectionChanged.connect(self._selection_changed)

    # -- plumbing -------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Show ``text`` in the message area (secrets known to this tab are replaced)."""
        self.message.setText(redact(text, self._secrets))

    def _run(self, task: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``task()`` in a worker; its result goes to ``done``, an error to the message."""
        start_task(self.workers, task, done, self._failed)

    def _failed(self, text: str) -> None:
        for prefix in ("ConnectionError: ", "ValueError: "):
            text = text.removeprefix(prefix)
        self.say(text)

    def busy(self) -> bool:
        """Whether a tiled call is still running (or its outcome not yet shown)."""
        return bool(self.workers)

    # -- connection and listing -----------------------------------------------------------
    def connect_tiled(self, uri: str | None = None) -> None:
        """Connect to the tiled server at ``uri`` (default: the URI field) and list its results.

        Parameters
        ----------
        uri : str, optional
            Server address; the API key is ``$TILED_API_KEY`` unless the URI carries one.
        """
        if uri is not None:
            self.uri.setText(uri)
        text = self.uri.text().strip()
        if not text:
            self.say("Give a tiled URI, e.g. http://tiled-host:8000/api/v1.")
            return
        api_key = api_key_from_environment()
        self._secrets = uri_secrets(text, api_key)
        try:
            check_uri(text)
        except ValueError as error:
            self.say(str(error))
            return
        self._retire_client()
        self._connection += 1
        connection = self._connection
        self.say("Connecting to tiled…")
        limit, read_timeout_s = self.max_runs, self.read_timeout_s

        def connect_and_list() -> tuple[Any, list[ResultSummary]]:
            client = open_client(text, api_key, read_timeout_s=read_timeout_s)
            try:
                return client, list_results(client, limit)
            except Exception as error:
                close_client(client)
                raise ConnectionError(f"listing the results failed: {one_line(error)}") from None

        self._run(connect_and_list, lambda outcome: self._connected(connection, text, outcome))

    def _connected(self, connection: int, uri: str, outcome: tuple[Any, list[Any]]) -> None:
        client, runs = outcome
        if connection != self._connection:  # a newer connection was asked for meanwhile
            self._retired.append(client)
            return
        self.client = client
        self.settings.setValue(URI_SETTING, storable_uri(uri))
        self.settings.sync()
        self.show_list(runs)

    def refresh(self) -> None:
        """List the results again (connecting first when not connected)."""
        client = self.client
        if client is None:
            self.connect_tiled()
            return
        connection = self._connection
        limit = self.max_runs
        self.say("Listing results…")

        def listed(runs: list[ResultSummary]) -> None:
            if connection == self._connection:
                self.show_list(runs)

        self._run(lambda: list_results(client, limit), listed)

    def show_list(self, runs: list[ResultSummary]) -> None:
        """List ``runs`` (newest first) in the table; no result is shown until one is selected."""
        self.runs = list(runs)
        self.table.blockSignals(True)
        self.table.clearContents()
        self.table.setRowCount(len(self.runs))
        for row, summary in enumerate(self.runs):
            for column, text in enumerate(summary.row()):
                item = QTableWidgetItem(text)
                if summary.reason:
                    item.setToolTip(summary.reason)
                self.table.setItem(row, column, item)
        self.table.blockSignals(False)
        self._clear_result()
        capped = " (the newest)" if len(self.runs) >= self.max_runs else ""
        self.say(f"{len(self.runs)} result(s){capped}, newest first. Select one to show it.")

    # -- one result -----------------------------------------------------------------------
    def _selection_changed(self) -> None:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        if len(rows) == 1:
            self.select(rows.pop())

    def select(self, row: int) -> None:
        """Read and show the result in row ``row`` of the list (0: the newest)."""
        if not 0 <= row < len(self.runs):
            self.say(f"No result in row {row}: {len(self.runs)} listed.")
            return
        client = self.client
        if client is None:
            self.say("Not connected.")
            return
        self.table.blockSignals(True)
        self.table.selectRow(row)
        self.table.blockSignals(False)
        summary = self.runs[row]
        self._selection += 1
        selection = self._selection
        max_pixels = self.max_pixels
        self._clear_result()
        self.say(f"Reading result {summary.uid[:8]}…")

        def shown(result: ResultMaps) -> None:
            if selection == self._selection:
                self.show_result(row, summary, result)

        self._run(lambda: read_result(client, summary.uid, max_pixels), shown)

    def _clear_result(self) -> None:
        self.shown = self.raw = self.restored = None
        self.raw_view.clear()
        self.restored_view.clear()
        self.details.setPlainText("")

    def show_result(self, row: int, summary: ResultSummary, result: ResultMaps) -> None:
        """Show ``result``, read for ``summary`` in row ``row``: maps, provenance, cautions."""
        self.shown = result
        self.raw, self.restored = result.raw, result.restored
        self.table.blockSignals(True)
        self.table.selectRow(row)
        self.table.blockSignals(False)
        if result.raw is not None:
            self.raw_view.set_map(result.raw, result.raw_extent_um)
        if result.restored is not None:
            # without its own coordinates, the restored map covers the raw map's area
            self.restored_view.set_map(
                result.restored, result.restored_extent_um or result.raw_extent_um
            )
        self.details.setPlainText(details_text(result.details))
        cautions = result.cautions
        outcome_item = self.table.item(row, COLUMNS.index("Outcome"))
        if outcome_item is not None and "caution" not in outcome_item.text():
            outcome_item.setText(f"{outcome_item.text()}, {len(cautions)} caution(s)")
        text = f"Result {summary.uid[:8]} of scan {summary.raw_uid[:8]}, restored with "
        text += f"{summary.method}: {summary.outcome}, {len(cautions)} caution(s)."
        if result.note:
            text += f" Note: {result.note}."
        self.say(text)

    # -- closing --------------------------------------------------------------------------
    def _retire_client(self) -> None:
        if self.client is not None:
            self._retired.append(self.client)
        self.client = None

    def shutdown(self) -> None:
        """Wait for running tiled calls (each ends within its timeouts) and close the clients."""
        for worker in list(self.workers):
            worker.wait()
        self._retire_client()
        for client in self._retired:
            close_client(client)
        self._retired.clear()

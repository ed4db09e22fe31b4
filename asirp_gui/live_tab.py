"""The live tab: an ASIRP Tango device's raw and restored maps, settings, state and rescans.

Connecting, writing and command calls run in :class:`~asirp_gui.workers.TaskWorker` threads with
a client timeout, so a device that is down or hung gives a message, never a frozen window.
Change events are subscribed with pytango; its callbacks run in Tango's threads and hand each
value to the GUI thread through the queued Qt signal :attr:`DeviceEvents.received`.
An ROI drawn on the restored map becomes a ``grid_scan`` plan item (:mod:`asirp_gui.rescan`)
given to a pluggable sender.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tango
from qtpy.QtCore import QObject, QSettings, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from asirp import available_methods
from asirp_gui.image_view import MapView
from asirp_gui.rescan import RescanSender, rescan_item
from asirp_gui.taurus_panel import open_taurus_form
from asirp_gui.workers import TaskWorker, one_line

SUBSCRIBED = (
    "restored_image",
    "State",
    "Status",
    "progress",
    "method_used",
    "restoration_outcome",
    "result_cautions",
)
"""Attributes whose change events the tab shows."""

SETTINGS = ("method", "beam_fwhm_um", "pixel_um", "auto_select", "iterations")
"""Device settings the tab reads at connection and writes with "Write settings"."""

DEFAULT_TIMEOUT_S = 3.0
"""Client timeout of every device call, s."""


def tango_message(error: BaseException) -> str:
    """One line for an operator from a pytango error (its first reason and description)."""
    if isinstance(error, tango.DevFailed) and error.args:
        first = error.args[0]
        return f"{first.reason}: {' '.join(str(first.desc).split())}"
    return one_line(error)


class DeviceEvents(QObject):
    """Carries Tango event values (``name``, value) or errors (``name``, message) to Qt."""

    received = Signal(str, object)
    error = Signal(str, str)

    def __call__(self, event: Any) -> None:
        """The pytango callback (runs in a Tango thread): forward the value by signal."""
        name = event.attr_name.rsplit("/", 1)[-1].split("#", 1)[0]
        if event.err:
            self.error.emit(name, tango_message(tango.DevFailed(*event.errors)))
        elif event.attr_value is not None:
            self.received.emit(name, event.attr_value.value)


class LiveTab(QWidget):
    """Connect to a device by name, follow its maps, write its settings, send an ROI.

    Parameters
    ----------
    settings : QSettings
        Remembers the device name (``live/device``).
    sender : callable, optional
        ``sender(plan_item) -> str``; default: the item is shown in the message area.
    """

    def __init__(
        self,
        settings: QSettings,
        sender: RescanSender | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        self.sender = sender
        self.proxy: tango.DeviceProxy | None = None
        self.subscriptions: list[int] = []
        self.workers: list[TaskWorker] = []
        self.events = DeviceEvents()
        self.events.received.connect(self._on_event)
        self.events.error.connect(lambda name, text: self.say(f"{name}: {text}"))
        self.last_item: dict[str, Any] | None = None
        self.restored: np.ndarray | None = None
        self.raw: np.ndarray | None = None
        self._build()

    def _build(self) -> None:
        self.device_name = QLineEdit(str(self.settings.value("live/device", "")))
        self.device_name.setPlaceholderText("domain/family/member or tango://host:port/...")
        self.timeout_s = QDoubleSpinBox()
        self.timeout_s.setRange(0.1, 60.0)
        self.timeout_s.setValue(DEFAULT_TIMEOUT_S)
        self.timeout_s.setSuffix(" s")
        self.connect_button = QPushButton("Connect")
        self.taurus_button = QPushButton("Taurus form")
        self.taurus_button.setToolTip(
            "The device's settings and figures in a Taurus form (quality colours, alarms); "
            "needs a device in a Tango database"
        )
        self.taurus_form: Any = None
        self.state = QLabel("—")
        self.outcome = QLabel("—")
        self.status = QLabel("not connected")
        self.status.setWordWrap(True)
        self.cautions = QLabel("—")
        self.cautions.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.method = QComboBox()
        self.method.addItems(available_methods())  # the device's auto_select is separate
        self.beam_fwhm_um = QDoubleSpinBox()
        self.pixel_um = QDoubleSpinBox()
        for box in (self.beam_fwhm_um, self.pixel_um):
            box.setRange(0.0, 10000.0)
            box.setDecimals(3)
            box.setSuffix(" µm")
        self.auto_select = QCheckBox("ASIRP chooses")
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 100000)
        self.apply_button = QPushButton("Write settings")
        self.restore_button = QPushButton("Restore")
        self.abort_button = QPushButton("Cancel (Abort)")
        self.target_resolution_um = QDoubleSpinBox()
        self.target_resolution_um.setRange(0.001, 10000.0)
        self.target_resolution_um.setValue(1.0)
        self.target_resolution_um.setSuffix(" µm")
        self.roi_button = QPushButton("Draw ROI")
        self.send_button = QPushButton("Send ROI as rescan")
        self.message = QLabel("Give a device name and connect.")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)

        form = QFormLayout()
        form.addRow("Device", self.device_name)
        row = QHBoxLayout()
        row.addWidget(self.timeout_s)
        row.addWidget(self.connect_button)
        form.addRow("Timeout", row)
        form.addRow(self.taurus_button)
        form.addRow("State", self.state)
        form.addRow("Last restoration", self.outcome)
        form.addRow("Status", self.status)
        form.addRow("Cautions", self.cautions)
        form.addRow("Progress", self.progress)
        form.addRow("Method", self.method)
        form.addRow("Beam FWHM", self.beam_fwhm_um)
        form.addRow("Pixel", self.pixel_um)
        form.addRow("Auto select", self.auto_select)
        form.addRow("Iterations", self.iterations)
        form.addRow(self.apply_button)
        row = QHBoxLayout()
        row.addWidget(self.restore_button)
        row.addWidget(self.abort_button)
        form.addRow(row)
        form.addRow("Target resolution", self.target_resolution_um)
        row = QHBoxLayout()
        row.addWidget(self.roi_button)
        row.addWidget(self.send_button)
        form.addRow(row)
        form.addRow(self.message)
        controls = QWidget()
        controls.setLayout(form)
        controls.setMaximumWidth(380)
        self.raw_view = MapView("Raw (input_image)")
        self.restored_view = MapView("Restored (restored_image)")
        views = QGridLayout()
        views.addWidget(self.raw_view, 0, 0)
        views.addWidget(self.restored_view, 0, 1)
        layout = QHBoxLayout(self)
        layout.addWidget(controls)
        layout.addLayout(views, 1)

        self.connect_button.clicked.connect(self.connect_device)
        self.taurus_button.clicked.connect(self.open_taurus)
        self.apply_button.clicked.connect(self.write_settings)
        self.restore_button.clicked.connect(lambda: self.command("Restore"))
        self.abort_button.clicked.connect(lambda: self.command("Abort"))
        self.roi_button.clicked.connect(self.restored_view.add_roi)
        self.send_button.clicked.connect(self.send_roi)

    # -- plumbing -------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Show ``text`` in the message area."""
        self.message.setText(text)

    def _run(self, task: Callable[[], Any], done: Callable[[Any], None] | None = None) -> None:
        """Run ``task()`` in a worker; its result goes to ``done``, an error to the message."""

        def wrapped(progress: Callable[[float], None], cancel: threading.Event) -> Any:
            try:
                return task()
            except tango.DevFailed as error:
                raise RuntimeError(tango_message(error)) from None

        worker = TaskWorker(wrapped)
        worker.failed.connect(lambda text: self.say(text.removeprefix("RuntimeError: ")))
        if done is not None:
            worker.finished_ok.connect(done)
        worker.finished.connect(lambda: self.workers.remove(worker))
        self.workers.append(worker)
        worker.start()

    def busy(self) -> bool:
        """Whether a device call is still running."""
        return any(worker.isRunning() for worker in self.workers)

    # -- device ---------------------------------------------------------------------------
    def connect_device(self, name: str | None = None) -> None:
        """Connect to device ``name`` (default: the name field) and subscribe to its events."""
        if name is not None:
            self.device_name.setText(name)
        name = self.device_name.text().strip()
        if not name:
            self.say("Give a device name.")
            return
        self.disconnect_device()
        timeout_ms = round(1000 * self.timeout_s.value())
        self.say(f"Connecting to {name}…")

        def connect() -> tuple[tango.DeviceProxy, dict[str, Any], list[int]]:
            proxy = tango.DeviceProxy(name)
            # ping before setting our timeout: on a device that does not answer,
            # set_timeout_millis reconnects holding the GIL (the window froze for Tango's 3 s
            # connect timeout); ping fails after it without holding the GIL
            proxy.ping()
            proxy.set_timeout_millis(timeout_ms)
            values = {reply.name: reply.value for reply in proxy.read_attributes(list(SETTINGS))}
            ids = [
                proxy.subscribe_event(attribute, tango.EventType.CHANGE_EVENT, self.events)
                for attribute in SUBSCRIBED
            ]
            return proxy, values, ids

        self._run(connect, self._connected)

    def _connected(self, outcome: tuple[tango.DeviceProxy, dict[str, Any], list[int]]) -> None:
        self.proxy, values, self.subscriptions = outcome
        if self.method.findText(str(values["method"])) >= 0:
            self.method.setCurrentText(str(values["method"]))
        self.beam_fwhm_um.setValue(float(values["beam_fwhm_um"]))
        self.pixel_um.setValue(float(values["pixel_um"]))
        self.auto_select.setChecked(bool(values["auto_select"]))
        self.iterations.setValue(int(values["iterations"]))
        self.settings.setValue("live/device", self.device_name.text().strip())
        self.settings.sync()
        self.say(f"Connected to {self.proxy.dev_name()}.")

    def open_taurus(self) -> None:
        """Open a Taurus form on the device named in the field (replacing an open one)."""
        self.close_taurus()
        try:
            self.taurus_form = open_taurus_form(self.device_name.text())
        except Exception as error:  # Taurus reports unresolvable models in many ways
            self.say("Taurus form not opened: " + one_line(error))

    def close_taurus(self) -> None:
        """Close the Taurus form, if one is open."""
        if self.taurus_form is not None:
            self.taurus_form.setModel([])  # release Taurus's listeners on the device
            self.taurus_form.close()
            self.taurus_form = None

    def disconnect_device(self, wait: bool = False) -> None:
        """Forget the device and unsubscribe (best effort, each call within the timeout).

        Parameters
        ----------
        wait : bool
            Unsubscribe in this thread (at exit); by default a worker does it, so a hung
            device never blocks the window.
        """
        proxy, ids = self.proxy, self.subscriptions
        self.proxy, self.subscriptions = None, []
        if proxy is None:
            return

        def unsubscribe() -> None:
            for event_id in ids:
                with contextlib.suppress(tango.DevFailed):  # a device that is gone has nothing
                    proxy.unsubscribe_event(event_id)

        if wait:
            unsubscribe()
        else:
            self._run(unsubscribe)

    def write_settings(self) -> None:
        """Write method, beam FWHM, pixel size, auto selection and iterations to the device."""
        proxy = self._proxy()
        if proxy is None:
            return
        values = [
            ("method", self.method.currentText()),
            ("beam_fwhm_um", self.beam_fwhm_um.value()),
            ("pixel_um", self.pixel_um.value()),
            ("auto_select", self.auto_select.isChecked()),
            ("iterations", self.iterations.value()),
        ]
        self._run(lambda: proxy.write_attributes(values), lambda _: self.say("Settings written."))

    def command(self, name: str) -> None:
        """Run device command ``name`` (``Restore``, ``Abort``) in a worker."""
        proxy = self._proxy()
        if proxy is None:
            return
        self._run(lambda: proxy.command_inout(name), lambda reply: self.say(f"{name}: {reply}"))

    def _proxy(self) -> tango.DeviceProxy | None:
        if self.proxy is None:
            self.say("Not connected.")
        return self.proxy

    def _on_event(self, name: str, value: Any) -> None:
        if name == "restored_image":
            if value is None or np.size(value) == 0:
                return  # no result yet (the first event of a subscription)
            self.show_restored(np.asarray(value))
            proxy = self.proxy
            if proxy is not None:
                self._run(lambda: proxy.read_attribute("input_image").value, self._raw_arrived)
        elif name == "state":
            self.state.setText(str(value))
        elif name == "status":
            self.status.setText(str(value))
        elif name == "progress":
            self.progress.setValue(int(value))
        elif name == "restoration_outcome":
            self.outcome.setText(str(value))
        elif name == "result_cautions":
            cautions = list(value or ())
            self.cautions.setText("\n".join(cautions) if cautions else "none")
        elif name == "method_used":
            self.say(f"Result restored with {value}.")

    def _raw_arrived(self, value: Any) -> None:
        if value is not None and np.ndim(value) == 2:
            self.show_raw(np.asarray(value))

    def _extent(self, shape: tuple[int, ...]) -> tuple[float, float, float, float]:
        step = self.pixel_um.value() or 1.0
        return (0.0, shape[1] * step, 0.0, shape[0] * step)

    def show_raw(self, image: np.ndarray) -> None:
        """Show the raw map ``(H, W)`` (counts)."""
        self.raw = image
        self.raw_view.set_map(image, self._extent(image.shape))

    def show_restored(self, image: np.ndarray) -> None:
        """Show the restored map; its extent is the raw map's when both are known."""
        self.restored = image
        shape = self.raw.shape if self.raw is not None else image.shape
        self.restored_view.set_map(image, self._extent(shape))

    # -- rescans --------------------------------------------------------------------------
    def send_roi(self) -> dict[str, Any] | None:
        """Make the plan item of the drawn ROI and give it to the sender (or show it).

        The sender runs in a worker (a queue server may be down or hung): its report, or
        "Rescan not sent: ..." with the reason, reaches the message area when it ends, and
        :attr:`last_item` is set once the item was sent.

        Returns
        -------
        dict or None
            The plan item handed to the sender; ``None`` when there is no ROI or no valid item.
        """
        roi = self.restored_view.roi_um()
        if roi is None:
            self.say("Draw an ROI on the restored map first.")
            return None
        try:
            item = rescan_item(
                *roi,
                beam_fwhm_um=self.beam_fwhm_um.value(),
                target_resolution_um=self.target_resolution_um.value(),
                md={"asirp_device": self.device_name.text().strip()},
            )
        except ValueError as error:
            self.say("Rescan not sent: " + one_line(error))
            return None
        sender = self.sender
        if sender is None:
            self.last_item = item
            self.say(f"plan item (no queue server): {item}")
            return item

        def send() -> str:
            try:
                return sender(item)
            except (ValueError, OSError) as error:
                # _run shows a RuntimeError's message without its type
                raise RuntimeError("Rescan not sent: " + one_line(error)) from None

        def sent(report: str) -> None:
            self.last_item = item
            self.say(report)

        self.say("Sending the rescan…")
        self._run(send, sent)
        return item

    def shutdown(self) -> None:
        """Wait for running device calls (each ends within its timeout) and unsubscribe."""
        for worker in list(self.workers):
            worker.wait()
        self.close_taurus()
        self.disconnect_device(wait=True)

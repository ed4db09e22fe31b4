"""The offline tab: the paper's channel-adding tool on a raw scan file.

Open a scan (any format :func:`asirp.xrf.read_scan` reads), build an element map
(:func:`asirp.xrf.build_map`: dimensions and step size found from the positions), apply the map
tools (:mod:`asirp.xrf.tools`: threshold, flip, rotate), restore it in a worker thread with a
progress bar and cancel, compare before/after with a line profile, and export PNG, TXT
(``x_um y_um counts`` columns for Origin) and NeXus with provenance
(:mod:`asirp.xrf.export`). Every failure is a line in :attr:`OfflineTab.message`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QSettings, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QWidget,
)

from asirp import available_methods
from asirp.xrf import build_map, read_scan, tools
from asirp.xrf.export import write_map_nexus, write_map_png, write_map_text
from asirp.xrf.lines import ChannelROI
from asirp.xrf.maps import XRFMap
from asirp_gui.image_view import COLOUR_MAPS, MapView, ProfileView
from asirp_gui.workers import TaskWorker, one_line

LINES = ("Ka", "Kb", "La", "Lb", "Ma")
NORMALISATIONS = ("none", "i0", "ar")
BACKGROUNDS = ("none", "linear", "snip")
FLIPS = ("none", "x", "y")
ROTATIONS = ("0", "90", "180", "270")


def _optional_float(text: str, name: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number (counts) or empty, got {text!r}") from None


class OfflineTab(QWidget):
    """Raw scan file -> element map -> restoration -> exports.

    Parameters
    ----------
    settings : QSettings
        Where the choices are remembered (keys under ``offline/``).
    """

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.scan: Any = None
        self.scan_path: Path | None = None
        self.raw_map: XRFMap | None = None
        self.shown_map: XRFMap | None = None
        self.restoration: Any = None
        self.worker: TaskWorker | None = None
        self._build()
        self._restore_settings()

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.open_button = QPushButton("Open scan…")
        self.file_label = QLabel("no file")
        self.element = QLineEdit("Fe")
        self.line = QComboBox()
        self.line.addItems(LINES)
        self.first_channel = QSpinBox()
        self.last_channel = QSpinBox()
        for box in (self.first_channel, self.last_channel):
            box.setRange(-1, 100000)
            box.setValue(-1)
            box.setSpecialValueText("element window")
        self.normalisation = QComboBox()
        self.normalisation.addItems(NORMALISATIONS)
        self.background = QComboBox()
        self.background.addItems(BACKGROUNDS)
        self.threshold_low = QLineEdit()
        self.threshold_high = QLineEdit()
        self.colour_map = QComboBox()
        self.colour_map.addItems(COLOUR_MAPS)
        self.flip = QComboBox()
        self.flip.addItems(FLIPS)
        self.rotation = QComboBox()
        self.rotation.addItems(ROTATIONS)
        self.make_map_button = QPushButton("Make map")
        self.method = QComboBox()
        self.method.addItems(["auto", *available_methods()])
        self.beam_fwhm_um = QDoubleSpinBox()
        self.beam_fwhm_um.setRange(0.01, 10000.0)
        self.beam_fwhm_um.setDecimals(2)
        self.beam_fwhm_um.setSuffix(" µm")
        self.beam_fwhm_um.setValue(1.0)
        self.iterations = QSpinBox()
        self.iterations.setRange(0, 100000)
        self.iterations.setSpecialValueText("method default")
        self.restore_button = QPushButton("Restore")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.export_button = QPushButton("Export…")
        self.message = QLabel("Open a raw scan file.")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)

        form = QFormLayout()
        file_row = QHBoxLayout()
        file_row.addWidget(self.open_button)
        file_row.addWidget(self.file_label, 1)
        form.addRow(file_row)
        element_row = QHBoxLayout()
        element_row.addWidget(self.element)
        element_row.addWidget(self.line)
        form.addRow("Element, line", element_row)
        channel_row = QHBoxLayout()
        channel_row.addWidget(self.first_channel)
        channel_row.addWidget(self.last_channel)
        form.addRow("Channels (first, last)", channel_row)
        form.addRow("Normalisation", self.normalisation)
        form.addRow("Background", self.background)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.threshold_low)
        threshold_row.addWidget(self.threshold_high)
        form.addRow("Threshold (low, high counts)", threshold_row)
        form.addRow("Colour map", self.colour_map)
        form.addRow("Flip", self.flip)
        form.addRow("Rotate (°)", self.rotation)
        form.addRow(self.make_map_button)
        form.addRow("Method", self.method)
        form.addRow("Beam FWHM", self.beam_fwhm_um)
        form.addRow("Iterations", self.iterations)
        action_row = QHBoxLayout()
        action_row.addWidget(self.restore_button)
        action_row.addWidget(self.cancel_button)
        form.addRow(action_row)
        form.addRow(self.progress)
        form.addRow(self.export_button)
        form.addRow(self.message)
        controls = QWidget()
        controls.setLayout(form)
        controls.setMaximumWidth(380)

        self.before_view = MapView("Before (measured)")
        self.after_view = MapView("After (restored)")
        self.profile_view = ProfileView()
        self.profile_row = QSlider(Qt.Horizontal)
        self.profile_row.setRange(0, 100)
        self.profile_row.setValue(50)
        views = QGridLayout()
        views.addWidget(self.before_view, 0, 0)
        views.addWidget(self.after_view, 0, 1)
        views.addWidget(self.profile_view, 1, 0, 1, 2)
        views.addWidget(QLabel("Profile height"), 2, 0)
        views.addWidget(self.profile_row, 2, 1)
        layout = QHBoxLayout(self)
        layout.addWidget(controls)
        layout.addLayout(views, 1)

        self.open_button.clicked.connect(self._choose_file)
        self.make_map_button.clicked.connect(self.make_map)
        self.restore_button.clicked.connect(self.restore)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self._choose_export_folder)
        self.colour_map.currentTextChanged.connect(self._apply_colour_map)
        self.profile_row.valueChanged.connect(self._update_profile)
        for box in (self.threshold_low, self.threshold_high):
            box.editingFinished.connect(self.apply_tools)
        for combo in (self.flip, self.rotation):
            combo.currentTextChanged.connect(self.apply_tools)

    # -- settings -------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        s = self.settings
        self.element.setText(str(s.value("offline/element", "Fe")))
        for combo, key in self._combos():
            value = s.value(f"offline/{key}")
            if value is not None and combo.findText(str(value)) >= 0:
                combo.setCurrentText(str(value))
        with contextlib.suppress(TypeError, ValueError):  # hand-edited file: keep the default
            self.beam_fwhm_um.setValue(float(s.value("offline/beam_fwhm_um", 1.0)))
        self.threshold_low.setText(str(s.value("offline/threshold_low", "")))
        self.threshold_high.setText(str(s.value("offline/threshold_high", "")))

    def _combos(self) -> list[tuple[QComboBox, str]]:
        return [
            (self.line, "line"),
            (self.normalisation, "normalisation"),
            (self.background, "background"),
            (self.colour_map, "colour_map"),
            (self.flip, "flip"),
            (self.rotation, "rotation"),
            (self.method, "method"),
        ]

    def save_settings(self) -> None:
        """Remember the current choices (called on every action and at exit)."""
        s = self.settings
        s.setValue("offline/element", self.element.text())
        for combo, key in self._combos():
            s.setValue(f"offline/{key}", combo.currentText())
        s.setValue("offline/beam_fwhm_um", self.beam_fwhm_um.value())
        s.setValue("offline/threshold_low", self.threshold_low.text())
        s.setValue("offline/threshold_high", self.threshold_high.text())
        if self.scan_path is not None:
            s.setValue("offline/last_file", str(self.scan_path))
        s.sync()

    # -- actions --------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Show ``text`` in the message area."""
        self.message.setText(text)

    def _busy(self) -> bool:
        if self.worker is not None and self.worker.isRunning():
            self.say("Busy: wait for the current task or cancel it.")
            return True
        return False

    def _start(
        self,
        task: Callable[[Callable[[float], None], threading.Event], Any],
        done: Callable[[Any], None],
    ) -> None:
        worker = TaskWorker(task)
        worker.progress.connect(lambda fraction: self.progress.setValue(round(100 * fraction)))
        worker.finished_ok.connect(done)
        worker.failed.connect(self.say)
        worker.finished.connect(self._idle)
        self.worker = worker
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        worker.start()

    def _idle(self) -> None:
        self.cancel_button.setEnabled(False)

    def cancel(self) -> None:
        """Cancel the running task (the restoration stops at its next iteration)."""
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.say("Cancelling…")

    def _choose_file(self) -> None:
        start = str(self.settings.value("offline/last_file", ""))
        path, _ = QFileDialog.getOpenFileName(self, "Open a raw scan", start)
        if path:
            self.load_file(path)

    def load_file(self, path: str | os.PathLike) -> None:
        """Read the scan in a worker, then make the map with the current choices."""
        if self._busy():
            return
        chosen = Path(path)
        self.say(f"Reading {chosen.name}…")

        def read(progress: Callable[[float], None], cancel: threading.Event) -> Any:
            return read_scan(chosen)

        def loaded(scan: Any) -> None:
            self.scan, self.scan_path = scan, chosen
            self.file_label.setText(chosen.name)
            self.save_settings()
            self.make_map()

        self._start(read, loaded)

    def _roi(self) -> ChannelROI | None:
        first, last = self.first_channel.value(), self.last_channel.value()
        if first < 0 and last < 0:
            return None
        if first < 0 or last < first:
            raise ValueError(f"channel range must be 0 <= first <= last, got {first}..{last}")
        return ChannelROI(f"channels {first}-{last}", first, last)

    def make_map(self) -> None:
        """Build the element map from the loaded scan (in a worker) and show it."""
        if self.scan is None:
            self.say("Open a raw scan file first.")
            return
        if self._busy():
            return
        try:
            roi = self._roi()
        except ValueError as error:
            self.say(one_line(error))
            return
        element = self.element.text().strip() or None
        normalise = self.normalisation.currentText()
        options = {
            "line": self.line.currentText(),
            "roi": roi,
            "normalize_by": None if normalise == "none" else normalise,
            "background": self.background.currentText(),
        }
        scan = self.scan

        def make(progress: Callable[[float], None], cancel: threading.Event) -> XRFMap:
            return build_map(scan, None if roi is not None else element, **options)

        self._start(make, self.set_map)

    def set_map(self, xrf_map: XRFMap) -> None:
        """Use ``xrf_map`` as the measured map (beam FWHM from its metadata when known)."""
        self.raw_map = xrf_map
        self.restoration = None
        beam = xrf_map.metadata.get("beam_fwhm_um")
        if beam:
            self.beam_fwhm_um.setValue(float(np.max(beam)))
        self.save_settings()
        self.apply_tools()
        ny, nx = xrf_map.shape
        dy, dx = xrf_map.pixel_um
        self.say(f"{xrf_map.label}: {ny} × {nx} cells, step {dx:g} × {dy:g} µm.")

    def apply_tools(self) -> None:
        """Threshold, flip and rotate the map (:mod:`asirp.xrf.tools`) and show it."""
        if self.raw_map is None:
            return
        try:
            low = _optional_float(self.threshold_low.text(), "threshold low")
            high = _optional_float(self.threshold_high.text(), "threshold high")
            shown = self.raw_map
            if low is not None or high is not None:
                shown = tools.threshold(shown, low, high)
            if self.flip.currentText() != "none":
                shown = tools.flip(shown, self.flip.currentText())
            shown = tools.rotate(shown, int(self.rotation.currentText()))
        except ValueError as error:
            self.say(one_line(error))
            return
        self.shown_map = shown
        self.restoration = None
        self.before_view.set_map(shown.data, self._extent(shown))
        self.after_view.clear()
        self._update_profile()

    @staticmethod
    def _extent(xrf_map: XRFMap) -> tuple[float, float, float, float]:
        x0, x1, y0, y1 = xrf_map.extent_um
        return (x0, x1, y0, y1)

    def _apply_colour_map(self, name: str) -> None:
        self.before_view.set_colour_map(name)
        self.after_view.set_colour_map(name)

    def restore(self) -> None:
        """Restore the shown map with the chosen method and beam, in a worker."""
        if self.shown_map is None:
            self.say("Make a map first.")
            return
        if self._busy():
            return
        xrf_map, method, beam = self.shown_map, self.method.currentText(), self.beam_fwhm_um.value()
        # iterative methods only: a fixed count replaces the method's own stopping rule
        count = self.iterations.value()
        extra = {"stop": "fixed", "iterations": count} if count else {}
        self.save_settings()
        self.say(f"Restoring with {method}, beam {beam:g} µm…")

        def run(progress: Callable[[float], None], cancel: threading.Event) -> Any:
            return xrf_map.restore(
                method, beam_fwhm_um=beam, progress=progress, cancel=cancel, **extra
            )

        self._start(run, self.show_restoration)

    def show_restoration(self, restoration: Any) -> None:
        """Show ``restoration`` (an :class:`asirp.Restoration` of the shown map) as "after"."""
        assert self.shown_map is not None
        self.restoration = restoration
        self.progress.setValue(100)
        self.after_view.set_map(restoration.image, self._extent(self.shown_map))
        self._update_profile()
        cautions = restoration.cautions()
        self.say(
            f"Restored with {restoration.method}." + "".join(f"\nCaution: {c}" for c in cautions)
        )

    def _update_profile(self) -> None:
        if self.shown_map is None:
            return
        maps = {"before": self.shown_map.data}
        if self.restoration is not None:
            maps["after"] = np.asarray(self.restoration.image)
        fraction = self.profile_row.value() / 100
        self.profile_view.show_row(maps, self._extent(self.shown_map), fraction)

    # -- export ---------------------------------------------------------------------------
    def _choose_export_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder")
        if folder:
            self.export_to(folder)

    def export_paths(self, folder: str | os.PathLike) -> dict[str, Path]:
        """The files :meth:`export_to` writes in ``folder`` (by kind: png, txt, nexus)."""
        assert self.shown_map is not None
        stem = (self.scan_path.stem if self.scan_path else "map") + "_" + self.shown_map.element
        suffix = "_restored" if self.restoration is not None else ""
        base = Path(folder) / f"{stem}{suffix}"
        return {
            "png": base.with_suffix(".png"),
            "txt": base.with_suffix(".txt"),
            "nexus": base.with_suffix(".nxs"),
        }

    def export_to(self, folder: str | os.PathLike, overwrite: bool | None = None) -> list[Path]:
        """Write PNG, TXT and NeXus of the map (restored when there is a restoration).

        Parameters
        ----------
        folder : str or os.PathLike
            Existing folder.
        overwrite : bool, optional
            Replace existing files; None asks the operator when one exists.

        Returns
        -------
        list of Path
            The files written (empty when nothing was written).
        """
        if self.shown_map is None:
            self.say("Make a map first.")
            return []
        paths = self.export_paths(folder)
        existing = [path for path in paths.values() if path.exists()]
        if existing and overwrite is None:
            answer = QMessageBox.question(
                self, "Replace files?", "Replace " + ", ".join(p.name for p in existing) + "?"
            )
            overwrite = answer == QMessageBox.Yes
        if existing and not overwrite:
            self.say("Not exported: " + ", ".join(p.name for p in existing) + " already exist.")
            return []
        data = None if self.restoration is None else np.asarray(self.restoration.image)
        try:
            written = [
                write_map_png(
                    paths["png"],
                    self.shown_map,
                    data=data,
                    cmap=self.colour_map.currentText(),
                    overwrite=bool(overwrite),
                ),
                write_map_text(paths["txt"], self.shown_map, data=data, overwrite=bool(overwrite)),
                write_map_nexus(
                    paths["nexus"],
                    self.shown_map,
                    restoration=self.restoration,
                    source=self.scan_path,
                    overwrite=bool(overwrite),
                ),
            ]
        except (ValueError, OSError) as error:
            self.say("Export failed: " + one_line(error))
            return []
        self.say("Exported " + ", ".join(path.name for path in written) + ".")
        return written

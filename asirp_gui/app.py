"""The operator panel's main window: the live, offline and results tabs over one settings store."""

from __future__ import annotations

from qtpy.QtCore import QSettings
from qtpy.QtGui import QCloseEvent
from qtpy.QtWidgets import QMainWindow, QTabWidget

from asirp_gui.live_tab import LiveTab
from asirp_gui.offline_tab import OfflineTab
from asirp_gui.proposals_tab import ProposalsTab
from asirp_gui.rescan import RescanSender
from asirp_gui.results_browser import ResultsBrowser


class MainWindow(QMainWindow):
    """Tabs ``Live``, ``Offline``, ``Results`` and ``Proposals``; settings saved on closing.

    Parameters
    ----------
    settings : QSettings
        The panel's settings (:func:`asirp_gui.settings.open_settings`).
    sender : callable, optional
        Where ROI rescans go (:mod:`asirp_gui.rescan`).
    """

    def __init__(self, settings: QSettings, sender: RescanSender | None = None) -> None:
        super().__init__()
        self.setWindowTitle("ASIRP operator panel")
        self.settings = settings
        self.live = LiveTab(settings, sender)
        self.offline = OfflineTab(settings)
        self.results = ResultsBrowser(settings)
        self.proposals = ProposalsTab(settings)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.live, "Live")
        self.tabs.addTab(self.offline, "Offline")
        self.tabs.addTab(self.results, "Results")
        self.tabs.addTab(self.proposals, "Proposals")
        self.setCentralWidget(self.tabs)
        self.resize(1400, 800)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Save the settings and let running workers end before closing."""
        self.offline.save_settings()
        if self.offline.worker is not None:
            self.offline.worker.cancel()
            self.offline.worker.wait()
        self.live.shutdown()
        self.results.shutdown()
        self.proposals.shutdown()
        super().closeEvent(event)

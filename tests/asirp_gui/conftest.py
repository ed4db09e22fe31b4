"""Fixtures of the operator-panel tests: offscreen Qt, a private settings file, a device server.

``QT_QPA_PLATFORM=offscreen`` is set here, before any test module imports Qt, so the panel runs
without a display. The live tab talks to a real ASIRP device in a child process
(:func:`tests.asirp_device.conftest.nodb_server`).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.asirp_device.conftest import nodb_server

DEVICE_PROPERTIES = {"DefaultIterations": 5, "DefaultBeamFwhmUm": 40.0, "DefaultPixelUm": 8.0}
"""A quick device: few iterations, a 40 µm beam on 8 µm pixels."""


@pytest.fixture
def settings_path(tmp_path: Path) -> Path:
    """An INI settings file of this test only."""
    return tmp_path / "settings" / "asirp_gui.ini"


@pytest.fixture
def window(qtbot, settings_path: Path):
    """The main window on a private settings file, closed (workers ended) after the test."""
    from asirp_gui.app import MainWindow
    from asirp_gui.settings import open_settings

    main = MainWindow(open_settings(settings_path))
    qtbot.addWidget(main)
    yield main
    main.close()


@pytest.fixture(scope="module")
def device_trl() -> Iterator[str]:
    """The TRL of a real ASIRP device served by a child process for this module."""
    with nodb_server(DEVICE_PROPERTIES) as trl:
        yield trl

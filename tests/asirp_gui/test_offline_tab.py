"""The offline tab on a real APS step scan: load, make the Fe map, restore, export, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asirp.xrf.export import read_map_nexus
from tests.conftest import APS_STEP_MDA

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WAIT_MS = 30_000


def load_fe_map(qtbot, window) -> None:
    tab = window.offline
    tab.element.setText("Fe")
    tab.load_file(APS_STEP_MDA)
    qtbot.waitUntil(
        lambda: tab.shown_map is not None and not tab.worker.isRunning(), timeout=WAIT_MS
    )


def restore(qtbot, tab, method: str = "richardson_lucy", beam_um: float = 100.0) -> None:
    tab.method.setCurrentText(method)
    tab.beam_fwhm_um.setValue(beam_um)
    tab.restore()
    qtbot.waitUntil(lambda: tab.restoration is not None, timeout=WAIT_MS)


def test_load_restore_and_export_a_real_step_scan(qtbot, window, tmp_path: Path):
    tab = window.offline
    load_fe_map(qtbot, window)
    xrf_map = tab.shown_map
    assert xrf_map.element == "Fe"
    assert xrf_map.shape == (11, 11)  # found from the positions in the MDA file
    assert xrf_map.pixel_um == (50.0, 50.0)
    assert "11 × 11" in tab.message.text()
    np.testing.assert_array_equal(tab.before_view.data, xrf_map.data)

    restore(qtbot, tab)
    assert tab.progress.value() == 100
    assert tab.message.text().startswith("Restored with richardson_lucy.")
    restored = np.asarray(tab.restoration.image)
    assert restored.shape == xrf_map.shape
    assert not np.array_equal(restored, xrf_map.data)
    np.testing.assert_array_equal(tab.after_view.data, restored)
    assert set(tab.profile_view.curves) == {"before", "after"}

    written = tab.export_to(tmp_path, overwrite=False)
    assert [path.suffix for path in written] == [".png", ".txt", ".nxs"]
    png, txt, nexus = written
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    rows = np.loadtxt(txt, comments="#")
    assert rows.shape == (int(xrf_map.mask.sum()), 3)  # x_um, y_um, counts of measured cells
    assert set(np.round(rows[:, 0], 6)) <= set(np.round(xrf_map.x_um, 6))
    assert set(np.round(rows[:, 1], 6)) <= set(np.round(xrf_map.y_um, 6))
    assert np.isclose(rows[:, 2].sum(), restored[xrf_map.mask].sum(), rtol=1e-5)
    read_back = read_map_nexus(nexus)
    np.testing.assert_allclose(read_back.data, xrf_map.data)
    assert read_back.element == "Fe"

    before = txt.read_bytes()
    assert tab.export_to(tmp_path, overwrite=False) == []
    assert "already exist" in tab.message.text()
    assert txt.read_bytes() == before
    assert len(tab.export_to(tmp_path, overwrite=True)) == 3


def test_map_tools_change_the_shown_map(qtbot, window):
    tab = window.offline
    load_fe_map(qtbot, window)
    measured = tab.raw_map.data
    high = float(np.median(measured))
    tab.threshold_high.setText(str(high))
    tab.rotation.setCurrentText("90")  # applies the tools
    assert tab.shown_map.data.max() <= high
    assert tab.shown_map.history[-1] == "rotate 90"
    tab.flip.setCurrentText("x")
    assert "flip x" in tab.shown_map.history
    tab.threshold_low.setText("not a number")
    tab.apply_tools()
    assert "threshold low must be a number" in tab.message.text()


def test_settings_are_remembered_across_restarts(qtbot, settings_path: Path):
    from asirp_gui.app import MainWindow
    from asirp_gui.settings import open_settings

    first = MainWindow(open_settings(settings_path))
    qtbot.addWidget(first)
    first.offline.element.setText("Zn")
    first.offline.colour_map.setCurrentText("magma")
    first.offline.beam_fwhm_um.setValue(3.5)
    first.close()
    second = MainWindow(open_settings(settings_path))
    qtbot.addWidget(second)
    assert second.offline.element.text() == "Zn"
    assert second.offline.colour_map.currentText() == "magma"
    assert second.offline.beam_fwhm_um.value() == 3.5
    second.close()


def test_a_corrupt_file_gives_a_message(qtbot, window, tmp_path: Path):
    corrupt = tmp_path / "scan.mda"
    corrupt.write_bytes(b"\x00\x01not an MDA file" * 10)
    window.offline.load_file(corrupt)
    qtbot.waitUntil(lambda: "Error" in window.offline.message.text(), timeout=WAIT_MS)
    assert window.offline.shown_map is None
    assert "scan.mda" in window.offline.message.text()
    assert "Traceback" not in window.offline.message.text()


def test_a_restoration_can_be_cancelled(qtbot, window):
    from asirp_gui.screenshot import example_map

    tab = window.offline
    tab.set_map(example_map((256, 256)))
    tab.method.setCurrentText("richardson_lucy")
    tab.iterations.setValue(100_000)  # minutes of work unless the cancel is honoured
    tab.restore()
    qtbot.waitUntil(lambda: tab.progress.value() > 0 or not tab.worker.isRunning(), timeout=WAIT_MS)
    tab.cancel()
    qtbot.waitUntil(lambda: "cancelled" in tab.message.text(), timeout=WAIT_MS)
    assert not tab.worker.isRunning()
    assert tab.restoration is None

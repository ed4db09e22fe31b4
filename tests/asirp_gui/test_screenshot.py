"""``asirp gui --screenshot``: one non-blank PNG per tab, and the command line's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtGui import QImage

from asirp.cli import main
from asirp_gui.screenshot import render_screenshots, screenshot_paths


def pixel_statistics(path: Path) -> tuple[float, int]:
    """Grey-level standard deviation and number of distinct colours of a PNG."""
    image = QImage(str(path)).convertToFormat(QImage.Format_RGB32)
    assert not image.isNull()
    pointer = image.constBits()
    pointer.setsize(image.sizeInBytes())
    pixels = np.frombuffer(pointer, np.uint8).reshape(image.height(), image.bytesPerLine())
    rgb = pixels[:, : 4 * image.width()].reshape(image.height(), image.width(), 4)[..., :3]
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    return float(rgb.mean(axis=2).std()), len(colours)


def test_each_tab_is_rendered_with_example_data(window, tmp_path: Path):
    written = render_screenshots(window, tmp_path / "panel.png")
    assert written == [
        tmp_path / "panel_offline.png",
        tmp_path / "panel_live.png",
        tmp_path / "panel_results.png",
    ]
    for path in written:
        grey_std, n_colours = pixel_statistics(path)
        assert grey_std > 20.0, path.name
        assert n_colours > 200, path.name
    assert window.offline.restoration is not None
    assert window.live.restored_view.roi_um() is not None
    assert len(window.results.runs) == 2
    assert window.results.restored is not None
    assert window.results.table.item(0, 3).text() == "richardson_lucy"
    assert '"method": "richardson_lucy"' in window.results.details.toPlainText()
    with pytest.raises(OSError, match="already exists"):
        render_screenshots(window, tmp_path / "panel.png")


def test_the_command_line_refuses_a_name_that_is_not_png(capsys):
    assert main(["gui", "--screenshot", "panel.jpg"]) == 2
    assert "asirp: error: the screenshot must be a .png file" in capsys.readouterr().err


def test_screenshot_paths_name_one_file_per_tab():
    assert screenshot_paths("docs/images/gui.png") == {
        "offline": Path("docs/images/gui_offline.png"),
        "live": Path("docs/images/gui_live.png"),
        "results": Path("docs/images/gui_results.png"),
    }

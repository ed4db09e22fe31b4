"""The live plot (a listener, drawn outside the worker) and the ``asirp live`` command line.

The layer rules of ``callbacks/`` are import-linter contracts (``pyproject.toml``)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from matplotlib.figure import Figure

from asirp.cli import main
from callbacks.live import LiveRestorer
from callbacks.plot import LiveMapPlot
from tests.callbacks.test_live import Stage


def test_live_plot_draws_the_latest_result_only_when_refreshed(run_engine, tmp_path):
    restorer = LiveRestorer("det", "wiener", psf_sigma_px=1.0, every_rows=2, min_rows=4)
    plot = LiveMapPlot(restorer, figure=Figure())
    threads = []
    restorer.subscribe(lambda result: threads.append(threading.current_thread().name))
    run_engine.subscribe(restorer)
    run_engine(Stage().scan(8, 6))
    assert restorer.wait(30)
    assert plot.shown is None  # nothing is drawn from the worker thread
    assert set(threads) == {"asirp-live-restore"}
    assert plot.refresh()
    assert plot.shown is restorer.latest
    np.testing.assert_array_equal(plot.images[0].get_array(), restorer.latest.raw_map)
    np.testing.assert_array_equal(plot.images[1].get_array(), restorer.latest.restored_map)
    assert "final" in plot.axes[1].get_title()
    assert not plot.refresh()  # no new result
    saved = plot.save(tmp_path / "live.png")
    assert saved.stat().st_size > 1000
    plot.close()
    restorer.close(10)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--field", "det", "--channels", "1", "2"], "--channels needs --spectrum"),
        (["--field", "det", "--write-raw"], "--write-raw needs tiled"),
        (["--field", "det", "--method", "no_such_method"], "unknown method"),
        (["--method", "wiener"], "exactly one map source"),
        (["--field", "det", "--param", "iterations"], "NAME=VALUE"),
    ],
)
def test_live_command_refuses_bad_arguments_before_connecting(arguments, message, capsys):
    status = main(["live", "--zmq", "127.0.0.1:1", "--no-tiled", *arguments])
    assert status == 2
    assert message in capsys.readouterr().err


def test_live_command_is_registered_and_light():
    code = (
        "import sys\n"
        "from asirp.cli import build_parser\n"
        "parser = build_parser()\n"
        "args = parser.parse_args(['live', '--zmq', 'h:1', '--field', 'f'])\n"
        "print(args.command, args.handler.__module__)\n"
        "print(sorted(m for m in ('bluesky', 'tiled', 'event_model', 'zmq') if m in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    lines = completed.stdout.split("\n")
    assert lines[0] == "live callbacks.command"
    assert lines[1] == "[]"

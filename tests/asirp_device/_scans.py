"""Scans of the simulated beamline published to a 0MQ proxy, and their offline restoration.

Used by the live-mode tests of the component (``test_live.py``) and of the device
(``test_device_live.py``): the RunEngine runs in the test process and publishes its documents
with bluesky's ``Publisher``; the same documents are kept to assemble the map offline.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher

import asirp
import sim
from tests.callbacks.conftest import assemble, grid_plan

BEAM_FWHM_UM = 50.0
STEP_UM = 20.0  # a small PSF (11 px): partial maps are restored after a few rows
ITERATIONS = 8


def beamline() -> Any:
    return sim.make_beamline(sample="ag300", beam_fwhm_um=BEAM_FWHM_UM, seed=0)


def handshake(publisher: Publisher, received: Callable[[], int], timeout: float = 30.0) -> None:
    """Publish empty runs (start and stop, no map) until the subscriber counts two documents.

    PUB/SUB connections drop what is sent before they are joined (0MQ's slow joiner): the
    publisher's to the proxy and the proxy's to the live subscriber. The first document to
    arrive can be a stop whose start was dropped; with two, at least one start has arrived.
    """
    deadline = time.monotonic() + timeout
    while received() < 2:
        assert time.monotonic() < deadline, f"no document reached the subscriber in {timeout} s"
        uid = str(uuid.uuid4())
        publisher("start", {"uid": uid, "time": time.time(), "purpose": "handshake"})
        publisher(
            "stop",
            {
                "uid": str(uuid.uuid4()),
                "run_start": uid,
                "time": time.time(),
                "exit_status": "success",
                "num_events": {},
            },
        )
        time.sleep(0.2)


@dataclass
class Scan:
    """The documents of one grid scan (in order) and its uid."""

    uid: str = ""
    documents: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def raw_map(self) -> np.ndarray:
        """The map as the live restorer assembles it: ``xrf_Cu * mean(i0) / i0`` (float32)."""
        start = next(doc for name, doc in self.documents if name == "start")
        events = [doc["data"] for name, doc in self.documents if name == "event"]
        columns = {key: [data[key] for data in events] for key in ("y", "x", "xrf_Cu", "i0")}
        return assemble(
            columns["y"],
            columns["x"],
            columns["xrf_Cu"],
            columns["i0"],
            start["extents"],
            tuple(start["shape"]),
        )

    def offline(self, iterations: int = ITERATIONS) -> asirp.Restoration:
        """``asirp.restore`` of the whole map with the live settings (RL on the CPU)."""
        return asirp.restore(
            self.raw_map(),
            "richardson_lucy",
            iterations=iterations,
            beam_fwhm_um=BEAM_FWHM_UM,
            pixel_um=STEP_UM,
            device="cpu",
        )


def run_scan(n_rows: int, n_cols: int | None = None, publisher: Publisher | None = None) -> Scan:
    """Run an ``n_rows x n_cols`` grid scan; publish its documents if ``publisher`` is given."""
    scan = Scan()
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: scan.documents.append((name, doc)))
    if publisher is not None:
        engine.subscribe(publisher)
    bl = beamline()
    if n_cols is None or n_cols == n_rows:
        plan = grid_plan(bl, n_rows, step_um=STEP_UM)
    else:
        from bluesky.plans import grid_scan

        plan = grid_scan(
            bl.detectors,
            bl.y,
            0.0,
            STEP_UM * (n_rows - 1),
            n_rows,
            bl.x,
            0.0,
            STEP_UM * (n_cols - 1),
            n_cols,
            snake_axes=True,
        )
    (scan.uid,) = engine(plan)
    return scan


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``predicate`` every 20 ms until it is true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)

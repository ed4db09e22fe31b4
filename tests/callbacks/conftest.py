"""Fixtures for the live-restoration tests: the simulated beamline, a RunEngine, tiled.

One embedded tiled server (tiled's ``SimpleTiledServer`` behind
:class:`callbacks.tiled_server.EmbeddedTiledServer`, on 127.0.0.1 at a free port, writing to a
temporary folder) serves the whole session: starting one costs several seconds. Each test gets
its own client, closed afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import grid_scan

import asirp.registry
import sim
from asirp.registry import MethodOutput, MethodSpec, Parameter, register_method
from callbacks.tiled_server import EmbeddedTiledServer

BEAM_FWHM_UM = 50.0
STEP_UM = 10.0


@pytest.fixture(scope="session")
def tiled_server(tmp_path_factory) -> Iterator[EmbeddedTiledServer]:
    server = EmbeddedTiledServer(tmp_path_factory.mktemp("tiled"))
    yield server
    server.close()


@pytest.fixture
def tiled_client(tiled_server):
    from tiled.client import from_uri

    client = from_uri(tiled_server.uri)
    yield client
    client.context.close()


@pytest.fixture
def beamline():
    return sim.make_beamline(sample="ag300", beam_fwhm_um=BEAM_FWHM_UM, seed=0)


@pytest.fixture
def run_engine():
    return RunEngine({})


def grid_plan(beamline, n: int = 20, *, step_um: float = STEP_UM, snake: bool = True, md=None):
    """A ``grid_scan`` of ``n x n`` points at ``step_um`` around the centre (y slow, x fast)."""
    half = step_um * (n - 1) / 2
    return grid_scan(
        beamline.detectors,
        beamline.y,
        -half,
        half,
        n,
        beamline.x,
        -half,
        half,
        n,
        snake_axes=snake,
        md=md or {},
    )


def assemble(y, x, values, i0, extents, shape):
    """Offline map from point readings: nearest pixel, ``values * mean(i0) / i0`` (float32)."""
    (y0, y1), (x0, x1) = extents
    rows = np.rint((np.asarray(y) - y0) / ((y1 - y0) / (shape[0] - 1))).astype(int)
    cols = np.rint((np.asarray(x) - x0) / ((x1 - x0) / (shape[1] - 1))).astype(int)
    i0 = np.asarray(i0, dtype=np.float64)
    image = np.full(shape, np.nan)
    image[rows, cols] = np.asarray(values, dtype=np.float64) * (i0.mean() / i0)
    return image.astype(np.float32)


def assert_same_restoration(actual: np.ndarray, expected: np.ndarray) -> None:
    """The live result equals the offline one up to float32 rounding at the map's scale.

    The offline map is assembled here in acquisition order and the live one pixel by pixel, so
    the I0 mean (float64) can differ in its last bits and a pixel of the float32 input by one
    ulp; Richardson-Lucy's iterations carry such a difference into the low pixels of the
    result, never beyond 1e-5 of the map's peak.
    """
    assert actual.shape == expected.shape
    peak = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * peak)


def _unregister(name: str) -> None:
    # The registry has no public removal: tests clean up after themselves.
    asirp.registry._REGISTRY.pop(name, None)


def _spec(name: str, run, summary: str) -> MethodSpec:
    return MethodSpec(
        name=name,
        family="non-blind",
        needs_psf=True,
        scale=1,
        parameters=(Parameter("iterations", int, 1, "unused", minimum=1),),
        run=run,
        summary=summary,
    )


@pytest.fixture
def exploding_method():
    """A registered method that always raises (a broken method, or a GPU that fell over)."""

    def run(problem, params):
        raise RuntimeError("simulated failure inside the method")

    spec = register_method(_spec("test_exploding", run, "always raises"))
    yield spec.name
    _unregister(spec.name)


class Gate:
    """Lets a test hold the restoration worker inside a method, then release it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []  # rows of each map the method received


@pytest.fixture
def gated_method():
    """A registered method that blocks until the test releases it, then returns its input."""
    gate = Gate()

    def run(problem, params):
        gate.calls.append(int(problem.data.shape[1]))
        gate.entered.set()
        if not gate.release.wait(60):
            raise TimeoutError("the test never released the gated method")
        return MethodOutput(image=problem.data.clone(), psf=problem.psf)

    spec = register_method(_spec("test_gated", run, "blocks until released"))
    yield gate
    gate.release.set()
    _unregister(spec.name)

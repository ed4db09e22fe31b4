"""``ReconstructTomo``: a tomography volume from a scan in the data root, as a long command.

The argument checks and the worker slot are tested on :class:`asirp_device.tomo_jobs.TomoJobs`
directly (no Tango, a runner that waits for the test); the command itself through a real
device server (``DeviceTestContext`` in a child process) on a small simulated Data Exchange
file.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango

from asirp.safe_files import DataRootError, OutputExistsError
from asirp_device.component import ComponentState, RestorationBusy, RestorationComponent
from asirp_device.requests import RequestFailed
from asirp_device.tomo_jobs import TomoJobs, parse_request
from sim.tomo import simulate_tomo
from tests.asirp.tomo.conftest import write_exchange
from tests.asirp_device.conftest import EventRecorder, nodb_server, small_map
from tests.asirp_device.test_device import (
    CHANGE,
    ON,
    RUNNING,
    states_after_subscription,
    subscribed,
    wait_until_not_running,
)

SCAN = "scans/scan.h5"
PSF = {"DefaultBeamFwhmUm": 40.0, "DefaultPixelUm": 8.0, "DefaultIterations": 12}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with a simulated scan (25 angles over 0-180°, 2 x 32 px), a truncated copy, a
    scan without flats, and ``link`` -> a folder outside holding a scan too."""
    root = tmp_path_factory.mktemp("tomo-root")
    (root / "scans").mkdir()
    data = simulate_tomo(
        shape=(2, 32), n_angles=25, theta_range_deg=(0.0, 187.5), psf_fwhm_um=20.0, rng=5
    )
    scan = write_exchange(
        root / SCAN,
        data=data.data,
        white=data.data_white,
        dark=data.data_dark,
        theta=data.theta_deg,
    )
    content = scan.read_bytes()
    (root / "scans" / "corrupt.h5").write_bytes(content[: len(content) // 2])
    write_exchange(root / "scans" / "no_flats.h5", skip=("data_white",))
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    (outside / "scan.h5").write_bytes(content)
    (root / "link").symlink_to(outside)
    (root / "volumes").mkdir()
    (root / "volumes" / "existing.nxs").write_bytes(b"an earlier volume")
    return root


# ---------------------------------------------------------------------- no Tango
@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["scan.h5"]', "JSON object"),
        ('{"input": "a.h5"}', "needs 'output'"),
        ('{"input": "a.h5", "output": "b.nxs", "iterations": 5}', "unknown key"),
        ('{"input": "a.h5", "output": "b.nxs", "input": "c.h5"}', "more than once"),
        ('{"input": "a.h5", "output": "b.nxs", "method": "magic"}', "unknown method"),
        ('{"input": "a.h5", "output": "b.nxs", "psf_fwhm_px": 1e9}', "psf_fwhm_px"),
        ('{"input": "a.h5", "output": "b.nxs", "psf_fwhm_px": NaN}', "psf_fwhm_px"),
        ('{"input": "a.h5", "output": "b.nxs", "pixel_um": -1}', "pixel_um"),
        ('{"input": "a.h5", "output": "b.nxs", "centre": true}', "centre"),
        ('{"input": "a.h5", "output": "b.nxs", "psf_fwhm_px": 2, "psf_fwhm_um": 2}', "not both"),
        ('{"input": "a.h5", "output": "b.nxs", "overwrite": "yes"}', "overwrite"),
        ('{"input": "a.h5", "output": "b.tif"}', "NeXus/HDF5"),
        ('{"input": "", "output": "b.nxs"}', "non-empty path"),
    ],
)
def test_malformed_arguments_are_one_clear_error(argument: str, message: str):
    with pytest.raises((ValueError, TypeError), match=message):
        parse_request(argument)


def test_a_full_argument_is_kept():
    request = parse_request(
        '{"input": " s.h5 ", "output": "v.nxs", "method": "none", "psf_fwhm_um": 1.3, '
        '"pixel_um": 0.65, "centre": 0, "overwrite": false}'
    )
    assert (request.input, request.output, request.method) == ("s.h5", "v.nxs", "none")
    assert (request.psf_fwhm_um, request.pixel_um, request.centre) == (1.3, 0.65, 0.0)
    assert request.psf_fwhm_px is None


class _HeldRunner:
    """A ``run_tomo`` stand-in that reports, then waits for the test (or an abort)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args, progress, **kwargs):
        progress(0.5)
        self.entered.set()
        while not self.release.wait(0.01):
            progress(0.5)  # where run_tomo would stop when aborted
        raise OSError("disk full")


def test_one_job_at_a_time_and_abort_stops_it(data_root: Path):
    component = RestorationComponent(data_root=data_root)
    runner = _HeldRunner()
    jobs = TomoJobs(component, runner=runner)
    first = jobs.start(json.dumps({"input": SCAN, "output": "volumes/held.nxs"}))
    assert runner.entered.wait(30)
    assert component.state is ComponentState.RUNNING
    assert component.progress == 50
    with pytest.raises(RestorationBusy, match="tomography reconstruction is already running"):
        component.start(small_map((16, 16)))
    with pytest.raises(RestorationBusy):
        jobs.start(json.dumps({"input": SCAN, "output": "volumes/other.nxs"}))
    assert component.abort()
    assert component.wait(30)
    assert jobs.outcome(first)["status"] == "ABORTED"
    assert component.state is ComponentState.ON
    assert "aborted" in component.status
    with pytest.raises(RequestFailed, match="reconstruction aborted"):
        component.fetch_result(first)

    second = jobs.start(json.dumps({"input": SCAN, "output": "volumes/held.nxs"}))
    assert runner.entered.wait(30)
    runner.release.set()
    assert component.wait(30)
    assert jobs.outcome(second) == {"status": "FAILED", "reason": "OSError: disk full"}
    assert component.state is ComponentState.ALARM
    assert "tomography reconstruction failed: OSError: disk full" in component.status
    assert jobs.last_output == ""
    assert not (data_root / "volumes" / "held.nxs").exists()
    component.reset()
    assert component.state is ComponentState.ON


def test_files_are_checked_before_anything_starts(data_root: Path):
    component = RestorationComponent(data_root=data_root)
    jobs = TomoJobs(component)
    refused = {
        "../x.h5": DataRootError,
        "link/scan.h5": DataRootError,
        "scans/absent.h5": FileNotFoundError,
    }
    for path, error in refused.items():
        with pytest.raises(error):
            jobs.start(json.dumps({"input": path, "output": "volumes/new.nxs"}))
    with pytest.raises(DataRootError, match="symbolic link"):
        jobs.start(json.dumps({"input": SCAN, "output": "link/new.nxs"}))
    with pytest.raises(OutputExistsError, match="already exists"):
        jobs.start(json.dumps({"input": SCAN, "output": "volumes/existing.nxs"}))
    with pytest.raises(ValueError, match="OverwriteResults"):
        jobs.start(json.dumps({"input": SCAN, "output": "volumes/existing.nxs", "overwrite": True}))
    assert component.state is ComponentState.ON
    assert not component.busy


def test_abort_during_a_real_run_leaves_nothing(data_root: Path):
    component = RestorationComponent(data_root=data_root)
    jobs = TomoJobs(component)
    seen = threading.Event()
    component.add_progress_callback(lambda percent: percent > 0 and seen.set())
    component.add_progress_callback(lambda percent: percent > 0 and component.abort())
    request_id = jobs.start(json.dumps({"input": SCAN, "output": "volumes/aborted.nxs"}))
    assert component.wait(60)
    assert seen.is_set()
    assert jobs.outcome(request_id)["status"] == "ABORTED"
    assert not (data_root / "volumes" / "aborted.nxs").exists()


# ---------------------------------------------------------------------- through Tango
@pytest.fixture(scope="module")
def server(data_root: Path) -> Iterator[str]:
    with nodb_server({"DataRoot": str(data_root), "ComputeDevice": "cpu", **PSF}) as trl:
        yield trl


@pytest.fixture
def device(server: str) -> Iterator[tango.DeviceProxy]:
    proxy = tango.DeviceProxy(server)
    yield proxy
    assert proxy.state() == ON, proxy.status()


LONG = [
    ("State", CHANGE),
    ("longRunningCommandResult", CHANGE),
    ("longRunningCommandStatus", CHANGE),
    ("tomo_last_output", CHANGE),
]


def _run(device: tango.DeviceProxy, argument: dict) -> tuple[int, dict, list, EventRecorder]:
    """ReconstructTomo, waited for through its events: (id, outcome, states seen)."""
    with subscribed(device, LONG) as events:
        request_id = device.ReconstructTomo(json.dumps(argument))

        def ended(seen: list) -> bool:
            return any(
                name == "longrunningcommandresult" and value[0] == str(request_id)
                for name, value in seen
            )

        events.wait_for(ended, timeout=60)
        events.wait_for(lambda seen: states_after_subscription(seen)[-1:] == [ON])
    outcome = json.loads(events.values("longrunningcommandresult")[-1][1])
    return request_id, outcome, states_after_subscription(events.events), events


def _status_soon(device: tango.DeviceProxy, text: str, timeout: float = 10.0) -> bool:
    """Whether the device's Status contains ``text`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while text not in device.status():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _restore_works(device: tango.DeviceProxy) -> None:
    with subscribed(device, [("State", CHANGE)]) as events:
        device.write_attribute("input_image", small_map((16, 16), seed=3))
        device.Restore()
        events.wait_for(lambda seen: states_after_subscription(seen)[-2:] == [RUNNING, ON])
    assert device.restored_image.shape == (16, 16)
    assert "result #" in device.status()


def test_reconstruct_tomo_completes_and_writes_the_volume(device, data_root: Path):
    argument = {
        "input": SCAN,
        "output": "volumes/scan.nxs",
        "method": "richardson_lucy",
        "psf_fwhm_px": 2.0,
    }
    request_id, outcome, states, events = _run(device, argument)
    written = data_root / "volumes" / "scan.nxs"
    assert outcome["status"] == "COMPLETED"
    assert outcome["output"] == str(written.resolve())
    assert outcome["method"] == "richardson_lucy"
    assert 0.0 <= outcome["centre_px"] <= 31.0
    assert outcome["centre_source"] == "found"
    assert outcome["elapsed_s"] > 0
    assert isinstance(outcome["cautions"], list)
    assert RUNNING in states
    assert list(device.longRunningCommandStatus[-2:]) == [str(request_id), "COMPLETED"]
    assert list(device.longRunningCommandProgress) == [str(request_id), "100"]
    assert device.tomo_last_output == str(written.resolve())
    assert events.values("tomo_last_output")[-1] == str(written.resolve())
    assert _status_soon(device, "tomography volume written")
    with h5py.File(written, "r") as handle:
        restored = handle["entry/reconstruction_restored/data"][...]
        raw = handle["entry/reconstruction_raw/data"][...]
    assert restored.shape == raw.shape == (2, 32, 32) == tuple(outcome["volume_shape"])
    assert np.isfinite(restored).all()
    with pytest.raises(tango.DevFailed) as caught:
        device.FetchResult(request_id)
    assert caught.value.args[0].reason == "ASIRP_RequestFailed"
    assert "makes no restored map" in caught.value.args[0].desc  # a volume, not a map


@pytest.mark.parametrize(
    ("argument", "reason"),
    [
        ("{bad json", "ASIRP_InvalidInput"),
        ('{"input": "scans/scan.h5", "output": "v.nxs", "colour": 1}', "ASIRP_InvalidInput"),
        ('{"input": "scans/scan.h5", "output": "v.nxs", "method": "x"}', "ASIRP_InvalidInput"),
        ('{"input": "scans/scan.h5", "output": "v.nxs", "centre": -3}', "ASIRP_InvalidInput"),
        ('{"input": "../outside.h5", "output": "v.nxs"}', "ASIRP_DataRoot"),
        ('{"input": "link/scan.h5", "output": "v.nxs"}', "ASIRP_DataRoot"),
        ('{"input": "scans/scan.h5", "output": "link/v.nxs"}', "ASIRP_DataRoot"),
        ('{"input": "scans/absent.h5", "output": "v.nxs"}', "ASIRP_FileError"),
        ('{"input": "scans/scan.h5", "output": "volumes/existing.nxs"}', "ASIRP_Exists"),
        ('{"input": "scans/scan.h5", "output": "scans/scan.h5"}', "ASIRP_Exists"),
        (
            '{"input": "scans/scan.h5", "output": "volumes/existing.nxs", "overwrite": true}',
            "ASIRP_InvalidInput",
        ),
    ],
)
def test_bad_requests_are_refused_at_once(device, data_root: Path, argument: str, reason: str):
    before = list(device.longRunningCommandStatus or [])
    with pytest.raises(tango.DevFailed) as caught:
        device.ReconstructTomo(argument)
    assert caught.value.args[0].reason == reason
    assert list(device.longRunningCommandStatus or []) == before  # nothing started
    assert not (data_root / "v.nxs").exists()
    assert (data_root / "volumes" / "existing.nxs").read_bytes() == b"an earlier volume"


def test_refusals_leave_the_device_restoring(device):
    with pytest.raises(tango.DevFailed):
        device.ReconstructTomo('{"input": "../x.h5", "output": "v.nxs"}')
    _restore_works(device)


@pytest.mark.parametrize(
    ("name", "why"),
    [("corrupt.h5", "InputFileError: .* is not an HDF5 file"), ("no_flats.h5", "no flat fields")],
)
def test_a_corrupt_file_fails_the_command_and_the_device_stays_usable(
    device, data_root: Path, name: str, why: str
):
    argument = {"input": f"scans/{name}", "output": "volumes/corrupt.nxs", "method": "none"}
    request_id, outcome, _states, _ = _run(device, argument)
    assert outcome["status"] == "FAILED"
    assert re.search(why, outcome["reason"]), outcome
    assert list(device.longRunningCommandStatus[-2:]) == [str(request_id), "FAILED"]
    # the command's result is published just before the state and status settle: under load
    # the status can still name the running job for a moment
    assert _status_soon(device, "tomography reconstruction failed")
    assert device.restoration_outcome == "failed"
    assert not (data_root / "volumes" / "corrupt.nxs").exists()
    _restore_works(device)
    assert device.restoration_outcome == "succeeded"


def test_busy_while_a_restoration_runs(device):
    device.iterations = 100_000
    device.parameters_json = '{"stop": "fixed"}'
    device.write_attribute("input_image", small_map((96, 96), seed=6))
    try:
        device.Restore()
        with pytest.raises(tango.DevFailed) as caught:
            device.ReconstructTomo(json.dumps({"input": SCAN, "output": "volumes/busy.nxs"}))
        device.Abort()
    finally:
        device.iterations = PSF["DefaultIterations"]
        device.parameters_json = "{}"
    assert caught.value.args[0].reason == "ASIRP_Busy"
    assert "a restoration is already running" in caught.value.args[0].desc
    wait_until_not_running(device)

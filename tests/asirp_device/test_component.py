"""The restoration component on its own (no Tango): work, states, listeners, files, errors."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import asirp
from asirp.io import InputFileError
from asirp.results_io import read_restoration
from asirp.safe_files import DataRootError
from asirp_device.component import (
    ComponentState,
    NotReady,
    RestorationBusy,
    RestorationComponent,
)
from asirp_device.settings import Settings
from tests.asirp_device.conftest import small_map

PSF = {"beam_fwhm_um": 50.0, "pixel_um": 10.0}


class Listener:
    """Records what the component announces, in order, with the thread it came from."""

    def __init__(self, component: RestorationComponent) -> None:
        self.log: list[tuple[str, object]] = []
        component.add_state_callback(lambda state, status: self.log.append(("state", state)))
        component.add_progress_callback(lambda percent: self.log.append(("progress", percent)))
        component.add_result_callback(lambda record: self.log.append(("result", record)))

    def kinds(self, kind: str) -> list[object]:
        return [value for name, value in self.log if name == kind]


def finished(component: RestorationComponent) -> None:
    assert component.wait(60), "the restoration did not end"


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def test_restoration_matches_the_engine_and_is_announced_in_order():
    component = RestorationComponent(Settings(iterations=15))
    listener = Listener(component)
    image = small_map()
    component.set_input(image)

    component.start()
    assert component.state is ComponentState.RUNNING
    finished(component)

    expected = asirp.restore(image, "richardson_lucy", iterations=15, **PSF)
    record = component.result
    assert record is not None
    assert record.sequence == 1
    np.testing.assert_array_equal(record.restoration.image, expected.image)
    assert record.restoration.method == "richardson_lucy"
    assert record.source == "input_image attribute"
    assert component.state is ComponentState.ON
    assert "result #1" in component.status
    assert "richardson_lucy" in component.status
    assert component.progress == 100
    order = [name for name, _ in listener.log if name != "progress"]
    assert order == ["state", "result", "state"]
    assert listener.kinds("state") == [ComponentState.RUNNING, ComponentState.ON]
    progress = listener.kinds("progress")
    assert progress[-1] == 100
    assert progress == sorted(progress)
    assert listener.log.index(("progress", 100)) < len(listener.log) - 1  # before ON


def test_the_input_is_copied_and_read_only():
    component = RestorationComponent()
    image = small_map()
    component.set_input(image)
    image[:] = 0
    stored = component.input_image
    assert stored is not None
    assert stored.max() > 0
    with pytest.raises(ValueError, match="read-only"):
        stored[0, 0] = 1


def test_auto_select_lets_the_engine_choose():
    component = RestorationComponent(Settings(auto_select=True, iterations=3))
    image = small_map(seed=1, peak=2.0)  # low counts: the rule runs 10 RL iterations with TV
    component.set_input(image)
    component.start()
    finished(component)
    expected = asirp.restore(image, "auto", **PSF)
    record = component.result
    assert record is not None
    np.testing.assert_array_equal(record.restoration.image, expected.image)
    assert record.restoration.method == expected.method == "richardson_lucy"
    assert record.restoration.params["iterations_run"] == 10
    assert "auto: very low counts" in component.status


def test_auto_select_passes_the_selection_context_of_the_parameters():
    parameters = {"budget_ms": 5000, "mode": "cheap", "tv_weight": 0.01}
    component = RestorationComponent(Settings(auto_select=True, parameters=parameters))
    component.set_input(small_map(seed=3))
    component.start()
    finished(component)
    assert component.state is ComponentState.ON
    selection = component.result.restoration.params["selection"]
    assert selection["context"]["budget_ms"] == 5000
    assert selection["mode"] == "cheap"
    # tv_weight is a method parameter: it applies when auto_select is off, not to the choice
    assert component.result.restoration.params.get("tv_weight", 0.0) == 0.0


def test_iterations_and_parameters_reach_only_methods_that_take_them():
    component = RestorationComponent(Settings(iterations=4, parameters={"stop": "fixed"}))
    component.set_input(small_map())
    component.start()
    finished(component)
    record = component.result
    assert record is not None
    assert record.restoration.params["iterations_run"] == 4

    component.set_method("wiener")  # takes neither iterations nor stop
    with pytest.raises(ValueError, match="no parameter 'stop'"):
        component.start()
    assert component.state is ComponentState.ON
    component.set_parameters("{}")
    component.start()
    finished(component)
    record = component.result
    assert record is not None
    assert record.restoration.method == "wiener"


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda c: c.set_method("richardson_lucky"), ValueError, "unknown method"),
        (lambda c: c.set_method("auto"), ValueError, "set auto_select"),
        (lambda c: c.set_iterations(0), ValueError, "between 1 and 100000"),
        (lambda c: c.set_iterations(-3), ValueError, "got -3"),
        (lambda c: c.set_iterations(2.5), TypeError, "integer"),
        (lambda c: c.set_beam_fwhm_um(0.0), ValueError, "> 0"),
        (lambda c: c.set_pixel_um(float("nan")), ValueError, "finite"),
        (lambda c: c.set_auto_select("yes"), TypeError, "true or false"),
        (lambda c: c.set_parameters("{stop: fixed}"), ValueError, "JSON object"),
        (lambda c: c.set_parameters("[1, 2]"), ValueError, "JSON object"),
        (lambda c: c.set_parameters({"iterations": 5}), ValueError, "iterations setting"),
        (lambda c: c.set_parameters({"stop": "never"}), ValueError, "allowed: fixed"),
        (lambda c: c.set_parameters({"nsr": 0.1}), ValueError, "no parameter 'nsr'"),
        (lambda c: c.set_input(np.zeros((3, 3))), ValueError, "too small"),
        (lambda c: c.set_input(np.zeros(16)), ValueError, "2-D"),
        (lambda c: c.set_input(np.zeros((2, 16, 16))), ValueError, "stack"),
        (lambda c: c.set_input(np.zeros((4097, 8))), ValueError, "at most 4096"),
        (lambda c: c.set_input(np.full((8, 8), np.inf)), ValueError, "NaN or Inf"),
        (lambda c: c.set_input(np.ones((8, 8), complex)), TypeError, "complex"),
    ],
)
def test_bad_settings_and_inputs_are_refused_and_change_nothing(change, error, message):
    component = RestorationComponent()
    before = component.settings
    with pytest.raises(error, match=message):
        change(component)
    assert component.settings == before
    assert component.input_image is None
    assert component.state is ComponentState.ON


@pytest.mark.parametrize(
    ("settings", "data_root", "message"),
    [
        (Settings(method="nope"), None, "unknown method"),
        (Settings(iterations=0), None, "between 1 and 100000"),
        (Settings(parameters="{"), None, "JSON object"),
        (Settings(compute_device="quantum"), None, "unknown device"),
        (Settings(), "/nonexistent/asirp-data", "not an existing folder"),
    ],
)
def test_a_component_with_bad_defaults_is_not_built(settings, data_root, message):
    with pytest.raises(ValueError, match=message):
        RestorationComponent(settings, data_root=data_root)


def test_a_result_too_large_for_the_image_attribute_is_refused_before_it_starts():
    # a super-resolution method: its result is `scale` times larger than the input
    spec = next(spec for spec in asirp.method_specs() if spec.scale > 1)
    component = RestorationComponent(Settings(method=spec.name, parameters={"scale": 4}))
    component.set_input(np.ones((1025, 64), np.float32))
    with pytest.raises(ValueError, match="would return a 4100x256 px map"):
        component.start()
    assert component.state is ComponentState.ON
    assert not component.busy


def test_restore_without_input_is_refused():
    component = RestorationComponent()
    with pytest.raises(NotReady, match="no input image"):
        component.start()
    assert component.state is ComponentState.ON


def long_run_component(**settings: object) -> RestorationComponent:
    component = RestorationComponent(
        Settings(iterations=100_000, parameters={"stop": "fixed"}, **settings)
    )
    component.set_input(small_map((96, 96)))
    return component


def test_abort_stops_a_long_restoration_within_a_second_and_keeps_the_result():
    component = long_run_component()
    component.set_iterations(2)
    component.start()
    finished(component)
    kept = component.result
    component.set_iterations(100_000)
    listener = Listener(component)

    component.start()
    time.sleep(0.3)
    assert component.state is ComponentState.RUNNING
    with pytest.raises(RestorationBusy, match="already running"):
        component.start()
    with pytest.raises(RestorationBusy, match="call Abort first"):
        component.reset()
    started = time.perf_counter()
    assert component.abort() is True
    finished(component)
    assert time.perf_counter() - started < 1.0
    assert component.state is ComponentState.ON
    assert "aborted" in component.status
    assert component.result is kept
    assert listener.kinds("result") == []
    assert component.abort() is False  # idle: nothing to stop


def test_shutdown_aborts_the_worker():
    component = long_run_component()
    component.start()
    time.sleep(0.1)
    started = time.perf_counter()
    component.shutdown(timeout=5.0)
    assert not component.busy
    assert time.perf_counter() - started < 1.0


def test_a_failing_restoration_raises_alarm_and_the_next_good_one_clears_it():
    # the real engine, given a 5x5 reference: any other input shape fails inside the worker
    engine = functools.partial(asirp.restore, reference=np.ones((5, 5), np.float32))
    component = RestorationComponent(Settings(iterations=3), engine=engine)
    listener = Listener(component)
    component.set_input(small_map((16, 16)))

    component.start()
    finished(component)
    assert component.state is ComponentState.ALARM
    assert "restoration failed: ValueError: reference has shape (5, 5)" in component.status
    assert component.result is None

    component.set_input(small_map((5, 5)))
    component.start()
    finished(component)
    assert component.state is ComponentState.ON
    assert component.result is not None
    assert listener.kinds("state") == [
        ComponentState.RUNNING,
        ComponentState.ALARM,
        ComponentState.RUNNING,
        ComponentState.ON,
    ]


def test_reset_clears_alarm_and_progress_but_keeps_input_and_result():
    engine = functools.partial(asirp.restore, reference=np.ones((5, 5), np.float32))
    component = RestorationComponent(Settings(iterations=2), engine=engine)
    component.set_input(small_map((5, 5)))
    component.start()
    finished(component)
    result = component.result
    component.set_input(small_map((8, 8)))
    component.start()
    finished(component)
    assert component.state is ComponentState.ALARM

    component.reset()
    assert component.state is ComponentState.ON
    assert component.progress == 0
    assert component.result is result
    assert component.input_image is not None
    assert component.input_image.shape == (8, 8)


def test_a_broken_listener_does_not_break_the_component():
    component = RestorationComponent(Settings(iterations=2))

    def broken(*args: object) -> None:
        raise RuntimeError("listener bug")

    component.add_state_callback(broken)
    component.add_result_callback(broken)
    listener = Listener(component)
    component.set_input(small_map())
    component.start()
    finished(component)
    assert component.state is ComponentState.ON
    assert len(listener.kinds("result")) == 1


def test_published_results_from_a_live_source_reach_the_listeners():
    component = RestorationComponent()
    listener = Listener(component)
    results = [asirp.restore(small_map(seed=seed), "wiener", **PSF) for seed in (1, 2)]

    records = [component.publish_result(result, f"run-{n}") for n, result in enumerate(results)]

    assert [record.sequence for record in records] == [1, 2]
    assert component.result is records[-1]
    assert listener.kinds("result") == records
    # the status follows: its first line names the newest result, not an old one
    assert listener.kinds("state") == [ComponentState.ON, ComponentState.ON]
    assert component.state is ComponentState.ON
    assert component.status.startswith("result #2: ")
    assert "(from run-1)" in component.status
    broken = asirp.restore(small_map(), "wiener", **PSF)
    broken.image = np.full((8, 8), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        component.publish_result(broken, "bad")
    assert component.result is records[-1]


def test_concurrent_starts_run_one_restoration():
    component = RestorationComponent(Settings(iterations=20, parameters={"stop": "fixed"}))
    component.set_input(small_map((64, 64)))
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            component.start()
            outcomes.append("started")
        except RestorationBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished(component)
    assert sorted(outcomes) == ["busy", "busy", "busy", "started"]
    assert component.result is not None
    assert component.result.sequence == 1


def test_files_are_read_and_written_inside_the_data_root(data_root: Path):
    image = small_map(seed=3)
    np.save(data_root / "map.npy", image)
    component = RestorationComponent(Settings(iterations=3), data_root=data_root)

    assert component.load_image("map.npy") == data_root.resolve() / "map.npy"
    np.testing.assert_array_equal(component.input_image, image)
    assert component.input_source == str(data_root.resolve() / "map.npy")
    with pytest.raises(NotReady, match="no result to save"):
        component.save_result("result.h5")
    component.start()
    finished(component)

    written = component.save_result("results/restored.h5")
    assert written == data_root.resolve() / "results" / "restored.h5"
    stored = read_restoration(written)
    record = component.result
    assert record is not None
    np.testing.assert_array_equal(stored["image"], record.restoration.image)
    assert stored["method"] == "richardson_lucy"
    assert stored["input_path"] == str(data_root.resolve() / "map.npy")

    component.load_image(f"{written}::/entry/restored/data")  # absolute, inside, HDF5 dataset
    np.testing.assert_array_equal(component.input_image, record.restoration.image)


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("../outside.npy", DataRootError, "outside the data root"),
        ("sub/../../outside.npy", DataRootError, "outside the data root"),
        ("/etc/hostname", DataRootError, "outside the data root"),
        ("escape/outside.npy", DataRootError, "outside the data root"),  # symlink out
        ("missing.npy", InputFileError, "file not found"),
        ("   ", ValueError, "empty"),
        ("stack.npy", ValueError, "stack"),
        ("notes.txt", InputFileError, "unknown input format"),
    ],
)
def test_bad_paths_are_refused(data_root: Path, path: str, error: type, message: str):
    outside = data_root.parent / "outside"
    outside.mkdir()
    np.save(outside / "outside.npy", small_map())
    np.save(data_root.parent / "outside.npy", small_map())
    (data_root / "escape").symlink_to(outside)
    np.save(data_root / "stack.npy", np.ones((2, 8, 8)))
    (data_root / "notes.txt").write_text("not an image")
    component = RestorationComponent(data_root=data_root)
    with pytest.raises(error, match=message):
        component.load_image(path)
    assert component.input_image is None


def test_save_result_refuses_paths_that_are_not_hdf5_files_inside_the_root(data_root: Path):
    component = RestorationComponent(Settings(iterations=2), data_root=data_root)
    component.set_input(small_map())
    component.start()
    finished(component)
    (data_root / "folder.h5").mkdir()
    for path, message in [
        ("result.txt", "must end with"),
        ("result.h5::/entry", "without '::'"),
        ("folder.h5", "is a folder"),
        ("../result.h5", "outside the data root"),
    ]:
        with pytest.raises(ValueError, match=message):
            component.save_result(path)
    assert not (data_root.parent / "result.h5").exists()


def test_file_access_is_disabled_without_a_data_root():
    component = RestorationComponent()
    assert component.data_root is None
    with pytest.raises(DataRootError, match="no data root is configured"):
        component.load_image("map.npy")


@pytest.mark.filterwarnings("ignore::asirp.methods.blind_richardson_lucy.BlindWidthWarning")
def test_the_engines_cautions_reach_the_status():
    component = RestorationComponent(Settings(method="blind_richardson_lucy"))
    flat = np.random.default_rng(1).poisson(100.0, (48, 48)).astype(np.float32)
    component.set_input(flat)  # nothing sharper than the beam: the width is not determined
    component.start()
    finished(component)
    assert component.state is ComponentState.ON
    assert "CAUTION: the data did not determine the beam width" in component.status
    assert component.result.restoration.cautions()

    component.set_method("richardson_lucy")
    component.set_input(small_map())
    component.start()
    finished(component)
    assert "CAUTION" not in component.status
    assert component.result.restoration.cautions() == []

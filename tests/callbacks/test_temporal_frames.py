"""The parts of the temporal monitor, alone: the confined AD_HDF5 handler and Filler, the frame
and temperature checks, the ordered bounded worker, and the validation of start metadata."""

from __future__ import annotations

import os
import threading

import h5py
import numpy as np
import pytest
from event_model import compose_run

from asirp.diffraction import DetectorGeometry, TemporalSettings
from asirp.safe_files import DataRoot, DataRootError
from callbacks.frames import (
    FrameError,
    SafeADHDF5Handler,
    ad_hdf5_handler_factory,
    as_frame,
    as_temperature_K,
    frame_filler,
    temperature_conversion,
)
from callbacks.ordered_worker import OrderedWorker
from callbacks.temporal_config import ConfigError, TemporalDefaults, config_from_start

SHAPE = (16, 24)


def write_ad_hdf5(path, frames, **dataset_options):
    """An AD_HDF5 file: ``/entry/data/data`` of shape ``(n, rows, cols)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_group("entry").create_group("data").create_dataset(
            "data", data=np.asarray(frames), **dataset_options
        )
    return path


def frames(n=3, dtype=np.uint32):
    return np.arange(n * SHAPE[0] * SHAPE[1], dtype=dtype).reshape(n, *SHAPE)


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "root"
    folder.mkdir()
    return DataRoot(folder)


def handler(root, name, **kwargs):
    return SafeADHDF5Handler(name, data_root=root, **kwargs)


# -- the handler ------------------------------------------------------------------------------
def test_reads_frames_by_relative_or_absolute_path_inside_the_root(root):
    data = frames(4)
    write_ad_hdf5(root.path / "sub" / "f.h5", data)
    np.testing.assert_array_equal(handler(root, "sub/f.h5")(2), data[2:3])
    absolute = handler(root, str(root.path / "sub" / "f.h5"), frame_per_point=2)
    np.testing.assert_array_equal(absolute(1), data[2:4])


@pytest.mark.parametrize("name", ["../outside.h5", "sub/../../outside.h5", "/etc/passwd"])
def test_paths_leaving_the_root_are_refused_before_anything_is_opened(root, name):
    write_ad_hdf5(root.path.parent / "outside.h5", frames())  # exists: refused all the same
    with pytest.raises(DataRootError, match="outside the data root"):
        handler(root, name)


def test_symbolic_links_are_not_followed_even_to_files_inside_the_root(root):
    write_ad_hdf5(root.path / "real.h5", frames())
    os.symlink(root.path / "real.h5", root.path / "link.h5")
    (root.path / "folder").mkdir()
    write_ad_hdf5(root.path / "folder" / "f.h5", frames())
    os.symlink(root.path / "folder", root.path / "folder_link")
    for name in ("link.h5", "folder_link/f.h5"):
        with pytest.raises(DataRootError, match="symbolic link"):
            handler(root, name)(0)


def test_large_files_are_refused_from_their_size_before_reading(root, monkeypatch):
    write_ad_hdf5(root.path / "big.h5", frames(8))
    size = (root.path / "big.h5").stat().st_size
    opened = []
    monkeypatch.setattr(h5py, "File", lambda *a, **k: opened.append(a))
    with pytest.raises(ValueError, match=f"{size} bytes, more than"):
        handler(root, "big.h5", max_file_bytes=size - 1)(0)
    assert opened == []  # h5py never saw the file


def test_a_read_or_chunk_above_the_frame_cap_is_refused(root):
    write_ad_hdf5(root.path / "f.h5", frames(4))
    frame_bytes = SHAPE[0] * SHAPE[1] * 4
    assert handler(root, "f.h5", max_frame_bytes=frame_bytes)(0).shape == (1, *SHAPE)
    with pytest.raises(ValueError, match="more than the"):
        handler(root, "f.h5", max_frame_bytes=frame_bytes - 1)(0)
    write_ad_hdf5(root.path / "chunked.h5", frames(4), chunks=(4, *SHAPE), compression="gzip")
    with pytest.raises(ValueError, match="more than the"):
        handler(root, "chunked.h5", max_frame_bytes=2 * frame_bytes)(0)


def test_links_virtual_and_external_storage_inside_the_file_are_refused(root):
    other = write_ad_hdf5(root.path / "other.h5", frames())
    with h5py.File(root.path / "external_link.h5", "w") as handle:
        handle.create_group("entry").create_group("data")["data"] = h5py.ExternalLink(
            other.name, "/entry/data/data"
        )
    with h5py.File(root.path / "soft_link.h5", "w") as handle:
        handle.create_dataset("hidden", data=frames())
        handle.create_group("entry").create_group("data")["data"] = h5py.SoftLink("/hidden")
    layout = h5py.VirtualLayout(shape=(3, *SHAPE), dtype=np.uint32)
    layout[:] = h5py.VirtualSource(other.name, "/entry/data/data", shape=(3, *SHAPE))
    with h5py.File(root.path / "virtual.h5", "w") as handle:
        handle.create_group("entry").create_group("data").create_virtual_dataset("data", layout)
    raw = root.path / "raw.bin"
    frames().tofile(raw)
    with h5py.File(root.path / "external_storage.h5", "w") as handle:
        handle.create_group("entry").create_group("data").create_dataset(
            "data", shape=(3, *SHAPE), dtype=np.uint32, external=[(str(raw), 0, h5py.h5f.UNLIMITED)]
        )
    for name, message in [
        ("external_link.h5", "ExternalLink, not followed"),
        ("soft_link.h5", "SoftLink, not followed"),
        ("virtual.h5", "stored in other files"),
        ("external_storage.h5", "stored in other files"),
    ]:
        with pytest.raises(ValueError, match=message):
            handler(root, name)(0)


def test_bad_contents_and_point_numbers_are_refused(root):
    with h5py.File(root.path / "text.h5", "w") as handle:
        handle.create_group("entry").create_group("data").create_dataset(
            "data", data=np.array([[[b"ab"]]])
        )
    write_ad_hdf5(root.path / "flat.h5", frames()[0])
    write_ad_hdf5(root.path / "f.h5", frames(2))
    (root.path / "garbage.h5").write_bytes(b"\x89HDF\r\n" + bytes(200))
    with pytest.raises(ValueError, match="not numeric"):
        handler(root, "text.h5")(0)
    with pytest.raises(ValueError, match=r"\(frames, rows, columns\)"):
        handler(root, "flat.h5")(0)
    with pytest.raises(OSError, match="signature"):
        handler(root, "garbage.h5")(0)
    for point, message in [(2, "holds 2"), (-1, ">= 0"), (True, "integer"), (0.5, "integer")]:
        with pytest.raises(ValueError, match=message):
            handler(root, "f.h5")(point)
    with pytest.raises(ValueError, match="frame_per_point"):
        handler(root, "f.h5", frame_per_point=0)


def test_the_factory_accepts_only_frame_per_point_from_the_resource(root, tmp_path):
    write_ad_hdf5(root.path / "f.h5", frames())
    factory = ad_hdf5_handler_factory(root)
    assert factory("f.h5", frame_per_point=1)(0).shape == (1, *SHAPE)
    with pytest.raises(ValueError, match="not accepted"):
        factory("f.h5", data_root=str(tmp_path))  # would widen the root


def test_the_filler_fills_an_event_from_resource_and_datum_documents(root):
    data = frames(2)
    write_ad_hdf5(root.path / "f.h5", data)
    bundle = compose_run()
    resource = bundle.compose_resource(
        spec="AD_HDF5", root=str(root.path), resource_path="f.h5", resource_kwargs={}
    )
    datum = resource.compose_datum(datum_kwargs={"point_number": 1})
    descriptor = bundle.compose_descriptor(
        name="primary",
        data_keys={"img": {"source": "s", "dtype": "array", "shape": [1, *SHAPE], "external": "X"}},
    )
    event = descriptor.compose_event(
        data={"img": datum["datum_id"]}, timestamps={"img": 0.0}, filled={"img": False}
    )
    filler = frame_filler(root, retry_intervals=())
    filler.descriptor(descriptor.descriptor_doc)
    filler.resource(resource.resource_doc)
    filler.datum(datum)
    filled = filler.fill_event(event, inplace=False)
    np.testing.assert_array_equal(filled["data"]["img"], data[1:2])
    assert event["data"]["img"] == datum["datum_id"]  # the original is left alone


# -- frames and temperatures ------------------------------------------------------------------
def test_as_frame_accepts_numeric_frames_of_the_shape_and_refuses_the_rest():
    good = np.arange(6, dtype=np.uint16).reshape(2, 3)
    frame = as_frame(good, (2, 3))
    assert frame.dtype == np.float32
    assert not np.shares_memory(frame, good)
    np.testing.assert_array_equal(as_frame(good[np.newaxis], (2, 3)), good)
    np.testing.assert_array_equal(as_frame(good.tolist(), (2, 3)), good)
    nan = good.astype(float)
    nan[1, 1] = np.nan
    cases = [
        (nan, "nonfinite"),
        (np.zeros((3, 2)), "shape"),
        ("datum-id/0", "type"),
        (None, "type"),
        ([[1, 2], [3]], "type"),
        (np.array([["a", "b", "c"]] * 2), "dtype"),
        (np.zeros((2, 3), dtype=complex), "dtype"),
    ]
    for value, reason in cases:
        with pytest.raises(FrameError) as caught:
            as_frame(value, (2, 3))
        assert caught.value.reason == reason, value


def test_temperatures_are_kelvin_from_their_units():
    assert as_temperature_K(300) == 300.0
    assert as_temperature_K(np.float32(25.0), temperature_conversion("degC")) == 298.15
    assert as_temperature_K(np.array([310.0])) == 310.0
    assert temperature_conversion(None) == temperature_conversion("K") == (1.0, 0.0)
    with pytest.raises(ValueError, match="not understood"):
        temperature_conversion("degF")
    for value in (np.nan, -5.0, True, "300", None):
        with pytest.raises(FrameError, match="temperature"):
            as_temperature_K(value)


# -- the worker -------------------------------------------------------------------------------
def test_the_worker_keeps_order_bounds_droppable_items_and_never_drops_the_others():
    gate, entered = threading.Event(), threading.Event()
    seen = []

    def run(item):
        entered.set()
        gate.wait(10)
        seen.append(item)

    worker = OrderedWorker(run, name="test", max_items=2, max_bytes=100)
    assert worker.submit("first", droppable=True)
    assert entered.wait(10)  # the thread holds "first": the queue is empty again
    accepted = [worker.submit(n, droppable=True, nbytes=10) for n in range(4)]
    assert worker.submit("bookkeeping")  # not droppable: queued past the bound
    assert accepted == [True, True, False, False]
    assert worker.refused == 2
    assert worker.backlog == 3
    assert worker.wait_idle(0.05) is False
    gate.set()
    assert worker.wait_idle(10)
    assert seen == ["first", 0, 1, "bookkeeping"]
    assert worker.close(10)
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit("late")


def test_the_worker_bounds_the_bytes_of_waiting_items():
    gate, entered = threading.Event(), threading.Event()
    worker = OrderedWorker(
        lambda item: (entered.set(), gate.wait(10)), name="bytes", max_items=100, max_bytes=100
    )
    worker.submit("running")
    assert entered.wait(10)
    assert worker.submit("a", droppable=True, nbytes=80)
    assert not worker.submit("b", droppable=True, nbytes=30)  # 110 bytes would wait
    assert worker.submit("c", droppable=True, nbytes=20)
    gate.set()
    assert worker.close(10)
    assert worker.completed == 3


# -- start metadata ---------------------------------------------------------------------------
GEOMETRY = DetectorGeometry(shape_px=(32, 32), pixel_um=600.0, poni_px=(16.0, 16.0))


def test_metadata_configures_a_run_and_overrides_the_defaults_key_by_key():
    defaults = TemporalDefaults(geometry=GEOMETRY, settings=TemporalSettings(restore=False))
    metadata = {
        "geometry": {**GEOMETRY.as_dict(), "distance_mm": 250.0},
        "settings": TemporalSettings(restore=False, n_bins=64).as_dict(),
        "image_field": "det_image",
        "temperature_field": None,
    }
    config = config_from_start({"uid": "a", "asirp_temporal": metadata}, defaults)
    assert config.source == "metadata"
    assert config.geometry.distance_mm == 250.0
    assert config.settings.n_bins == 64
    assert (config.image_field, config.temperature_field, config.stream) == (
        "det_image",
        None,
        "primary",
    )
    plain = config_from_start({"uid": "b"}, defaults)
    assert plain.source == "defaults"
    assert plain.geometry == GEOMETRY
    assert config_from_start({"uid": "c"}, TemporalDefaults()) is None


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("yes", "must be a mapping"),
        ({}, "has no geometry"),
        ({"geometry": {"shape_px": "ab"}}, "geometry is invalid"),
        ({"geometry": [1, 2]}, "geometry must be a mapping"),
        ({"geometry": {**GEOMETRY.as_dict(), "shape_px": [8192, 8192]}}, "larger than"),
        ({"geometry": GEOMETRY.as_dict(), "settings": {"n_bins": 5}}, "settings is invalid"),
        ({"geometry": GEOMETRY.as_dict(), "settings": {"evil": 1}}, "settings is invalid"),
        ({"geometry": GEOMETRY.as_dict(), "profile": {"kind": "x"}}, "profile is invalid"),
        ({"geometry": GEOMETRY.as_dict(), "image_field": "a b"}, "image_field"),
        ({"geometry": GEOMETRY.as_dict(), "stream": 3}, "stream"),
        ({"geometry": GEOMETRY.as_dict(), "temperature_field": "x" * 200}, "temperature_field"),
    ],
)
def test_unusable_metadata_is_refused(metadata, message):
    with pytest.raises(ConfigError, match=message):
        config_from_start({"uid": "u", "asirp_temporal": metadata}, TemporalDefaults())

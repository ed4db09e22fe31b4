"""A data root that holds: nothing outside it is read, through links, HDF5 or races (#12).

Every outside file holds the distinctive value :data:`SECRET`; the tests assert that it never
reaches an input, a result or an error message, and that errors do not say whether an outside
file exists.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango

from asirp.io import InputFileError, UnsafeInputError, read_array
from asirp.safe_files import DataRoot, DataRootError
from asirp_device.component import RestorationComponent
from asirp_device.settings import Settings
from tests.asirp_device.conftest import nodb_server, small_map

SECRET = 7177.25
"""Value of every pixel of every file outside the data root."""


def secret_map() -> np.ndarray:
    return np.full((8, 8), SECRET, np.float32)


def no_secret(text: str) -> bool:
    return "7177" not in text and "secret" not in text.lower()


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``root`` with hostile HDF5 files and links; ``outside`` next to it with the secrets."""
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    np.save(outside / "hidden.npy", secret_map())
    with h5py.File(outside / "hidden.h5", "w") as handle:
        handle["data"] = secret_map()
    (outside / "hidden.bin").write_bytes(secret_map().tobytes())
    np.save(root / "map.npy", small_map((16, 16)))

    with h5py.File(root / "external_link.h5", "w") as handle:
        handle["data"] = h5py.ExternalLink(str(outside / "hidden.h5"), "/data")
    with h5py.File(root / "soft_link.h5", "w") as handle:  # a soft link through an external one
        handle["elsewhere"] = h5py.ExternalLink(str(outside / "hidden.h5"), "/")
        handle["data"] = h5py.SoftLink("/elsewhere/data")
    with h5py.File(root / "relative_soft_link.h5", "w") as handle:
        group = handle.create_group("entry")
        group["ext"] = h5py.ExternalLink(str(outside / "hidden.h5"), "/")
        group["data"] = h5py.SoftLink("ext/data")
    layout_ = h5py.VirtualLayout(shape=(8, 8), dtype=np.float32)
    layout_[:] = h5py.VirtualSource(str(outside / "hidden.h5"), "data", shape=(8, 8))
    with h5py.File(root / "virtual.h5", "w") as handle:
        handle.create_virtual_dataset("data", layout_)
    with h5py.File(root / "external_storage.h5", "w") as handle:
        handle.create_dataset(
            "data",
            shape=(8, 8),
            dtype=np.float32,
            external=[(str(outside / "hidden.bin"), 0, 8 * 8 * 4)],
        )
    with h5py.File(root / "inside_soft_link.h5", "w") as handle:  # harmless: stays in the file
        handle["entry/map"] = small_map((16, 16))
        handle["data"] = h5py.SoftLink("/entry/map")
    return root, outside


HOSTILE_HDF5 = [
    ("external_link.h5::/data", "external link"),
    ("soft_link.h5::/data", "external link"),
    ("relative_soft_link.h5::/entry/data", "external link"),
    ("virtual.h5::/data", "virtual dataset"),
    ("external_storage.h5::/data", "external raw files"),
]


@pytest.mark.parametrize(("name", "message"), HOSTILE_HDF5)
def test_hdf5_links_and_storage_in_other_files_are_refused(layout, name, message):
    root, _ = layout
    for reader in (
        lambda: read_array(root / name),  # the command line's path
        lambda: read_array(name, root=DataRoot(root)),  # the device's path
    ):
        with pytest.raises(UnsafeInputError, match=message) as caught:
            reader()
        assert no_secret(str(caught.value))
    component = RestorationComponent(data_root=root)
    with pytest.raises(UnsafeInputError) as caught:
        component.load_image(name)
    assert no_secret(str(caught.value))
    assert component.input_image is None


def test_a_soft_link_inside_the_file_is_still_read(layout):
    root, _ = layout
    np.testing.assert_array_equal(
        read_array("inside_soft_link.h5::/data", root=DataRoot(root)), small_map((16, 16))
    )


def test_no_symlink_is_followed_inside_the_data_root(layout):
    """The documented rule: links are refused wherever they point, even inside the root."""
    root, outside = layout
    (root / "to_outside").symlink_to(outside)
    (root / "sub").mkdir()
    np.save(root / "sub" / "inner.npy", small_map((16, 16)))
    (root / "to_sub").symlink_to(root / "sub")
    (root / "file_link.npy").symlink_to(outside / "hidden.npy")
    component = RestorationComponent(data_root=root)
    for path in ("to_outside/hidden.npy", "to_sub/inner.npy", "file_link.npy"):
        with pytest.raises(DataRootError, match="symbolic link") as caught:
            component.load_image(path)
        assert no_secret(str(caught.value))
    assert component.input_image is None
    component.load_image("sub/inner.npy")  # the real folder is fine


def test_errors_do_not_tell_whether_an_outside_file_exists(layout, tmp_path):
    root, outside = layout
    component = RestorationComponent(data_root=root)
    messages = []
    for name in ("hidden.npy", "absent.npy"):
        for path in (f"../elsewhere/{name}", str(outside / name)):
            with pytest.raises(DataRootError) as caught:
                component.load_image(path)
            messages.append(str(caught.value).replace(name, "NAME"))
            with pytest.raises(DataRootError) as caught:  # the weights parameter too
                component.set_parameters({"weights": path.replace(".npy", ".safetensors")})
            messages.append(str(caught.value).replace(name.replace(".npy", ".safetensors"), "N"))
    assert messages[:4] == messages[4:]  # same wording for the existing and the missing file
    assert all(no_secret(m) and "outside the data root" in m for m in messages)


def test_weights_are_pinned_inside_the_data_root(layout):
    """A weights path from the device opens exactly the checked file, by descriptor."""
    root, _ = layout
    (root / "models").mkdir()
    (root / "models" / "net.safetensors").write_bytes(b"weights v1")
    component = RestorationComponent(
        Settings(method="fca_sr"), data_root=root, engine=lambda *a, **k: None
    )
    component.set_parameters({"weights": "models/net.safetensors"})
    pinned = Path(component.settings.parameters["weights"])
    assert pinned.name == "net.safetensors"
    assert not pinned.is_relative_to(root)
    # swap the file for a link to an outside file: the pinned path still reads the checked one
    os.rename(root / "models" / "net.safetensors", root / "models" / "old")
    (root / "models" / "net.safetensors").symlink_to(layout[1] / "hidden.bin")
    assert pinned.read_bytes() == b"weights v1"
    component.set_parameters({"weights": str(pinned)})  # read back and written again: kept
    assert component.settings.parameters["weights"] == str(pinned)
    with pytest.raises(DataRootError, match="symbolic link"):
        component.set_parameters({"weights": "models/net.safetensors"})
    with pytest.raises(InputFileError, match="not found"):
        component.set_parameters({"weights": "models/none.safetensors"})
    with pytest.raises(DataRootError, match="no data root"):
        RestorationComponent(Settings(method="fca_sr")).set_parameters({"weights": "x.pth"})


def test_swapping_a_folder_for_a_symlink_never_reads_outside(layout):
    """2,000 loads while another thread swaps ``dir`` between a folder and a link outside."""
    root, outside = layout
    np.save(outside / "inner.npy", secret_map())
    (root / "dir").mkdir()
    np.save(root / "dir" / "inner.npy", np.ones((8, 8), np.float32))
    (root / "link_parked").symlink_to(outside)
    component = RestorationComponent(data_root=root)
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            os.rename(root / "dir", root / "real_parked")
            os.rename(root / "link_parked", root / "dir")
            os.rename(root / "dir", root / "link_parked")
            os.rename(root / "real_parked", root / "dir")
            swaps += 1

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    loaded = 0
    errors: list[str] = []
    try:
        deadline = time.monotonic() + 20
        for _ in range(2000):
            try:
                component.load_image("dir/inner.npy")
            except (DataRootError, InputFileError) as error:
                errors.append(str(error))
            else:
                image = component.input_image
                assert image is not None
                assert not np.any(image == SECRET)
                loaded += 1
            if time.monotonic() > deadline:
                break
    finally:
        stop.set()
        thread.join()
    assert all(no_secret(message) for message in errors)
    assert swaps > 10, swaps
    assert loaded > 0, loaded
    assert errors


def test_the_device_refuses_hdf5_escapes_and_stays_usable(layout):
    root, _ = layout
    with nodb_server({"DataRoot": str(root), "DefaultIterations": 3}) as trl:
        device = tango.DeviceProxy(trl)
        for name, _ in HOSTILE_HDF5:
            with pytest.raises(tango.DevFailed) as caught:
                device.LoadImage(name)
            error = caught.value.args[0]
            assert error.reason == "ASIRP_DataRoot", error
            assert no_secret(error.desc)
        with pytest.raises(tango.DevFailed) as caught:
            device.write_attribute("parameters_json", '{"weights": "/etc/hostname"}')
        assert caught.value.args[0].reason == "ASIRP_DataRoot"
        assert device.read_attribute("input_image").value.size == 0  # nothing was loaded
        device.LoadImage("map.npy")
        device.Restore()
        deadline = time.monotonic() + 60
        while device.state() == tango.DevState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert device.state() == tango.DevState.ON, device.status()
        assert device.read_attribute("restored_image").value.shape == (16, 16)

"""Sizes before bytes: tiny files declaring huge arrays are refused unread; colour TIFFs too (#12).

Memory is measured as the growth of this process's resident set (``VmRSS``), which must stay
under 100 MB while each bomb is refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango
import tifffile

from asirp.io import MAX_INPUT_BYTES_ENV, InputFileError, InputTooLargeError, read_array
from asirp.safe_files import DataRoot
from asirp_device.component import RestorationComponent
from tests.asirp_device.conftest import nodb_server, small_map

SIDE = 20_000
"""Declared side of every bomb: 20000 x 20000 float32 is 1.5 GiB (float64: 3 GiB)."""


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def hdf5_bomb(path: Path) -> Path:
    with h5py.File(path, "w") as handle:  # chunked and compressed, nothing written: ~1.4 kB
        handle.create_dataset(
            "data", shape=(SIDE, SIDE), dtype=np.float32, chunks=(256, 256), compression="gzip"
        )
    return path


def npy_bomb(path: Path) -> Path:
    with open(path, "wb") as stream:  # a header declaring 3 GiB, then nothing
        np.lib.format.write_array_header_1_0(
            stream, {"descr": "<f8", "fortran_order": False, "shape": (SIDE, SIDE)}
        )
    return path


def tiff_bomb(path: Path) -> Path:
    """A 16 x 16 TIFF whose width and length tags are patched to 20000."""
    tifffile.imwrite(path, np.zeros((16, 16), np.float32))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        tags = tiff.pages[0].tags
        spots = [(tags[code].valueoffset, tags[code].dtype) for code in (256, 257)]
    for offset, dtype in spots:
        size = 2 if int(dtype) == 3 else 4  # SHORT or LONG
        data[offset : offset + size] = SIDE.to_bytes(size, "little")
    path.write_bytes(bytes(data))
    return path


BOMBS = {"hdf5": (hdf5_bomb, "bomb.h5", "::/data"), "npy": (npy_bomb, "bomb.npy", "")}
BOMBS["tiff"] = (tiff_bomb, "bomb.tif", "")


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_tiny_files_declaring_huge_arrays_are_refused_unread(tmp_path, kind):
    make, name, dataset = BOMBS[kind]
    path = make(tmp_path / name)
    assert path.stat().st_size < 4096
    before = rss_bytes()
    for read in (
        lambda: read_array(f"{path}{dataset}"),
        lambda: read_array(f"{name}{dataset}", root=DataRoot(tmp_path)),
        lambda: RestorationComponent(data_root=tmp_path).load_image(f"{name}{dataset}"),
    ):
        with pytest.raises(InputTooLargeError, match=f"{SIDE} x {SIDE}") as caught:
            read()
        assert MAX_INPUT_BYTES_ENV in str(caught.value)  # says how to raise the limit
        assert "nothing was read" in str(caught.value)
    assert rss_bytes() - before < 100e6


def test_the_limit_is_raised_or_lowered_by_the_environment_or_a_keyword(tmp_path, monkeypatch):
    np.save(tmp_path / "map.npy", np.ones((16, 16), np.float32))  # 1 kB of data
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "512")
    with pytest.raises(InputTooLargeError, match="input limit"):
        read_array(tmp_path / "map.npy")
    assert read_array(tmp_path / "map.npy", max_bytes=4096).shape == (16, 16)
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "4096")
    assert read_array(tmp_path / "map.npy").shape == (16, 16)
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match="not a number of bytes"):
        read_array(tmp_path / "map.npy")


@pytest.mark.parametrize(
    ("shape", "photometric", "label"),
    [((64, 64, 4), "rgb", "RGBA, 64x64x4"), ((64, 64, 3), "rgb", "RGB, 64x64x3")],
)
def test_colour_tiffs_are_refused_not_read_as_stacks(tmp_path, shape, photometric, label):
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint8), photometric=photometric)
    with pytest.raises(InputFileError, match="colour TIFF") as caught:
        read_array(path)
    assert label in str(caught.value)
    assert "convert it to one channel first" in str(caught.value)


def test_grey_tiffs_and_stacks_are_still_read(tmp_path):
    tifffile.imwrite(tmp_path / "map.tif", small_map((16, 16)))
    stack = np.ones((3, 16, 16), np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    assert read_array(tmp_path / "map.tif").shape == (16, 16)
    assert read_array(tmp_path / "stack.tif").shape == (3, 16, 16)


def test_special_files_are_refused(tmp_path):
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(InputFileError, match="not a regular file"):  # and it does not block
        read_array(fifo)
    with pytest.raises(InputFileError, match="not a regular file"):
        read_array("pipe.npy", root=DataRoot(tmp_path))


def test_the_device_refuses_bombs_and_colour_tiffs_and_stays_usable(tmp_path):
    hdf5_bomb(tmp_path / "bomb.h5")
    tifffile.imwrite(tmp_path / "rgba.tif", np.zeros((64, 64, 4), np.uint8), photometric="rgb")
    np.save(tmp_path / "map.npy", small_map((16, 16)))
    with nodb_server({"DataRoot": str(tmp_path), "DefaultIterations": 3}) as trl:
        device = tango.DeviceProxy(trl)
        for path, words in (("bomb.h5::/data", "input limit"), ("rgba.tif", "colour TIFF")):
            with pytest.raises(tango.DevFailed) as caught:
                device.LoadImage(path)
            error = caught.value.args[0]
            assert error.reason in ("ASIRP_InvalidInput", "ASIRP_FileError"), error
            assert words in error.desc
        device.LoadImage("map.npy")
        device.Restore()
        deadline = time.monotonic() + 60
        while device.state() == tango.DevState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert device.state() == tango.DevState.ON, device.status()

"""Small tomography files written per test: Data Exchange variants and NXtomo."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

ROWS, COLUMNS = 2, 16


def write_exchange(
    path: Path,
    *,
    data: np.ndarray | None = None,
    white: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    theta: np.ndarray | None = None,
    theta_units: str | None = "degrees",
    skip: tuple[str, ...] = (),
) -> Path:
    """A small Data Exchange file; ``skip`` leaves datasets out."""
    rng = np.random.default_rng(0)
    arrays = {
        "data": data if data is not None else rng.uniform(200, 900, (6, ROWS, COLUMNS)),
        "data_white": white if white is not None else np.full((3, ROWS, COLUMNS), 1000.0),
        "data_dark": dark if dark is not None else np.full((2, ROWS, COLUMNS), 100.0),
        "theta": theta if theta is not None else np.linspace(0.0, 150.0, 6),
    }
    with h5py.File(path, "w") as handle:
        exchange = handle.create_group("exchange")
        for name, values in arrays.items():
            if name in skip:
                continue
            dataset = exchange.create_dataset(name, data=np.asarray(values, dtype=np.float32))
            if name == "theta" and theta_units is not None:
                dataset.attrs["units"] = theta_units
    return path


def write_nxtomo(path: Path, frames: np.ndarray, keys: np.ndarray, angles_deg: np.ndarray) -> Path:
    """An NXtomo file (NeXus application definition) with ``image_key`` 0/1/2 frames."""
    with h5py.File(path, "w") as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = "NXtomo"
        detector = entry.create_group("instrument/detector")
        detector.attrs["NX_class"] = "NXdetector"
        detector["data"] = frames.astype(np.uint16)
        detector["image_key"] = keys.astype(np.int32)
        detector["x_pixel_size"] = 6.5e-6
        detector["x_pixel_size"].attrs["units"] = "m"
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample["rotation_angle"] = angles_deg
        sample["rotation_angle"].attrs["units"] = "degree"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data["data"] = detector["data"]  # hard links, as NXtomo files have
        data["image_key"] = detector["image_key"]
        data["rotation_angle"] = sample["rotation_angle"]
    return path

"""``asirp tomo`` with the projections restored on dask workers: the same bits as in one
process, a resumable store, and one clear error for contradictory options.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from asirp.tomo.pipeline import StackEngine, run_tomo
from tests.asirp.tomo.test_tooth import _run_cli
from tests.conftest import TOOTH_H5

OPTIONS = {"method": "richardson_lucy", "psf_fwhm_px": 2.0, "centre": 295.86}


def _restored_volume(path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle["entry/reconstruction_restored/data"][...]


def _run_record(path) -> dict:
    with h5py.File(path, "r") as handle:
        return json.loads(handle["entry/process/run/data"][()])


def test_workers_give_the_same_volume_as_one_process_and_resume(tmp_path):
    single = run_tomo(TOOTH_H5, tmp_path / "single.h5", **OPTIONS)
    engine = StackEngine(store=tmp_path / "projections.zarr", workers=2)
    distributed = run_tomo(TOOTH_H5, tmp_path / "workers.h5", engine=engine, **OPTIONS)
    np.testing.assert_array_equal(distributed.restored, single.restored)  # bit for bit
    np.testing.assert_array_equal(_restored_volume(tmp_path / "workers.h5"), single.restored)
    first = _run_record(tmp_path / "workers.h5")["restored_on"]
    assert first["chunks_run"] == first["total_chunks"] == 6  # 181 projections in 32s
    assert len(first["workers"]) >= 1

    # run again on the same store: every chunk is already done, nothing is restored again
    again = run_tomo(TOOTH_H5, tmp_path / "again.h5", engine=engine, **OPTIONS)
    np.testing.assert_array_equal(again.restored, single.restored)
    second = _run_record(tmp_path / "again.h5")["restored_on"]
    assert (second["chunks_run"], second["chunks_skipped"]) == (0, 6)


def test_workers_and_scheduler_together_are_refused(tmp_path, capsys):
    argv = ["tomo", str(TOOTH_H5), "-o", str(tmp_path / "out.h5"), "--workers", "2"]
    with pytest.raises(ValueError, match="not both"):
        _run_cli([*argv, "--scheduler", "tcp://127.0.0.1:1"])
    assert not (tmp_path / "out.h5").exists()

"""``asirp tomo`` with the projections restored on dask workers: the same bits as in one
process, a resumable store, and one clear error for contradictory options.

Without a data root the workers read the raw projections from the file and flat/dark-correct
them (Data Exchange and NXtomo with interleaved frames); inside a data root the client sends
the corrected stack; a file changed after planning is one StackError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from asirp.safe_files import DataRoot
from asirp.stacks import ChunkStore, StackError, process_stack
from asirp.tomo.distributed import (
    SENT_FROM_CLIENT,
    CorrectedProjectionSource,
    median_references,
    projection_layout,
)
from asirp.tomo.exchange import read_scan
from asirp.tomo.normalise import flat_dark_correct
from asirp.tomo.pipeline import StackEngine, run_tomo
from asirp.tomo.restore_projections import restore_transmission_chunk
from sim.tomo import simulate_tomo
from tests.asirp.tomo.conftest import write_exchange, write_nxtomo
from tests.asirp.tomo.test_tooth import _run_cli
from tests.conftest import TOOTH_H5
from tests.dask_support import dask_cluster

OPTIONS = {"method": "richardson_lucy", "psf_fwhm_px": 2.0, "centre": 295.86}


def _restored_volume(path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle["entry/reconstruction_restored/data"][...]


def _run_record(path) -> dict:
    with h5py.File(path, "r") as handle:
        return json.loads(handle["entry/process/run/data"][()])


def test_workers_give_the_same_volume_as_one_process_and_resume(tmp_path):
    single = run_tomo(TOOTH_H5, tmp_path / "single.h5", **OPTIONS)
    # one slice a task: the tooth's 2 detector rows go to both workers
    engine = StackEngine(store=tmp_path / "projections.zarr", workers=2, rows_per_task=1)
    distributed = run_tomo(TOOTH_H5, tmp_path / "workers.h5", engine=engine, **OPTIONS)
    np.testing.assert_array_equal(distributed.restored, single.restored)  # bit for bit
    np.testing.assert_array_equal(_restored_volume(tmp_path / "workers.h5"), single.restored)
    first = _run_record(tmp_path / "workers.h5")["restored_on"]
    assert first["projections"] == f"read by the workers from {TOOTH_H5.absolute()}"
    assert first["chunks_run"] == first["total_chunks"] == 6  # 181 projections in 32s
    assert len(first["workers"]) >= 1

    # run again on the same store: every chunk is already done, nothing is restored again
    again = run_tomo(TOOTH_H5, tmp_path / "again.h5", engine=engine, **OPTIONS)
    np.testing.assert_array_equal(again.restored, single.restored)
    second = _run_record(tmp_path / "again.h5")["restored_on"]
    assert (second["chunks_run"], second["chunks_skipped"]) == (0, 6)
    # and the volumes too: both slices of each were reconstructed once, by the first run
    volumes = _run_record(tmp_path / "again.h5")["reconstructed_on"]
    for which in ("raw", "restored"):
        assert (volumes[which]["chunks_run"], volumes[which]["chunks_skipped"]) == (0, 2)
    np.testing.assert_array_equal(again.raw, single.raw)


def test_workers_and_scheduler_together_are_refused(tmp_path, capsys):
    argv = ["tomo", str(TOOTH_H5), "-o", str(tmp_path / "out.h5"), "--workers", "2"]
    with pytest.raises(ValueError, match="not both"):
        _run_cli([*argv, "--scheduler", "tcp://127.0.0.1:1"])
    assert not (tmp_path / "out.h5").exists()


# -- the workers read and flat/dark-correct the projections from the file ---------------------

SMALL = {"method": "richardson_lucy", "psf_fwhm_px": 2.0}


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory) -> dict[str, Path]:
    """A simulated scan (25 angles, 4 x 24 px, one dead pixel) as Data Exchange and as NXtomo.

    The NXtomo file interleaves the frames (flats, projections, a flat, projections, darks),
    so the workers read the projections by index, not as one slice; its counts are uint16.
    """
    folder = tmp_path_factory.mktemp("scans")
    data = simulate_tomo(
        shape=(4, 24),
        n_angles=25,
        theta_range_deg=(0.0, 187.5),
        psf_fwhm_um=20.0,
        n_flats=3,
        n_darks=2,
        rng=7,
    )
    projections = data.data.copy()
    projections[:, 1, 5] = 0.0  # a dead pixel: clipped in every projection
    exchange = write_exchange(
        folder / "scan.h5",
        data=projections,
        white=data.data_white,
        dark=data.data_dark,
        theta=data.theta_deg,
    )
    frames = np.concatenate(
        [
            data.data_white[:2],
            projections[:12],
            data.data_white[2:],
            projections[12:],
            data.data_dark,
        ]
    )
    keys = np.array([1] * 2 + [0] * 12 + [1] + [0] * 13 + [2] * 2)
    angles = np.concatenate([[0.0] * 2, data.theta_deg[:12], [0.0], data.theta_deg[12:], [0.0] * 2])
    nxtomo = write_nxtomo(folder / "scan.nxs", frames, keys, angles)
    return {"exchange": exchange, "nxtomo": nxtomo}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real ``dask scheduler`` with 2 ``dask worker`` processes on 127.0.0.1."""
    with dask_cluster(tmp_path_factory.mktemp("dask"), n_workers=2) as running:
        yield running


def _scan_notes(path) -> dict:
    with h5py.File(path, "r") as handle:
        return json.loads(handle["entry/process/scan/data"][()])


@pytest.mark.parametrize("layout", ["exchange", "nxtomo"])
def test_workers_read_the_file_and_match_one_process_bit_for_bit(
    small_scan, cluster, tmp_path, layout
):
    scan = small_scan[layout]
    single = run_tomo(scan, tmp_path / "single.h5", **SMALL)
    engine = StackEngine(
        store=tmp_path / "projections.zarr", scheduler=cluster.address, rows_per_task=3
    )
    workers = run_tomo(scan, tmp_path / "workers.h5", engine=engine, block_projections=8, **SMALL)

    np.testing.assert_array_equal(workers.restored, single.restored)  # bit for bit
    np.testing.assert_array_equal(workers.raw, single.raw)
    record = _run_record(tmp_path / "workers.h5")["restored_on"]
    assert record["projections"] == f"read by the workers from {scan.absolute()}"
    assert record["chunks_run"] == record["total_chunks"] == 4  # 25 projections in 8s
    # the dead pixel is counted by the client's own correction: the caution is unchanged
    assert _scan_notes(tmp_path / "workers.h5")["clipped_pixels"] == 25
    assert workers.cautions == single.cautions
    assert any("25 pixel(s)" in note for note in workers.cautions)
    source = ChunkStore.read_provenance(tmp_path / "projections.zarr")["source"]
    assert source["kind"] == "hdf5, flat/dark-corrected in the worker"
    assert source["path"] == str(scan.absolute())
    # the slices too, 3 detector rows a task (4 rows: 2 chunks), raw from the file
    volumes = _run_record(tmp_path / "workers.h5")["reconstructed_on"]
    assert volumes["raw"]["sinograms"] == f"read by the workers from {scan.absolute()}"
    stored = tmp_path / "projections.zarr"
    assert volumes["restored"]["sinograms"] == f"read by the workers from {stored}"
    assert [volumes[which]["chunks_run"] for which in ("raw", "restored")] == [2, 2]
    assert (tmp_path / "projections.raw_volume.zarr").is_dir()


def test_inside_a_data_root_the_client_sends_the_stack(small_scan, cluster, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "scan.h5").write_bytes(small_scan["exchange"].read_bytes())
    single = run_tomo(small_scan["exchange"], tmp_path / "single.h5", **SMALL)
    engine = StackEngine(store=tmp_path / "projections.zarr", scheduler=cluster.address)
    inside = run_tomo(
        "scan.h5",
        "out.h5",
        engine=engine,
        data_root=DataRoot(root),
        block_projections=8,
        **SMALL,
    )
    np.testing.assert_array_equal(inside.restored, single.restored)
    np.testing.assert_array_equal(inside.raw, single.raw)
    record = _run_record(root / "out.h5")
    assert record["restored_on"]["projections"] == SENT_FROM_CLIENT
    assert "data root" in record["restored_on"]["projections_why"]
    assert record["reconstructed_on"]["raw"]["sinograms"] == SENT_FROM_CLIENT


def test_rows_per_task_must_be_a_whole_number():
    with pytest.raises(ValueError, match="rows_per_task"):
        StackEngine(store="x.zarr", rows_per_task=0)


def _planned_source(path: Path) -> CorrectedProjectionSource:
    """The source as run_tomo builds it, with the stamp of the file as read now."""
    with path.open("rb") as stream:
        scan = read_scan(stream, name=str(path))
        layout = projection_layout(stream, scan.metadata, scan.projections.shape[0])
        info = os.fstat(stream.fileno())
    flat, dark = median_references(scan.flats, scan.darks)
    return CorrectedProjectionSource(path, layout, flat, dark, (info.st_size, info.st_mtime_ns))


def _grow_projections(path: Path) -> None:
    """Rewrite the file with two more projections (same flats and darks)."""
    with h5py.File(path, "r") as handle:
        arrays = {name: handle[f"exchange/{name}"][...] for name in handle["exchange"]}
    write_exchange(
        path,
        data=np.concatenate([arrays["data"], arrays["data"][:2]]),
        white=arrays["data_white"],
        dark=arrays["data_dark"],
        theta=np.linspace(0.0, 180.0, arrays["data"].shape[0] + 2),
    )


def test_a_file_changed_after_planning_is_one_clear_error(small_scan, cluster, tmp_path):
    path = tmp_path / "scan.h5"
    path.write_bytes(small_scan["exchange"].read_bytes())
    source = _planned_source(path)
    scan = read_scan(path)
    expected = flat_dark_correct(scan.projections, scan.flats, scan.darks).values
    np.testing.assert_array_equal(source.slab(3, 11).read(), expected[3:11])  # as planned

    _grow_projections(path)
    with pytest.raises(StackError, match="changed after the client read it"):
        source.slab(0, 8).read()  # the size and mtime differ
    unstamped = CorrectedProjectionSource(path, source.layout, source.flat, source.dark)
    with pytest.raises(StackError, match=r"\(27, 4, 24\), expected float32 \(25, 4, 24\)"):
        unstamped.slab(0, 8).read()  # the shape check, even where the stamp is not kept

    # through the workers: one StackError for the run, no chunk marked done
    store = tmp_path / "projections.zarr"
    with pytest.raises(StackError, match="changed after the client read it"):
        process_stack(
            restore_transmission_chunk,
            source,
            store,
            chunk_len=8,
            function_kwargs={"method": "none", "psf_fwhm_px": None, "params": {}},
            scheduler=cluster.address,
            retries=0,
        )
    assert not list((store / ".asirp_done").glob("*.json"))

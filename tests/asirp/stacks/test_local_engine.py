"""The stack engine in one process: results, provenance, resume, bad inputs, HDF5 sources."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from asirp.stacks import (
    ArraySource,
    ChunkStore,
    StackError,
    StackSource,
    process_stack,
    process_stack_local,
    restore_chunk,
)
from asirp.threads import available_cores, fixed_threads
from tests.asirp.stacks.stack_helpers import (
    RESTORE_KWARGS,
    cropped_chunk,
    float64_chunk,
    gram_chunk,
    make_stack,
    nan_chunk,
    scale_chunk,
)


def test_local_engine_equals_a_loop_over_the_function(tmp_path):
    stack = make_stack()
    seen = []
    report = process_stack_local(
        restore_chunk,
        ArraySource(stack),
        tmp_path / "out.zarr",
        chunk_len=5,  # 5 + 5 + 2: the last chunk is shorter
        function_kwargs=RESTORE_KWARGS,
        progress=lambda done, total: seen.append((done, total)),
    )
    with fixed_threads(1):
        expected = np.concatenate(
            [restore_chunk(stack[start : start + 5], **RESTORE_KWARGS) for start in (0, 5, 10)]
        )
    result = ChunkStore(tmp_path / "out.zarr", stack.shape, 5).read()
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)
    assert not np.array_equal(result, stack)  # the function really ran
    assert (report.total_chunks, report.chunks_run, report.chunks_skipped) == (3, 3, 0)
    assert sorted(report.durations_s) == [0, 1, 2]
    assert report.workers == ["local"]
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_store_holds_provenance_and_chunk_markers(tmp_path):
    stack = make_stack(n=6)
    output = tmp_path / "out.zarr"
    process_stack_local(
        scale_chunk, ArraySource(stack), output, chunk_len=3, function_kwargs={"factor": 2.0}
    )
    provenance = ChunkStore.read_provenance(output)
    identity = provenance["identity"]
    assert identity["function"] == "tests.asirp.stacks.stack_helpers.scale_chunk"
    assert identity["function_kwargs"] == {"factor": 2.0}
    assert identity["shape"] == [6, 32, 48]
    assert identity["chunk_len"] == 3
    assert len(identity["source"]["sha256"]) == 64
    assert {"asirp", "zarr", "dask", "numpy"} <= set(provenance["versions"])
    import zarr

    assert zarr.open_array(output, mode="r").chunks == (3, 32, 48)  # whole chunks per task
    from asirp.provenance import array_sha256

    marker = json.loads((output / ".asirp_done" / "1.json").read_text())
    assert marker["chunk"] == 1
    assert (marker["start"], marker["stop"]) == (3, 6)
    assert marker["sha256"] == array_sha256(stack[3:6] * np.float32(2))
    assert marker["duration_s"] >= 0


def test_resume_runs_only_chunks_without_marker(tmp_path):
    stack = make_stack(n=9)
    output = tmp_path / "out.zarr"
    arguments = {"chunk_len": 3, "function_kwargs": {"factor": 3.0}}
    process_stack_local(scale_chunk, ArraySource(stack), output, **arguments)
    (output / ".asirp_done" / "1.json").unlink()  # as if the run had died before chunk 1's marker
    kept = (output / ".asirp_done" / "0.json").stat().st_mtime_ns
    report = process_stack_local(scale_chunk, ArraySource(stack), output, **arguments)
    assert (report.chunks_run, report.chunks_skipped) == (1, 2)
    assert list(report.durations_s) == [1]
    assert (output / ".asirp_done" / "0.json").stat().st_mtime_ns == kept
    np.testing.assert_array_equal(ChunkStore(output, stack.shape, 3).read(), stack * 3)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (nan_chunk, "chunk 0 (images 0 to 2): the function returned NaN or infinite values"),
        (cropped_chunk, "chunk 0 (images 0 to 2): the function returned shape (3, 32, 47)"),
        (float64_chunk, "chunk 0 (images 0 to 2): the function returned float64, not float32"),
    ],
)
def test_a_bad_chunk_result_is_one_clear_error_and_leaves_no_marker(tmp_path, function, message):
    output = tmp_path / "out.zarr"
    with pytest.raises(StackError) as caught:
        process_stack_local(function, ArraySource(make_stack(n=6)), output, chunk_len=3)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    assert ChunkStore(output, (6, 32, 48), 3).done_chunks() == set()


def test_existing_store_needs_overwrite_and_matching_parameters(tmp_path):
    stack = make_stack(n=6)
    output = tmp_path / "out.zarr"
    process_stack_local(
        scale_chunk, ArraySource(stack), output, chunk_len=3, function_kwargs={"factor": 2.0}
    )
    with pytest.raises(StackError, match=r"exists; pass overwrite=True"):
        process_stack_local(
            scale_chunk,
            ArraySource(stack),
            output,
            chunk_len=3,
            function_kwargs={"factor": 2.0},
            resume=False,
        )
    with pytest.raises(StackError, match=r"other parameters \(differs in function_kwargs\)"):
        process_stack_local(
            scale_chunk, ArraySource(stack), output, chunk_len=3, function_kwargs={"factor": 5.0}
        )
    with pytest.raises(StackError, match=r"differs in chunk_len, source"):
        process_stack_local(
            scale_chunk, ArraySource(stack + 1), output, chunk_len=2, function_kwargs={"factor": 2}
        )
    # the refused calls changed nothing; overwrite replaces the store
    np.testing.assert_array_equal(ChunkStore(output, stack.shape, 3).read(), stack * 2)
    report = process_stack_local(
        scale_chunk,
        ArraySource(stack),
        output,
        chunk_len=2,
        function_kwargs={"factor": 5.0},
        overwrite=True,
    )
    assert (report.chunks_run, report.chunks_skipped) == (3, 0)
    np.testing.assert_array_equal(ChunkStore(output, stack.shape, 2).read(), stack * 5)


def test_a_folder_that_is_not_a_store_is_never_replaced(tmp_path):
    output = tmp_path / "out.zarr"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    with pytest.raises(StackError, match="is not an ASIRP stack store"):
        process_stack_local(
            scale_chunk,
            ArraySource(make_stack(n=3)),
            output,
            chunk_len=3,
            function_kwargs={"factor": 1.0},
            overwrite=True,
        )
    assert (output / "notes.txt").read_text() == "keep me"


def test_bad_arguments_are_clear_errors(tmp_path):
    source = ArraySource(make_stack(n=3))
    with pytest.raises(StackError, match="plain function defined at module level"):
        process_stack_local(lambda block: block, source, tmp_path / "a.zarr", chunk_len=1)
    with pytest.raises(StackError, match="chunk_len must be a positive whole number"):
        process_stack_local(scale_chunk, source, tmp_path / "b.zarr", chunk_len=0)
    with pytest.raises(StackError, match="function_kwargs must be JSON values"):
        process_stack_local(
            scale_chunk, source, tmp_path / "c.zarr", chunk_len=1, function_kwargs={"f": object()}
        )
    with pytest.raises(StackError, match="3 positive sizes"):
        ArraySource(np.zeros((4, 5)))
    assert not any(tmp_path.iterdir())  # nothing was created


def test_a_cluster_call_that_cannot_run_is_refused_before_the_store_is_made(tmp_path):
    source = ArraySource(make_stack(n=3))
    kwargs = {"chunk_len": 1, "function_kwargs": {"factor": 1.0}}
    cores = available_cores()
    with pytest.raises(StackError, match=f"exceed the {cores} cores of this machine"):
        process_stack(scale_chunk, source, tmp_path / "a.zarr", n_workers=cores + 1, **kwargs)
    with pytest.raises(StackError, match="scheduler must be an address tcp://HOST:PORT"):
        process_stack(scale_chunk, source, tmp_path / "b.zarr", scheduler="127.0.0.1", **kwargs)
    assert not any(tmp_path.iterdir())


def _write_stack(path, stack):
    with h5py.File(path, "w") as file:
        file["entry/data"] = stack


def test_hdf5_source_is_read_in_chunks_and_checked(tmp_path):
    stack = make_stack(n=6)
    _write_stack(tmp_path / "scan.h5", stack)
    source = StackSource(tmp_path / "scan.h5", "entry/data", stack.shape, stack.dtype)
    process_stack_local(
        scale_chunk, source, tmp_path / "out.zarr", chunk_len=4, function_kwargs={"factor": 2.0}
    )
    np.testing.assert_array_equal(
        ChunkStore(tmp_path / "out.zarr", stack.shape, 4).read(), 2 * stack
    )
    described = ChunkStore.read_provenance(tmp_path / "out.zarr")["source"]
    assert described["dataset"] == "entry/data"
    assert described["identity"]["size"] == os.path.getsize(tmp_path / "scan.h5")
    wrong = StackSource(tmp_path / "scan.h5", "entry/data", (7, 32, 48), stack.dtype)
    with pytest.raises(
        StackError, match=r"is float32 \(6, 32, 48\), expected float32 \(7, 32, 48\)"
    ):
        wrong.slab(0, 3).read()
    with pytest.raises(StackError, match="has no dataset 'entry/missing'"):
        StackSource(tmp_path / "scan.h5", "entry/missing", stack.shape, stack.dtype).slab(
            0, 1
        ).read()


def test_hdf5_links_outside_the_folder_are_refused(tmp_path):
    inside, outside = tmp_path / "scan", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    stack = make_stack(n=2)
    _write_stack(outside / "secret.h5", stack)
    _write_stack(inside / "neighbour.h5", stack)
    with h5py.File(inside / "scan.h5", "w") as file:
        file["far"] = h5py.ExternalLink("../elsewhere/secret.h5", "entry/data")
        file["near"] = h5py.ExternalLink("neighbour.h5", "entry/data")
        layout = h5py.VirtualLayout(shape=stack.shape, dtype=stack.dtype)
        layout[:] = h5py.VirtualSource(str(outside / "secret.h5"), "entry/data", stack.shape)
        file.create_virtual_dataset("virtual", layout)
    path = inside / "scan.h5"
    with pytest.raises(StackError, match="links to a file outside the input's folder"):
        StackSource(path, "far", stack.shape, stack.dtype).slab(0, 1).read()
    with pytest.raises(StackError, match="virtual dataset 'virtual' maps a file outside"):
        StackSource(path, "virtual", stack.shape, stack.dtype).slab(0, 1).read()
    near = StackSource(path, "near", stack.shape, stack.dtype).slab(0, 2).read()
    np.testing.assert_array_equal(near, stack)  # a link inside the folder is fine


def test_output_frame_gives_a_store_of_other_images(tmp_path):
    stack = make_stack(n=5, rows=6, columns=4)
    report = process_stack_local(
        gram_chunk, ArraySource(stack), tmp_path / "out.zarr", chunk_len=2, output_frame=(4, 4)
    )
    assert report.total_chunks == 3
    expected = np.stack([image.T @ image for image in stack])
    result = ChunkStore(tmp_path / "out.zarr", (5, 4, 4), 2).read()
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    identity = ChunkStore.read_provenance(tmp_path / "out.zarr")["identity"]
    assert identity["output_shape"] == [5, 4, 4]
    assert identity["shape"] == [5, 6, 4]

    # a function whose images are not the frame asked for is one clear error
    with pytest.raises(StackError, match=r"returned shape \(2, 6, 4\), not \(2, 4, 4\)"):
        process_stack_local(
            scale_chunk,
            ArraySource(stack),
            tmp_path / "wrong.zarr",
            chunk_len=2,
            function_kwargs={"factor": 2.0},
            output_frame=(4, 4),
        )
    with pytest.raises(StackError, match="output_frame must be 2 positive sizes"):
        process_stack_local(
            gram_chunk, ArraySource(stack), tmp_path / "bad.zarr", chunk_len=2, output_frame=(4,)
        )

"""The stack engine on real dask processes on 127.0.0.1: equal to the local run bit for bit,
through a worker's death and a client's death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from asirp.stacks import (
    ArraySource,
    ChunkStore,
    StackError,
    process_stack,
    process_stack_local,
    restore_chunk,
)
from asirp.stacks.cluster import SharedLocalCluster
from tests.asirp.stacks.stack_helpers import (
    RESTORE_KWARGS,
    SLOW_KWARGS,
    make_stack,
    nan_chunk,
    slow_restore_chunk,
)
from tests.dask_support import REPOSITORY, child_environment, dask_cluster, stop_process


def reference(tmp_path, stack, function, kwargs, chunk_len):
    """The output of :func:`process_stack_local` for the same job."""
    output = tmp_path / "reference.zarr"
    process_stack_local(
        function, ArraySource(stack), output, chunk_len=chunk_len, function_kwargs=kwargs
    )
    return ChunkStore(output, stack.shape, chunk_len).read()


def read(path, stack, chunk_len):
    return ChunkStore(path, stack.shape, chunk_len).read()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """Two workers for the tests that leave them alive (starting a cluster takes seconds)."""
    with dask_cluster(tmp_path_factory.mktemp("dask"), n_workers=2) as cluster:
        yield cluster


def test_two_real_workers_give_the_local_result_bit_for_bit(tmp_path, shared_cluster):
    stack = make_stack()
    expected = reference(tmp_path, stack, restore_chunk, RESTORE_KWARGS, 3)
    report = process_stack(
        restore_chunk,
        ArraySource(stack),
        tmp_path / "out.zarr",
        chunk_len=3,
        function_kwargs=RESTORE_KWARGS,
        scheduler=shared_cluster.address,
    )
    assert (report.chunks_run, report.chunks_skipped, report.total_chunks) == (4, 0, 4)
    assert all(worker.startswith("tcp://127.0.0.1:") for worker in report.workers)
    np.testing.assert_array_equal(read(tmp_path / "out.zarr", stack, 3), expected)


def test_a_failing_chunk_on_a_worker_is_one_clear_error(tmp_path, shared_cluster):
    with pytest.raises(StackError) as caught:
        process_stack(
            nan_chunk,
            ArraySource(make_stack(n=3)),
            tmp_path / "out.zarr",
            chunk_len=3,
            scheduler=shared_cluster.address,
            retries=0,
        )
    assert str(caught.value) == (
        "chunk 0 (images 0 to 2): the function returned NaN or infinite values"
    )


def test_a_killed_worker_s_chunks_are_rerun_elsewhere(tmp_path):
    stack = make_stack()
    expected = reference(tmp_path, stack, restore_chunk, RESTORE_KWARGS, 2)  # minus the pauses
    with dask_cluster(tmp_path, n_workers=2) as cluster:
        victim = cluster.workers[0]

        def kill_after_first_chunk(done: int, total: int) -> None:
            if done == 1:  # a marker exists and both workers hold chunks
                os.kill(victim.pid, signal.SIGKILL)

        report = process_stack(
            slow_restore_chunk,
            ArraySource(stack),
            tmp_path / "out.zarr",
            chunk_len=2,
            function_kwargs=SLOW_KWARGS,
            scheduler=cluster.address,
            progress=kill_after_first_chunk,
        )
        assert victim.wait(10) == -signal.SIGKILL
        assert cluster.workers[1].poll() is None
    assert report.chunks_run == 6
    np.testing.assert_array_equal(read(tmp_path / "out.zarr", stack, 2), expected)


CLIENT = """
import sys
from asirp.stacks import ArraySource, process_stack
from tests.asirp.stacks.stack_helpers import SLOW_KWARGS, make_stack, slow_restore_chunk
process_stack(slow_restore_chunk, ArraySource(make_stack()), sys.argv[2], chunk_len=1,
              function_kwargs=SLOW_KWARGS, scheduler=sys.argv[1])
"""


def _markers(output):
    folder = output / ".asirp_done"
    if not folder.is_dir():
        return {}
    return {path.name: path.stat().st_mtime_ns for path in folder.glob("*.json")}


def test_a_killed_client_s_job_resumes_with_the_missing_chunks_only(tmp_path, shared_cluster):
    stack = make_stack()
    expected = reference(tmp_path, stack, restore_chunk, RESTORE_KWARGS, 1)  # minus the pauses
    output = tmp_path / "out.zarr"
    cluster = shared_cluster
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, cluster.address, str(output)],
        cwd=REPOSITORY,
        env=child_environment(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_markers(output)) < 2 and client.poll() is None:
            assert time.monotonic() < deadline, "no chunk finished in 60 s"
            time.sleep(0.02)
        os.kill(client.pid, signal.SIGKILL)
    finally:
        stop_process(client)
    # chunks already on a worker when the client died still finish: wait until none moves
    before, stable_since = _markers(output), time.monotonic()
    while time.monotonic() - stable_since < 1.5:
        time.sleep(0.1)
        now = _markers(output)
        if now != before:
            before, stable_since = now, time.monotonic()
    assert 2 <= len(before) < 12, "the client was not killed mid-run"
    report = process_stack(
        slow_restore_chunk,
        ArraySource(stack),
        output,
        chunk_len=1,
        function_kwargs=SLOW_KWARGS,
        scheduler=cluster.address,
    )
    assert report.chunks_skipped == len(before)
    assert report.chunks_run == 12 - len(before)
    assert sorted(report.durations_s) == sorted(
        index for index in range(12) if f"{index}.json" not in before
    )
    after = _markers(output)
    assert {name: after[name] for name in before} == before  # old markers never rewritten
    np.testing.assert_array_equal(read(output, stack, 1), expected)


def test_a_local_cluster_gives_the_local_result(tmp_path):
    stack = make_stack(n=6)
    expected = reference(tmp_path, stack, restore_chunk, RESTORE_KWARGS, 3)
    seen = []
    report = process_stack(
        restore_chunk,
        ArraySource(stack),
        tmp_path / "out.zarr",
        chunk_len=3,
        function_kwargs=RESTORE_KWARGS,
        n_workers=1,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.chunks_run == 2
    assert seen == [(0, 2), (1, 2), (2, 2)]
    np.testing.assert_array_equal(read(tmp_path / "out.zarr", stack, 3), expected)


def test_a_shared_local_cluster_starts_only_when_there_is_work(tmp_path):
    stack = make_stack(n=4)
    expected = reference(tmp_path, stack, restore_chunk, RESTORE_KWARGS, 2)
    with SharedLocalCluster(n_workers=1) as cluster:
        # a job whose chunks are all done: nothing to run, so no cluster is started
        resumed = process_stack(
            restore_chunk,
            ArraySource(stack),
            tmp_path / "reference.zarr",
            chunk_len=2,
            function_kwargs=RESTORE_KWARGS,
            scheduler=cluster.address,
        )
        assert (resumed.chunks_run, resumed.chunks_skipped) == (0, 2)
        assert not cluster.started
        first = process_stack(
            restore_chunk,
            ArraySource(stack),
            tmp_path / "first.zarr",
            chunk_len=2,
            function_kwargs=RESTORE_KWARGS,
            scheduler=cluster.address,
        )
        address = cluster.address()
        second = process_stack(
            restore_chunk,
            ArraySource(stack[::-1].copy()),
            tmp_path / "second.zarr",
            chunk_len=2,
            function_kwargs=RESTORE_KWARGS,
            scheduler=cluster.address,
        )
        assert cluster.address() == address  # one cluster served both jobs
        assert first.chunks_run == second.chunks_run == 2
    assert not cluster.started  # closed with the block
    np.testing.assert_array_equal(read(tmp_path / "first.zarr", stack, 2), expected)
    np.testing.assert_array_equal(read(tmp_path / "second.zarr", stack, 2), expected[::-1])

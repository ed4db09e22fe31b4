"""The thread budget: one limit for torch, numba and BLAS, cut when other work holds the cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from asirp import threads
from asirp.psf import gaussian_psf

_CHILD = """
import json, os
import numpy as np
import asirp, numba, torch
from threadpoolctl import threadpool_info
from asirp.psf import gaussian_psf
image = np.random.default_rng(0).poisson(50.0, (64, 64)).astype(np.float32)
asirp.restore(image, "richardson_lucy", psf=gaussian_psf(2.0), iterations=3, stop="fixed")
print(json.dumps({
    "torch": torch.get_num_threads(),
    "numba": numba.get_num_threads(),
    "blas": sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}),
    "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
}))
"""


def _child(environment: dict[str, str]) -> dict:
    env = {key: value for key, value in os.environ.items() if key != threads.THREADS_VARIABLE}
    env.pop("OMP_WAIT_POLICY", None)
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_budget_of_one_thread_holds_for_every_pool():
    facts = _child({threads.THREADS_VARIABLE: "1"})
    assert facts["torch"] == 1
    assert facts["numba"] == 1
    assert facts["blas"] == [1]
    assert facts["wait_policy"] is None  # set only while the kernels' pool starts


def test_wait_policy_set_by_the_user_is_kept():
    facts = _child({"OMP_WAIT_POLICY": "ACTIVE", threads.THREADS_VARIABLE: "1"})
    assert facts["wait_policy"] == "ACTIVE"


def test_kernel_pool_wait_policy_is_set_for_the_block_only(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with threads.kernel_pool_wait_policy():
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with threads.kernel_pool_wait_policy():
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "5000"])
def test_bad_budget_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv(threads.THREADS_VARIABLE, value)
    with pytest.raises(ValueError, match=threads.THREADS_VARIABLE):
        threads.thread_budget()


def test_default_budget_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv(threads.THREADS_VARIABLE, raising=False)
    assert threads.thread_budget() == threads.available_cores()
    assert 1 <= threads.available_cores() <= (os.cpu_count() or 1)


@pytest.fixture
def budget_of_two(monkeypatch):
    """A budget of 2 threads; torch's count and the budget put back afterwards."""
    previous = torch.get_num_threads()
    threads.apply_thread_budget(2)
    yield
    torch.set_num_threads(previous)
    monkeypatch.delenv(threads.THREADS_VARIABLE, raising=False)
    threads.apply_thread_budget(previous)
    os.environ.pop(threads.THREADS_VARIABLE, None)


def test_compute_threads_leaves_the_cores_other_work_holds(monkeypatch, budget_of_two):
    cpus = os.cpu_count() or 1
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_read_runnable", lambda: 1)  # only the caller runs
    with threads.compute_threads() as count:
        assert count == min(2, cpus, before)
    monkeypatch.setattr(threads, "_read_runnable", lambda: 1 + cpus)  # every core is busy
    with threads.compute_threads() as count:
        assert count == 1
        assert torch.get_num_threads() == 1
        assert threads.kernel_threads() == 1
    assert torch.get_num_threads() == before  # put back
    monkeypatch.setattr(threads, "_read_runnable", lambda: None)  # no /proc: the budget
    with threads.compute_threads() as count:
        assert count == min(2, before)


def test_a_callers_own_lower_count_is_respected(monkeypatch, budget_of_two):
    import asirp

    monkeypatch.setattr(threads, "_read_runnable", lambda: 1)
    torch.set_num_threads(1)  # the caller's choice, after the budget was applied
    with threads.compute_threads() as count:
        assert count == 1
    image = np.random.default_rng(1).poisson(40.0, (48, 48)).astype(np.float32)
    asirp.restore(image, "richardson_lucy", psf=gaussian_psf(1.5), iterations=2, stop="fixed")
    assert torch.get_num_threads() == 1


def test_runnable_count_is_read_from_proc():
    count = threads.other_runnable_threads()
    if sys.platform.startswith("linux"):
        assert isinstance(count, int)
        assert count >= 0
    else:
        assert count is None


def test_own_idle_workers_do_not_count_as_other_work(monkeypatch):
    monkeypatch.setattr(threads, "_read_runnable", lambda: 3)  # the caller and two more
    monkeypatch.setattr(threads, "_own_runnable_threads", lambda: 2)  # both of this process
    assert threads.other_runnable_threads() == 0
    monkeypatch.setattr(threads, "_own_runnable_threads", lambda: 0)  # another process's
    assert threads.other_runnable_threads() == 2


def test_own_runnable_threads_sees_a_busy_thread_of_this_process():
    import threading

    release = threading.Event()
    matrix = np.random.default_rng(2).normal(size=(200, 200))

    def busy() -> None:
        while not release.is_set():
            matrix @ matrix  # BLAS, without the GIL: the thread stays runnable

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        seen = max(threads._own_runnable_threads() for _ in range(200))
    finally:
        release.set()
        worker.join()
    if sys.platform.startswith("linux"):
        assert seen >= 1

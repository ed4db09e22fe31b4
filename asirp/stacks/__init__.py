"""Projection stacks processed chunk by chunk, on dask.distributed or in this process.

A stack ``(n, R, C)`` is cut along axis 0 into chunks of ``chunk_len`` images; one task per
chunk reads it from a :mod:`~asirp.stacks.source`, applies a plain picklable function and
writes the result into a chunked zarr store (:mod:`~asirp.stacks.store`), whole chunks only,
with a marker per finished chunk so an interrupted run resumes where it stopped
(:mod:`~asirp.stacks.engine`). dask and distributed are imported only when a distributed run
starts, so ``import asirp`` stays light. See ``docs/DISTRIBUTED.md``.
"""

from __future__ import annotations

from asirp.stacks.chunks import restore_chunk
from asirp.stacks.cluster import SharedLocalCluster
from asirp.stacks.engine import StackReport, process_stack, process_stack_local
from asirp.stacks.errors import StackError
from asirp.stacks.source import ArraySource, StackSource
from asirp.stacks.store import ChunkStore

__all__ = [
    "ArraySource",
    "ChunkStore",
    "SharedLocalCluster",
    "StackError",
    "StackReport",
    "StackSource",
    "process_stack",
    "process_stack_local",
    "restore_chunk",
]

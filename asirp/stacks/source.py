"""Chunked inputs described without opening them in the client.

A source knows the stack's shape ``(n, R, C)`` and dtype and hands out a :class:`Slab` per
chunk: a small picklable object that a worker reads (:meth:`Slab.read`). An HDF5 slab opens
the file read-only *in the worker*, checks the dataset against the shape and dtype the client
was given, and reads only its rows; an in-memory slab carries its own rows (for tests and
small stacks, so a task never ships the whole stack).

HDF5 safety: the dataset must be a plain dataset of the file. An external link, a virtual
dataset or external raw storage whose files lie outside the file's folder is refused before
anything is read (a crafted file could otherwise make a worker read any file it can open).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from asirp.stacks.errors import StackError

HEAD_BYTES = 1 << 20
"""Bytes of an input file hashed for its fingerprint (the first MiB: headers and first rows)."""

MAX_CHUNK_BYTES = 1 << 33
"""Largest chunk a worker reads (8 GiB): a wrong shape must not make it allocate without end."""


class Slab(Protocol):
    """The rows ``start:stop`` of a source, read where the task runs."""

    start: int
    stop: int

    def read(self) -> np.ndarray:
        """The rows, ``(stop - start, R, C)``."""
        ...


class Source(Protocol):
    """What :func:`asirp.stacks.process_stack` needs of an input."""

    shape: tuple[int, int, int]
    dtype: str

    def slab(self, start: int, stop: int) -> Slab:
        """The rows ``start:stop`` (not read yet)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON provenance of the input; its ``"identity"`` entry must match on resume."""
        ...


def _check_stack_shape(shape: Any) -> tuple[int, int, int]:
    try:
        values = tuple(int(size) for size in shape)
    except (TypeError, ValueError):
        raise StackError(f"a stack shape must be 3 whole numbers, got {shape!r}") from None
    if len(values) != 3 or min(values) < 1:
        raise StackError(f"a stack shape must be 3 positive sizes (n, R, C), got {shape!r}")
    return values  # type: ignore[return-value]


def _check_dtype(dtype: Any) -> str:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise StackError(f"not a numeric dtype: {dtype!r}") from None
    if resolved.kind not in "biuf":
        raise StackError(f"a stack must hold real numbers, got dtype {resolved}")
    return resolved.str


@dataclass(frozen=True)
class ArraySlab:
    """Rows of an in-memory stack, carried with the task."""

    start: int
    stop: int
    rows: np.ndarray

    def read(self) -> np.ndarray:
        """The rows, ``(stop - start, R, C)``."""
        return self.rows


class ArraySource:
    """An in-memory stack ``(n, R, C)``.

    Parameters
    ----------
    array : numpy.ndarray
        The stack; not copied (do not change it during a run).
    """

    def __init__(self, array: np.ndarray) -> None:
        values = np.asarray(array)
        self.shape = _check_stack_shape(values.shape)
        self.dtype = _check_dtype(values.dtype)
        self.array = values

    def slab(self, start: int, stop: int) -> ArraySlab:
        """The rows ``start:stop``, copied so a task carries only them."""
        return ArraySlab(start, stop, np.ascontiguousarray(self.array[start:stop]))

    def describe(self) -> dict[str, Any]:
        """Provenance: the array's sha256 (:func:`asirp.provenance.array_sha256`)."""
        from asirp.provenance import array_sha256

        return {"kind": "array", "identity": {"sha256": array_sha256(self.array)}}


def _inside(folder: Path, name: str) -> bool:
    """Whether the file ``name`` (as an HDF5 link or mapping gives it) lies in ``folder``."""
    if name in ("", "."):  # the same file
        return True
    target = (folder / name).resolve()
    return target == folder or folder in target.parents


def _check_dataset(file: Any, folder: Path, dataset: str) -> Any:
    """The dataset ``dataset`` of an open h5py file, refused when it reaches outside ``folder``."""
    import h5py

    node = file
    parts = [part for part in dataset.split("/") if part]
    if not parts:
        raise StackError("the dataset path is empty")
    for part in parts:
        link = node.get(part, getlink=True)
        if link is None:
            raise StackError(f"the input has no dataset {dataset!r}")
        if isinstance(link, h5py.ExternalLink) and not _inside(folder, link.filename):
            raise StackError(f"dataset {dataset!r} links to a file outside the input's folder")
        node = node[part]
    if not isinstance(node, h5py.Dataset):
        raise StackError(f"{dataset!r} is not a dataset")
    if node.is_virtual:
        for source in node.virtual_sources():
            if not _inside(folder, source.file_name):
                raise StackError(f"virtual dataset {dataset!r} maps a file outside its folder")
    for name, _offset, _size in node.external or ():
        if not _inside(folder, os.fsdecode(name)):
            raise StackError(f"dataset {dataset!r} stores data in a file outside its folder")
    return node


@dataclass(frozen=True)
class HDF5Slab:
    """Rows of an HDF5 dataset, read in the worker."""

    path: str
    dataset: str
    shape: tuple[int, int, int]
    dtype: str
    start: int
    stop: int

    def read(self) -> np.ndarray:
        """Open the file read-only, check the dataset, read the rows ``(stop - start, R, C)``.

        Raises
        ------
        StackError
            When the file or dataset is missing, reaches outside its folder, or has another
            shape or dtype than the client was told.
        """
        import h5py

        path = Path(self.path)
        rows = self.stop - self.start
        need = rows * self.shape[1] * self.shape[2] * np.dtype(self.dtype).itemsize
        if need > MAX_CHUNK_BYTES:
            raise StackError(f"a chunk of {need} bytes is larger than {MAX_CHUNK_BYTES} bytes")
        try:
            with h5py.File(path, "r") as file:
                node = _check_dataset(file, path.resolve().parent, self.dataset)
                if tuple(node.shape) != self.shape or node.dtype.str != self.dtype:
                    raise StackError(
                        f"dataset {self.dataset!r} is {node.dtype} {tuple(node.shape)}, "
                        f"expected {np.dtype(self.dtype)} {self.shape}"
                    )
                return np.asarray(node[self.start : self.stop])
        except OSError as error:
            raise StackError(f"cannot read {path.name}: {error}") from None


class StackSource:
    """A stack held in an HDF5 dataset, described without opening the file here.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file, as the workers see it (a shared file system on a cluster).
    dataset : str
        The dataset inside it, ``(n, R, C)``.
    shape : (int, int, int)
        Its shape (checked in the worker before each read).
    dtype : numpy dtype-like
        Its dtype (checked likewise).
    """

    def __init__(self, path: str | os.PathLike, dataset: str, shape: Any, dtype: Any) -> None:
        self.path = str(Path(path).absolute())
        self.dataset = str(dataset)
        self.shape = _check_stack_shape(shape)
        self.dtype = _check_dtype(dtype)

    def slab(self, start: int, stop: int) -> HDF5Slab:
        """The rows ``start:stop`` (read in the worker)."""
        return HDF5Slab(self.path, self.dataset, self.shape, self.dtype, start, stop)

    def describe(self) -> dict[str, Any]:
        """Provenance: path, dataset, size and mtime, sha256 of the first :data:`HEAD_BYTES`.

        Only the size and the hash identify the input on resume (a copied file keeps them, not
        its mtime).
        """
        try:
            with open(self.path, "rb") as file:
                info = os.fstat(file.fileno())
                head = hashlib.sha256(file.read(HEAD_BYTES)).hexdigest()
        except OSError as error:
            raise StackError(f"cannot read {Path(self.path).name}: {error.strerror}") from None
        return {
            "kind": "hdf5",
            "path": self.path,
            "dataset": self.dataset,
            "mtime_ns": info.st_mtime_ns,
            "identity": {"dataset": self.dataset, "size": info.st_size, "head_sha256": head},
        }

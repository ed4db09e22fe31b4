"""The output store: a zarr v3 array written whole chunk by whole chunk, with done markers.

Layout of ``OUTPUT.zarr``::

    zarr.json                     the array's metadata; attrs["asirp_stack"] = provenance
    c/...                         chunk files (zarr's own layout)
    .asirp_done/CHUNKINDEX.json   one marker per finished chunk

The array's chunks are ``(chunk_len, R, C)``: a task owns whole chunks, so tasks in several
processes never write the same chunk file (zarr's local store writes each chunk file through
a temporary file, so a reader never sees half a chunk; a partial-chunk write from two
processes would lose one of them). A chunk counts as done only when its marker exists, and
the marker (the chunk's sha256 and the task's duration) is written atomically *after* the
data: a task killed between the two leaves no marker and its chunk is simply rerun.

A store remembers what made it (``attrs["asirp_stack"]["identity"]``: the function, its
keywords, shapes, dtypes, chunk length and the input's identity); a resume into a store made
otherwise is refused, and an existing store is replaced only with ``overwrite=True`` and only
when it is such a store (never a folder that is something else).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from asirp.stacks.errors import StackError

ATTRS_KEY = "asirp_stack"
"""The zarr attribute holding the store's provenance."""

MARKERS = ".asirp_done"
"""Folder of the done markers inside the store."""


def _zarr_store(path: Path) -> Any:
    from zarr.storage import LocalStore

    return LocalStore(path)


def chunk_bounds(n: int, chunk_len: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of ``n`` images cut ``chunk_len`` at a time."""
    return [(start, min(start + chunk_len, n)) for start in range(0, n, chunk_len)]


class ChunkStore:
    """An output store (see the module notes); picklable, so tasks write through it.

    Parameters
    ----------
    path : str or os.PathLike
        The store's folder, ``OUTPUT.zarr``.
    shape : (int, int, int)
        The output's shape ``(n, R, C)``.
    chunk_len : int
        Images per chunk.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], chunk_len: int):
        self.path = Path(path).absolute()
        self.shape = tuple(shape)
        self.chunk_len = int(chunk_len)

    # -- making or reopening ------------------------------------------------------------------

    @staticmethod
    def read_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
        """The provenance of the ASIRP store at ``path``; None when it is no such store."""
        try:
            metadata = json.loads((Path(path) / "zarr.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(metadata, dict):
            return None
        value = (metadata.get("attributes") or {}).get(ATTRS_KEY)
        return value if isinstance(value, dict) else None

    @classmethod
    def prepare(
        cls,
        path: str | os.PathLike,
        *,
        shape: tuple[int, int, int],
        dtype: str,
        chunk_len: int,
        identity: dict[str, Any],
        provenance: dict[str, Any],
        resume: bool = True,
        overwrite: bool = False,
    ) -> ChunkStore:
        """Create the store, or reopen a matching one to resume it.

        Parameters
        ----------
        path : str or os.PathLike
            ``OUTPUT.zarr``.
        shape, dtype, chunk_len
            The output array.
        identity : dict
            What must match for a resume (JSON-safe).
        provenance : dict
            More JSON-safe provenance stored beside it (versions, source details).
        resume : bool
            Reopen an existing store made with the same ``identity``.
        overwrite : bool
            Replace an existing ASIRP store (with another identity, or when not resuming).

        Raises
        ------
        StackError
            Store exists without ``overwrite`` (and cannot be resumed), was made with other
            parameters, is not an ASIRP store, or the path is a link or a file.
        """
        target = Path(path).absolute()
        if target.is_symlink():
            raise StackError(f"the output {target.name} is a symbolic link; give a real folder")
        if target.exists():
            if not target.is_dir():
                raise StackError(f"the output {target.name} exists and is not a folder")
            existing = cls.read_provenance(target)
            empty = not any(target.iterdir())
            if existing is None and not empty:
                raise StackError(
                    f"the output {target.name} exists and is not an ASIRP stack store; "
                    "choose another path"
                )
            if existing is not None:
                same = existing.get("identity") == json.loads(json.dumps(identity))
                if resume and same:
                    return cls(target, shape, chunk_len)
                if not overwrite:
                    if resume:
                        raise StackError(
                            f"the output {target.name} was made with other parameters "
                            f"({_difference(existing.get('identity'), identity)}); "
                            "pass overwrite=True to replace it or choose another path"
                        )
                    raise StackError(
                        f"the output {target.name} exists; pass overwrite=True to replace it"
                    )
                shutil.rmtree(target)
        import zarr

        is_float = np.dtype(dtype).kind == "f"
        zarr.create_array(
            _zarr_store(target),
            shape=shape,
            dtype=np.dtype(dtype),
            chunks=(chunk_len, shape[1], shape[2]),
            fill_value=np.nan if is_float else 0,  # an unwritten float chunk reads as NaN
            attributes={ATTRS_KEY: {**provenance, "identity": identity}},
            overwrite=False,
        )
        (target / MARKERS).mkdir()
        return cls(target, shape, chunk_len)

    # -- chunks -------------------------------------------------------------------------------

    def bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every chunk."""
        return chunk_bounds(self.shape[0], self.chunk_len)

    def marker_path(self, index: int) -> Path:
        """The done marker of chunk ``index``."""
        return self.path / MARKERS / f"{int(index)}.json"

    def done_chunks(self) -> set[int]:
        """Indices of the chunks whose marker exists and names them."""
        done = set()
        for index in range(len(self.bounds())):
            try:
                marker = json.loads(self.marker_path(index).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(marker, dict) and marker.get("chunk") == index:
                done.add(index)
        return done

    def write_chunk(self, index: int, data: np.ndarray, duration_s: float) -> str:
        """Write chunk ``index`` (whole), then its marker; return the chunk's sha256.

        Parameters
        ----------
        index : int
            The chunk's index along axis 0.
        data : numpy.ndarray
            Its values, ``(stop - start, R, C)`` of the store's dtype.
        duration_s : float
            Time the task took, s (recorded in the marker).
        """
        import zarr

        from asirp.provenance import array_sha256
        from asirp.safe_files import atomic_write

        start, stop = self.bounds()[index]
        array = zarr.open_array(_zarr_store(self.path), mode="r+")
        array[start:stop] = data
        digest = array_sha256(data)
        marker = {
            "chunk": index,
            "start": start,
            "stop": stop,
            "sha256": digest,
            "duration_s": duration_s,
        }
        # temp file in the marker folder, then os.replace: a marker is there whole or not at all
        with atomic_write(self.marker_path(index), overwrite=True) as output:
            output.file.write(json.dumps(marker).encode("utf-8"))
        return digest

    def read(self) -> np.ndarray:
        """The whole output ``(n, R, C)``."""
        import zarr

        return np.asarray(zarr.open_array(_zarr_store(self.path), mode="r")[...])

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of every image, ``(n, stop - start, C)`` (a band across chunks)."""
        import zarr

        array = zarr.open_array(_zarr_store(self.path), mode="r")
        return np.asarray(array[:, int(start) : int(stop), :])

    def marker_digests(self) -> list[str]:
        """The sha256 of every chunk from its marker, in order; StackError if one is missing."""
        digests = []
        for index in range(len(self.bounds())):
            try:
                marker = json.loads(self.marker_path(index).read_text(encoding="utf-8"))
                digests.append(str(marker["sha256"]))
            except (OSError, ValueError, KeyError, TypeError):
                raise StackError(f"chunk {index} of {self.path.name} is not done") from None
        return digests

    def provenance(self) -> dict[str, Any]:
        """The stored provenance (``attrs["asirp_stack"]``)."""
        return self.read_provenance(self.path) or {}


def _difference(old: Any, new: dict[str, Any]) -> str:
    """Which identity entries differ, for the error line."""
    if not isinstance(old, dict):
        return "no recorded parameters"
    new = json.loads(json.dumps(new))
    names = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return "differs in " + ", ".join(names) if names else "same"

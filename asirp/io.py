"""Reading images: ``.npy``, TIFF and HDF5.

Inputs are named by a path; an HDF5 dataset by ``file.h5::/path/to/dataset`` (the path inside
the file may be omitted when the file holds exactly one dataset). Inputs are opened read-only
and never modified. Restorations are written (and read back) by :mod:`asirp.results_io`.

Reading is guarded (:func:`read_array`): the declared shape and dtype are checked against a size
limit (:data:`MAX_INPUT_BYTES`, 1 GiB; ``$ASIRP_MAX_INPUT_BYTES`` or ``max_bytes=`` raises it)
before any data is read; HDF5 files are opened from a file object and external links, virtual
datasets and external raw storage are refused, so only the named file is ever read; colour TIFFs
(more than one sample per pixel) are refused. With ``root=`` a :class:`asirp.safe_files.DataRoot`
confines the path and opens it by file descriptor.
"""

from __future__ import annotations

import math
import os
import posixpath
from pathlib import Path
from typing import Any, BinaryIO

import h5py
import numpy as np

from asirp.safe_files import (
    DataRoot,
    DataRootError,
    open_input,
)


class InputFileError(ValueError):
    """An input file is missing, unreadable, or does not hold what was asked for."""


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")
TIFF_SUFFIXES = (".tif", ".tiff")


def split_hdf5_path(path: str | os.PathLike) -> tuple[Path, str | None]:
    """Split ``file.h5::/dataset`` into the file path and the dataset path (or ``None``)."""
    text = os.fspath(path)
    if "::" in text:
        file_part, dataset = text.split("::", 1)
        return Path(file_part), dataset or None
    return Path(text), None


def _single_dataset(handle: h5py.File, file_path: Path | str) -> str:
    names: list[str] = []
    # visititems follows hard links only: soft and external links are not entered
    handle.visititems(
        lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
    )
    if len(names) != 1:
        listed = ", ".join("/" + n for n in names[:10]) or "none"
        raise InputFileError(
            f"{file_path} holds {len(names)} datasets ({listed}); name one as "
            f"'{file_path}::/path/to/dataset'"
        )
    return names[0]


class UnsafeInputError(InputFileError):
    """An input would make ASIRP read another file.

    An HDF5 external link (also one reached through a soft link), a virtual dataset, or a
    dataset with external raw storage.
    """


class InputTooLargeError(InputFileError):
    """An input declares more data than :func:`max_input_bytes` allows (checked before reading)."""


MAX_INPUT_BYTES = 1 << 30
"""Default limit on the size of one input array, bytes (1 GiB; ``$ASIRP_MAX_INPUT_BYTES``)."""

MAX_INPUT_BYTES_ENV = "ASIRP_MAX_INPUT_BYTES"
"""Environment variable that raises (or lowers) :data:`MAX_INPUT_BYTES`, in bytes."""

_NUMERIC_KINDS = "biufc"
_MAX_LINK_DEPTH = 32


def max_input_bytes() -> int:
    """The size limit of an input array, bytes: ``$ASIRP_MAX_INPUT_BYTES`` or 1 GiB."""
    text = os.environ.get(MAX_INPUT_BYTES_ENV, "").strip()
    if not text:
        return MAX_INPUT_BYTES
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"{MAX_INPUT_BYTES_ENV}={text!r} is not a number of bytes") from None
    if value <= 0:
        raise ValueError(f"{MAX_INPUT_BYTES_ENV} must be > 0 bytes, got {text!r}")
    return value


def open_input_file(path: str | os.PathLike, what: str = "input file") -> BinaryIO:
    """Open an existing regular file for reading, or raise one :class:`InputFileError`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    what : str
        What the file is, for the messages (``"MDA file"``, ``"beam file"``).

    Returns
    -------
    BinaryIO
        The open file (close it, e.g. with ``with``).
    """
    try:
        return open_input(path)
    except FileNotFoundError:
        raise InputFileError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputFileError(f"{path} is a folder, not a file") from None
    except ValueError as error:  # not a regular file (a FIFO, a device)
        raise InputFileError(str(error)) from None
    except OSError as error:
        raise InputFileError(f"cannot open {path}: {error.strerror or error}") from None


def read_input_bytes(
    path: str | os.PathLike, what: str = "input file", max_bytes: int | None = None
) -> bytes:
    """A small input file's bytes, its size checked before any is read.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    what : str
        What the file is, for the messages.
    max_bytes : int, optional
        Largest size read, bytes (default :func:`max_input_bytes`).

    Raises
    ------
    InputTooLargeError
        If the file is larger than ``max_bytes``.
    InputFileError
        If it is missing, a folder or not a regular file (:func:`open_input_file`).
    """
    limit = max_input_bytes() if max_bytes is None else int(max_bytes)
    with open_input_file(path, what) as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > limit:
            raise InputTooLargeError(
                f"{what} {path} is {size} bytes; at most {limit} bytes are read, so nothing "
                "was read"
            )
        return stream.read(limit + 1)  # a file that grows meanwhile is still capped


def check_declared_size(
    shape: tuple[int, ...], dtype: np.dtype, where: str, max_bytes: int | None = None
) -> None:
    """Refuse an array whose declared shape and dtype exceed the input limit, before reading.

    Parameters
    ----------
    shape : tuple of int
        Declared shape.
    dtype : numpy.dtype
        Declared element type.
    where : str
        What is read (for the message).
    max_bytes : int, optional
        The limit, bytes (default :func:`max_input_bytes`).

    Raises
    ------
    InputTooLargeError
        When ``prod(shape) * itemsize`` exceeds the limit.
    InputFileError
        For a dtype that is not numbers (strings, objects, compound or variable-length data).
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise InputFileError(f"cannot read {where}: it holds {dtype} values, not numbers")
    limit = max_input_bytes() if max_bytes is None else int(max_bytes)
    size = math.prod(int(n) for n in shape) * dtype.itemsize
    if size > limit:
        dims = " x ".join(str(int(n)) for n in shape)
        raise InputTooLargeError(
            f"{where} declares {dims} {dtype} values ({size / 2**20:.1f} MiB), more than the "
            f"input limit of {limit / 2**20:.1f} MiB; nothing was read. Raise the limit with "
            f"the environment variable {MAX_INPUT_BYTES_ENV}=BYTES (or max_bytes=) if this "
            "file is trusted and fits in memory"
        )


def hdf5_node(handle: h5py.File, name: str, where: str) -> h5py.Group | h5py.Dataset:
    """The group or dataset ``name`` of an open file, never following a link out of it.

    Soft links inside the file are followed (at most :data:`_MAX_LINK_DEPTH`); an external or
    user-defined link anywhere on the way is refused before it is opened (h5py would open the
    other file, which may lie outside the data root).

    Raises
    ------
    InputFileError
        When ``name`` does not exist or the soft links loop.
    UnsafeInputError
        For an external or user-defined link on the way.
    """
    path = "/" + name.strip("/")
    for _ in range(_MAX_LINK_DEPTH):
        group: h5py.Group = handle["/"]
        parts = [part for part in path.split("/") if part]
        redirected = False
        for index, part in enumerate(parts):
            # the link itself, never its target: ``part in group`` would resolve an external
            # link, that is open the other file
            link = group.get(part, getlink=True) if isinstance(group, h5py.Group) else None
            if link is None:
                raise InputFileError(f"{where} has no dataset {name!r}")
            if isinstance(link, h5py.ExternalLink):
                raise UnsafeInputError(
                    f"{where}: {'/' + '/'.join(parts[: index + 1])!r} is an external link to "
                    "another file; ASIRP does not follow external links (copy the data into "
                    "the file)"
                )
            if isinstance(link, h5py.SoftLink):
                target = link.path
                if not target.startswith("/"):
                    base = "/" + "/".join(parts[:index])
                    target = posixpath.normpath(posixpath.join(base, target))
                path = target + "/" + "/".join(parts[index + 1 :])
                redirected = True
                break
            if not isinstance(link, h5py.HardLink):
                raise UnsafeInputError(
                    f"{where}: {'/' + '/'.join(parts[: index + 1])!r} is a user-defined link; "
                    "ASIRP follows only links inside the file"
                )
            group = group[part]
        if not redirected:
            break
    else:
        raise InputFileError(f"{where}: too many soft links on the way to {name!r}")
    return group


def hdf5_dataset(handle: h5py.File, name: str, where: str) -> h5py.Dataset:
    """The plain dataset ``name`` of an open file (:func:`hdf5_node`), its data in the file.

    Raises
    ------
    InputFileError
        When it is missing or a group.
    UnsafeInputError
        For a link out of the file, a virtual dataset or external raw storage.
    """
    item = hdf5_node(handle, name, where)
    if not isinstance(item, h5py.Dataset):
        raise InputFileError(f"{where}::{name} is a group, not a dataset")
    if item.is_virtual:
        raise UnsafeInputError(
            f"{where}::{name} is a virtual dataset (its data lie in other files); ASIRP does "
            "not read virtual datasets: copy the data into a plain dataset"
        )
    if item.external:
        raise UnsafeInputError(
            f"{where}::{name} keeps its data in external raw files; ASIRP does not read "
            "external storage: copy the data into the HDF5 file"
        )
    return item


def _describe_colour(page: Any) -> str:
    photometric = getattr(page.photometric, "name", str(page.photometric))
    samples = int(page.samplesperpixel)
    if photometric == "RGB":
        return "RGBA" if samples == 4 else "RGB" if samples == 3 else f"RGB+{samples - 3}"
    return f"{photometric}, {samples} samples per pixel"


def _read_stream(
    stream: BinaryIO, suffix: str, dataset: str | None, where: str, max_bytes: int | None
) -> np.ndarray:
    """Read an array from an open file: sizes and safety first, then the bytes."""
    if suffix == ".npy":
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            shape, _, dtype = np.lib.format._read_array_header(stream, version)
        check_declared_size(tuple(shape), dtype, where, max_bytes)
        stream.seek(0)
        # allow_pickle=False: never unpickle objects from a file we did not write.
        return np.load(stream, allow_pickle=False)
    if suffix in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(stream, name=Path(where).name) as tiff:
            if not tiff.series:
                raise InputFileError(f"{where} holds no image")
            series = tiff.series[0]
            page = series.keyframe
            if int(page.samplesperpixel) > 1:
                dims = "x".join(str(n) for n in series.shape)
                raise InputFileError(
                    f"{where} is a colour TIFF ({_describe_colour(page)}, {dims}): ASIRP "
                    "restores one channel of counts; convert it to one channel first"
                )
            check_declared_size(tuple(series.shape), series.dtype, where, max_bytes)
            return series.asarray()
    if suffix in HDF5_SUFFIXES:
        with h5py.File(stream, "r") as handle:
            name = dataset if dataset is not None else _single_dataset(handle, where)
            item = hdf5_dataset(handle, name, where)
            check_declared_size(item.shape, item.dtype, f"{where}::{name}", max_bytes)
            return item[()]
    raise InputFileError(
        f"unknown input format {suffix!r} for {where}; use .npy, .tif/.tiff or "
        f"HDF5 ({', '.join(HDF5_SUFFIXES)}) as 'file.h5::/dataset'"
    )


def read_array(
    path: str | os.PathLike,
    *,
    max_bytes: int | None = None,
    root: DataRoot | None = None,
) -> np.ndarray:
    """Read an array from ``.npy``, TIFF or HDF5 (``file.h5::/dataset``).

    The declared shape and dtype are checked against the size limit before any data is read,
    and nothing is read from another file than the one named: HDF5 external links (also
    reached through soft links), virtual datasets and external raw storage are refused. TIFFs
    with more than one sample per pixel (RGB, RGBA, multi-channel) are refused rather than read
    as a stack of channels.

    Parameters
    ----------
    path : str or os.PathLike
        The file, with ``::/dataset`` for HDF5.
    max_bytes : int, optional
        Largest array accepted, bytes (default :func:`max_input_bytes`: 1 GiB, or
        ``$ASIRP_MAX_INPUT_BYTES``).
    root : asirp.safe_files.DataRoot, optional
        Read inside this data root only, by file descriptor, following no symbolic link.

    Returns
    -------
    numpy.ndarray
        The array as stored (dtype unchanged).

    Raises
    ------
    ValueError
        (:class:`InputFileError`) For a missing file, an unknown suffix, a missing dataset, or a
        file that cannot be parsed (corrupt or of another format);
        :class:`UnsafeInputError` for links or storage in other files;
        :class:`InputTooLargeError` above the size limit; ``DataRootError`` for a path that
        leaves ``root``.
    """
    file_path, dataset = split_hdf5_path(path)
    suffix = file_path.suffix.lower()
    where = str(file_path) if root is None else str(root.resolve(file_path))
    if suffix not in (".npy", *TIFF_SUFFIXES, *HDF5_SUFFIXES):
        raise InputFileError(
            f"unknown input format {suffix!r} for {where}; use .npy, .tif/.tiff or "
            f"HDF5 ({', '.join(HDF5_SUFFIXES)}) as 'file.h5::/dataset'"
        )
    try:
        stream = root.open_stream(file_path) if root is not None else open_input(file_path)
    except FileNotFoundError as error:
        if root is not None:
            raise InputFileError(str(error)) from None
        raise InputFileError(f"input file not found: {file_path}") from None
    except IsADirectoryError:
        raise InputFileError(f"{file_path} is a folder, not a file") from None
    except DataRootError:
        raise
    except ValueError as error:
        raise InputFileError(str(error)) from None
    except OSError as error:
        raise InputFileError(f"cannot open {where}: {error.strerror or error}") from None
    with stream:
        return read_stream(stream, where if dataset is None else f"{where}::{dataset}", max_bytes)


def read_stream(
    stream: BinaryIO, path: str | os.PathLike, max_bytes: int | None = None
) -> np.ndarray:
    """Read an array from a file already open (by :class:`asirp.safe_files.DataRoot`, say).

    The same checks as :func:`read_array` apply (sizes before bytes, no other file read).

    Parameters
    ----------
    stream : BinaryIO
        The file, open in binary mode and seekable; it is not closed.
    path : str or os.PathLike
        Its name, which gives the format (suffix) and, for HDF5, ``::/dataset``; used in
        messages.
    max_bytes : int, optional
        Largest array accepted, bytes (default :func:`max_input_bytes`).

    Returns
    -------
    numpy.ndarray
        The array as stored.
    """
    file_path, dataset = split_hdf5_path(path)
    where = str(file_path)
    try:
        return _read_stream(stream, file_path.suffix.lower(), dataset, where, max_bytes)
    except InputFileError:
        raise
    except Exception as error:  # corrupt or foreign files raise many different errors
        message = " ".join(str(error).split())[:300]
        raise InputFileError(f"cannot read {where}: {type(error).__name__}: {message}") from None

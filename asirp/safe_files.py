"""Safe file access: a data root that holds, and writes that never replace what they must not.

Two tools, used by the command line, the µ-XRF exports, the policy file and the Tango device:

:func:`atomic_write`
    Write a file through a temporary file in the target folder, then move it into place. The
    temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode ``0o666`` (the
    kernel applies the umask and default ACLs, so a result is as readable as any file the user
    writes; ``tempfile.mkstemp`` would make it ``0o600``). Without ``overwrite`` the move is a
    hard link, which fails atomically when the target exists (no check-then-write race; on file
    systems without hard links it falls back to a check then a rename). A file in ``protect``
    (the inputs of the same call, compared by device and inode, so hard links and other
    spellings are caught) is never replaced, even with ``overwrite``. A failure leaves the
    target as it was and removes the temporary file.

:class:`DataRoot`
    Confines a client's paths to one folder (the Tango device's ``DataRoot`` property). Paths
    are relative to the root (or absolute inside it) and normalised *lexically*: ``..`` may not
    climb above the root. Files are then opened **by file descriptor**, one component at a
    time (``openat`` with ``O_NOFOLLOW | O_DIRECTORY`` for folders, ``O_NOFOLLOW`` for the
    file), and read from that descriptor, so nothing is looked up twice by name and swapping a
    folder for a symlink between a check and an open cannot redirect a read or a write.

    **Symlink rule: no symbolic link is followed inside a data root**, whether it points
    inside or outside (the simplest rule that holds against races; put real files or folders
    in the root, or bind-mount them). The root path itself may contain links: it is resolved
    once, when the :class:`DataRoot` is made.

    Errors never say anything about paths outside the root: a path that leaves the root is
    refused as "outside the data root" before anything is looked up, whether it exists or
    not, and the target of a refused symlink is never read or shown.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import stat
import tempfile
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FOLDER_FLAGS = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
_NEW_FILE_MODE = 0o666
"""Mode asked for new files; the kernel removes the umask's bits (0o644 under umask 022)."""
_NEW_FOLDER_MODE = 0o777

FileIdentity = tuple[int, int]
"""``(st_dev, st_ino)``: one file, whatever its name or hard link."""


class DataRootError(ValueError):
    """A path is outside the data root, goes through a symbolic link, or no root is configured."""


class OutputExistsError(FileExistsError):
    """The output file exists and replacing it was not asked for."""


class ProtectedFileError(OutputExistsError):
    """The output would replace an input of the same call (never done, even with overwrite)."""


@dataclass
class AtomicOutput:
    """The temporary file of :func:`atomic_write`, to fill in either way.

    Attributes
    ----------
    file : BinaryIO
        The temporary file, open for reading and writing in binary mode (h5py, matplotlib,
        ``numpy.savetxt`` and ``json`` can all write to it). Do not close it.
    path : pathlib.Path
        A name of the same file for libraries that only take paths (its suffix is the target's,
        so they pick the format from it). Writing through ``file`` is preferred.
    """

    file: BinaryIO
    path: Path


def file_identity(path: str | os.PathLike) -> FileIdentity | None:
    """``(st_dev, st_ino)`` of the file at ``path`` (links followed), or ``None`` if missing."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino)


def _identity(info: os.stat_result) -> FileIdentity:
    return (info.st_dev, info.st_ino)


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _check_target(
    info: os.stat_result | None,
    display: str,
    *,
    overwrite: bool,
    protect: frozenset[FileIdentity],
    hint: str,
) -> None:
    if info is None:
        return
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{display} is a folder; give a file name")
    if _identity(info) in protect:
        raise ProtectedFileError(
            f"{display} is an input of this call (the input file); it is never replaced, "
            "even with overwrite: choose another output path"
        )
    if not overwrite:
        raise OutputExistsError(f"{display} already exists and is not replaced; {hint}")


def _commit(
    dir_fd: int,
    temporary: str,
    name: str,
    display: str,
    *,
    overwrite: bool,
    protect: frozenset[FileIdentity],
    hint: str,
) -> None:
    """Move ``temporary`` onto ``name`` (both in ``dir_fd``), by the rules of the module notes."""
    _check_target(_lstat_at(dir_fd, name), display, overwrite=overwrite, protect=protect, hint=hint)
    if overwrite:
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    try:
        os.link(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise OutputExistsError(f"{display} already exists and is not replaced; {hint}") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # no hard links here (some network or FAT file systems): check, then rename
        _check_target(_lstat_at(dir_fd, name), display, overwrite=False, protect=protect, hint=hint)
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    os.unlink(temporary, dir_fd=dir_fd)


def _fd_path(dir_fd: int, folder: Path, name: str) -> Path:
    """A path naming ``name`` in the folder open as ``dir_fd`` (through /proc when it exists)."""
    proc = Path(f"/proc/self/fd/{dir_fd}")
    return proc / name if proc.exists() else folder / name


@contextlib.contextmanager
def _atomic_at(
    dir_fd: int,
    folder: Path,
    name: str,
    display: str,
    *,
    overwrite: bool,
    protect: frozenset[FileIdentity],
    hint: str,
) -> Iterator[AtomicOutput]:
    _check_target(_lstat_at(dir_fd, name), display, overwrite=overwrite, protect=protect, hint=hint)
    suffix = "".join(Path(name).suffixes[-1:])
    temporary = f".{name}.{uuid.uuid4().hex[:12]}.part{suffix}"
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    descriptor = os.open(temporary, flags, _NEW_FILE_MODE, dir_fd=dir_fd)
    stream = os.fdopen(descriptor, "w+b")
    try:
        yield AtomicOutput(stream, _fd_path(dir_fd, folder, temporary))
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()
        _commit(dir_fd, temporary, name, display, overwrite=overwrite, protect=protect, hint=hint)
    except BaseException:
        stream.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise


def _identities(protect: Iterable[str | os.PathLike | FileIdentity | None]) -> frozenset:
    found = set()
    for item in protect:
        if item is None:
            continue
        if isinstance(item, tuple):
            found.add(item)
        else:
            identity = file_identity(item)
            if identity is not None:
                found.add(identity)
    return frozenset(found)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike | FileIdentity | None] = (),
    hint: str = "pass overwrite=True to replace it",
) -> Iterator[AtomicOutput]:
    """Write ``path`` atomically, refusing to replace an existing file unless asked.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder is created if missing.
    overwrite : bool
        Replace an existing file (default: refuse with :class:`OutputExistsError`).
    protect : iterable
        Files never replaced, even with ``overwrite``: paths (missing ones are ignored) or
        ``(st_dev, st_ino)`` identities, typically the inputs of the same call.
    hint : str
        How to ask for the replacement, appended to the error (``"use --overwrite"``).

    Yields
    ------
    AtomicOutput
        The temporary file (``.file`` and ``.path``); it becomes ``path`` when the block ends
        without an exception.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        If ``path`` is a folder.
    ProtectedFileError
        If ``path`` is one of the ``protect`` files.
    """
    target = Path(path)
    if not target.name or target.name in (".", ".."):
        raise ValueError(f"{target} is not a file name")
    protected = _identities(protect)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(folder, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        with _atomic_at(
            dir_fd,
            folder,
            target.name,
            str(target),
            overwrite=overwrite,
            protect=protected,
            hint=hint,
        ) as output:
            yield output
    finally:
        os.close(dir_fd)


def open_input(path: str | os.PathLike) -> BinaryIO:
    """Open an existing regular file for reading (not a FIFO, device or folder).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it is not a regular file.
    """
    descriptor = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    return _regular_stream(descriptor, str(path))


def _regular_stream(descriptor: int, display: str) -> BinaryIO:
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{display} is not a regular file")
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


class PinnedFile:
    """A file of a data root held open, with a path that libraries taking paths can open.

    The path (in a private temporary folder, with the file's own name and suffix) is a symbolic
    link to ``/proc/self/fd/N``: opening it opens exactly the file that was checked, whatever
    happens in the data root afterwards. Where ``/proc`` does not exist, the bytes are copied
    there instead. :meth:`close` (or garbage collection, or the end of the process) removes it.

    Attributes
    ----------
    path : pathlib.Path
        The path to give to the library.
    source : pathlib.Path
        The file inside the data root it stands for.
    """

    def __init__(self, stream: BinaryIO, source: Path) -> None:
        self.source = source
        folder = Path(tempfile.mkdtemp(prefix="asirp-pinned-"))
        self.path = folder / source.name
        proc = Path(f"/proc/self/fd/{stream.fileno()}")
        if proc.exists():
            self.path.symlink_to(proc)
            keep: BinaryIO | None = stream
        else:  # pragma: no cover - not Linux
            with open(self.path, "xb") as copy:
                shutil.copyfileobj(stream, copy)
            stream.close()
            keep = None
        self._finalizer = weakref.finalize(self, PinnedFile._cleanup, keep, str(folder))

    @staticmethod
    def _cleanup(stream: BinaryIO | None, folder: str) -> None:
        if stream is not None:
            stream.close()
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove the path and close the file."""
        self._finalizer()


class DataRoot:
    """A folder that a client's paths are confined to (rules in the module notes).

    Parameters
    ----------
    root : str or os.PathLike
        An existing folder; resolved once (links in the root path itself are followed).

    Raises
    ------
    ValueError
        If ``root`` is not an existing folder.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        given = Path(root).expanduser()
        resolved = given.resolve()
        if not resolved.is_dir():
            raise ValueError(f"data root {os.fspath(root)!r} is not an existing folder")
        self.path = resolved
        self._spellings = {resolved, Path(os.path.abspath(given))}

    def __repr__(self) -> str:
        return f"DataRoot({str(self.path)!r})"

    # ------------------------------------------------------------------ paths
    def parts(self, path: str | os.PathLike) -> tuple[str, ...]:
        """The components of ``path`` below the root, normalised lexically.

        Raises
        ------
        DataRootError
            If the path leaves the root (``..`` above it, absolute elsewhere); nothing is
            looked up, so the message is the same whether such a file exists or not.
        ValueError
            For an empty path, or one naming the root itself.
        """
        text = os.fspath(path).strip()
        if not text:
            raise ValueError("the path is empty; give a file inside the data root")
        if "\x00" in text:
            raise ValueError("the path contains a NUL character")
        relative: str | None = None
        if os.path.isabs(text):
            normal = Path(posixpath.normpath(text))
            for spelling in self._spellings:
                if normal == spelling or normal.is_relative_to(spelling):
                    relative = str(normal.relative_to(spelling))
                    break
            if relative is None:
                raise self._outside(text)
        else:
            relative = text
        normal_relative = posixpath.normpath(relative)
        if normal_relative == ".." or normal_relative.startswith("../"):
            raise self._outside(text)
        parts = tuple(part for part in normal_relative.split("/") if part not in ("", "."))
        if not parts:
            raise ValueError(f"{text!r} names the data root itself; give a file inside it")
        return parts

    def _outside(self, text: str) -> DataRootError:
        return DataRootError(
            f"{text!r} is outside the data root {self.path}; give a path relative to the data "
            "root (or absolute inside it)"
        )

    def resolve(self, path: str | os.PathLike) -> Path:
        """The path of ``path`` inside the root (lexical: nothing is opened or followed)."""
        return self.path.joinpath(*self.parts(path))

    # ------------------------------------------------------------------ descriptors
    def _open_folder(self, parts: tuple[str, ...], text: str, *, create: bool = False) -> int:
        """Open the folder ``parts`` below the root by descriptor, no link followed."""
        fd = os.open(self.path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        try:
            for index, part in enumerate(parts):
                try:
                    child = os.open(part, _FOLDER_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise FileNotFoundError(
                            f"file not found: {self.path.joinpath(*parts[: index + 1])} "
                            f"(from {text!r}): no such folder in the data root"
                        ) from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, _NEW_FOLDER_MODE, dir_fd=fd)
                    child = self._open_child_folder(fd, part, parts[: index + 1], text)
                except OSError as error:
                    raise self._not_a_folder(error, fd, part, parts[: index + 1], text) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_child_folder(self, fd: int, part: str, so_far: tuple[str, ...], text: str) -> int:
        try:
            return os.open(part, _FOLDER_FLAGS, dir_fd=fd)
        except OSError as error:
            raise self._not_a_folder(error, fd, part, so_far, text) from None

    def _not_a_folder(
        self, error: OSError, fd: int, part: str, so_far: tuple[str, ...], text: str
    ) -> Exception:
        info = _lstat_at(fd, part) if error.errno in (errno.ELOOP, errno.ENOTDIR) else None
        inside = "/".join(so_far)
        if info is not None and stat.S_ISLNK(info.st_mode):
            return self._link_error(inside, text)
        if error.errno == errno.ENOTDIR:
            return FileNotFoundError(
                f"file not found: {text!r}: {inside!r} in the data root is not a folder"
            )
        return OSError(error.errno, f"cannot open {inside!r} in the data root: {error.strerror}")

    def _link_error(self, inside: str, text: str) -> DataRootError:
        return DataRootError(
            f"{text!r} goes through the symbolic link {inside!r}: links are not followed in the "
            "data root (they could lead outside the data root); use the real file or folder"
        )

    @contextlib.contextmanager
    def open(self, path: str | os.PathLike) -> Iterator[BinaryIO]:
        """Open a regular file inside the root for reading, by descriptor (no link followed).

        Yields
        ------
        BinaryIO
            The file, open in binary mode.

        Raises
        ------
        DataRootError
            If the path leaves the root or goes through a symbolic link.
        FileNotFoundError
            If there is no such file in the root.
        ValueError
            If it is not a regular file (a folder, a FIFO, a device).
        """
        stream = self.open_stream(path)
        try:
            yield stream
        finally:
            stream.close()

    def open_stream(self, path: str | os.PathLike) -> BinaryIO:
        """As :meth:`open`, but returns the open file (the caller closes it)."""
        text = os.fspath(path).strip()
        parts = self.parts(path)
        folder = self._open_folder(parts[:-1], text)
        try:
            try:
                descriptor = os.open(
                    parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=folder
                )
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"file not found: {self.path.joinpath(*parts)} (from {text!r})"
                ) from None
            except OSError as error:
                info = _lstat_at(folder, parts[-1]) if error.errno == errno.ELOOP else None
                if info is not None and stat.S_ISLNK(info.st_mode):
                    raise self._link_error("/".join(parts), text) from None
                raise OSError(
                    error.errno, f"cannot open {text!r} in the data root: {error.strerror}"
                ) from None
        finally:
            os.close(folder)
        try:
            info = os.fstat(descriptor)
            if stat.S_ISDIR(info.st_mode):
                raise ValueError(f"{text!r} is a folder; give a file")
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"{text!r} is not a regular file")
        except BaseException:
            os.close(descriptor)
            raise
        return os.fdopen(descriptor, "rb")

    def identity(self, path: str | os.PathLike) -> FileIdentity | None:
        """``(st_dev, st_ino)`` of a file inside the root, or ``None`` if it cannot be opened."""
        try:
            with self.open(path) as stream:
                return _identity(os.fstat(stream.fileno()))
        except (OSError, ValueError):
            return None

    def pin(self, path: str | os.PathLike, *, max_bytes: int | None = None) -> PinnedFile:
        """Open a file inside the root and hold it for a library that opens files by path.

        Parameters
        ----------
        path : str or os.PathLike
            The file, relative to the root or absolute inside it.
        max_bytes : int, optional
            Refuse a larger file (its size on disk, bytes).

        Returns
        -------
        PinnedFile
            Its ``path`` opens exactly this file; close it when done.
        """
        stream = self.open_stream(path)
        try:
            size = os.fstat(stream.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise ValueError(
                    f"{os.fspath(path)!r} is {size} bytes, more than the {max_bytes} allowed"
                )
            return PinnedFile(stream, self.resolve(path))
        except BaseException:
            stream.close()
            raise

    @contextlib.contextmanager
    def atomic_write(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        protect: Iterable[FileIdentity | None] = (),
        hint: str = "pass overwrite=True to replace it",
    ) -> Iterator[AtomicOutput]:
        """Write a file inside the root atomically, as :func:`atomic_write` does.

        Missing folders are created inside the root; no link is followed on the way. ``protect``
        takes identities (see :meth:`identity`).

        Raises
        ------
        DataRootError
            If the path leaves the root or goes through a symbolic link.
        OutputExistsError, ProtectedFileError
            As :func:`atomic_write`.
        """
        text = os.fspath(path).strip()
        parts = self.parts(path)
        folder = self._open_folder(parts[:-1], text, create=True)
        try:
            with _atomic_at(
                folder,
                self.path.joinpath(*parts[:-1]),
                parts[-1],
                str(self.path.joinpath(*parts)),
                overwrite=overwrite,
                protect=_identities(protect),
                hint=hint,
            ) as output:
                yield output
        finally:
            os.close(folder)

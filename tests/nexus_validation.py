"""Checks that a written HDF5 file is valid NeXus and opens in silx as an image with axes.

:func:`validate_nexus` runs the NeXus validator ``nxvalidate`` (its Python API, in-process)
against the NeXus base classes and returns its errors and warnings, each with the path it is
about; :func:`assert_valid_nexus` fails on any error (warnings are allowed, and returned so a
test can list them). :func:`assert_default_image` follows the ``@default`` chain with silx, as
a viewer does, and checks it ends at an NXdata image with the expected axes.

``nxvalidate`` 0.3.5b3 sizes its log lines to the terminal when it is imported
(``os.get_terminal_size``), which fails under pytest (no terminal); it is imported here with a
fixed width, and its console handler is replaced by one that records the messages.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
from silx.io.nxdata import NXdata, get_default

with mock.patch("os.get_terminal_size", return_value=os.terminal_size((400, 40))):
    from nxvalidate import validate as _nxvalidate


@dataclass
class NexusReport:
    """What the NeXus validator said about one file.

    Attributes
    ----------
    errors, warnings : list of str
        ``"<path the message is about>: <message>"``, in the validator's order.
    """

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Recorder(logging.Handler):
    """Keeps the validator's warnings and errors, each with the group or field it is about."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.report = NexusReport()
        self.where = "/"

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        # The validator announces each group or field it reports on at its "all" level
        # (CRITICAL): "NXdata: /entry/map", "Field: /entry/map/x", "Link: ...".
        if record.levelno == logging.CRITICAL:
            self.where = message.split(": ", 1)[-1] if ": /" in message else self.where
        elif record.levelno == logging.ERROR:
            self.report.errors.append(f"{self.where}: {message}")
        elif record.levelno == logging.WARNING:
            self.report.warnings.append(f"{self.where}: {message}")


def validate_nexus(path: str | os.PathLike) -> NexusReport:
    """Validate a whole file against the NeXus base classes with ``nxvalidate``.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5/NeXus file.

    Returns
    -------
    NexusReport
        The validator's errors and warnings.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise FileNotFoundError(f"no file to validate: {file_path}")
    logger = _nxvalidate.logger
    recorder = _Recorder()
    saved_handlers, saved_level = list(logger.handlers), logger.level
    for handler in saved_handlers:
        logger.removeHandler(handler)
    logger.addHandler(recorder)
    # Warnings and errors only: the validator then drops the messages of clean groups.
    logger.setLevel(logging.WARNING)
    try:
        validator = _nxvalidate.FileValidator(file_path)
        validator.validate("/")
    finally:
        logger.removeHandler(recorder)
        for handler in saved_handlers:
            logger.addHandler(handler)
        logger.setLevel(saved_level)
    return recorder.report


def assert_valid_nexus(path: str | os.PathLike) -> list[str]:
    """Fail (``AssertionError`` listing every error) unless the file is valid NeXus.

    Returns
    -------
    list of str
        The validator's warnings (allowed: e.g. fields the base classes do not define).
    """
    report = validate_nexus(path)
    assert not report.errors, f"{path} is not valid NeXus:\n" + "\n".join(report.errors)
    return report.warnings


def assert_default_image(
    path: str | os.PathLike,
    axes: tuple[str, ...] = ("y", "x"),
    *,
    units: str | None = None,
) -> tuple[str, tuple[int, ...]]:
    """Check that silx finds the file's default plot and that it is an image with axes.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    axes : tuple of str
        The names of the last two axes of the default NXdata, slowest first.
    units : str, optional
        The units every one of those axes must carry.

    Returns
    -------
    (str, tuple of int)
        The path of the default NXdata and the shape of its signal.
    """
    with h5py.File(path, "r") as handle:
        default = get_default(handle)
        assert default is not None, f"{path}: silx finds no default NXdata (@default chain)"
        assert default.is_valid, f"{path}: silx finds {default.group.name} invalid"
        assert default.is_image, f"{path}: {default.group.name} is not an image for silx"
        assert tuple(default.axes_dataset_names[-2:]) == axes, default.axes_dataset_names
        for axis, name in zip(default.axes[-2:], axes, strict=True):
            assert axis is not None, f"{path}: axis {name} has no dataset"
            assert np.all(np.isfinite(axis[()])), f"{path}: axis {name} is not finite"
            if units is not None:
                assert axis.attrs.get("units") == units, (name, dict(axis.attrs))
        return default.group.name, tuple(default.signal.shape)


def default_nxdata(handle: h5py.File) -> NXdata:
    """The NXdata silx plots by default (``@default`` chain), or ``AssertionError``."""
    default = get_default(handle)
    assert default is not None, f"{handle.filename}: no default NXdata"
    return default

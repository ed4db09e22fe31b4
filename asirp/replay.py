"""Re-run a restoration from its result file and say whether it comes out the same, bit for bit.

A result file of :func:`asirp.results_io.write_restoration` holds the whole
``Restoration.provenance()``, which includes the replay record of :mod:`asirp.provenance`.
:func:`replay` reads it and:

1. **reads the input**: ``input=`` when given, else the recorded ``input_path`` (as given, then
   relative to the result's folder), else the measured map stored in the result file
   (``/entry/input``), and checks its sha256 against the recorded ``input_sha256``; another
   input is refused (:class:`asirp.io.InputFileError`), never restored in its place;
2. **re-runs** :func:`asirp.restore` with the method that ran (for ``method="auto"``, the
   method the selector chose, with its parameters: the choice itself depends on measured run
   times and on a remembered policy, so it is not replayed), the resolved parameters, the same
   PSF (a beam or Gaussian from its recorded numbers, an array or file PSF from its recorded
   values), ``counts_gain``, seed and device, on the recorded thread counts
   (:func:`asirp.threads.fixed_threads`);
3. **compares** the new image with the stored one, bit for bit (:class:`ReplayReport`): the
   largest absolute difference and the number of pixels whose float32 bits differ.

Bit-identical results are expected on the same machine, libraries and thread count; the report
lists where the environment differs from the recorded one (:attr:`ReplayReport.environment`),
since another torch, CPU or GPU may add in another order. ``asirp replay`` is the command
(:mod:`asirp.replay_cli`).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asirp.auto import identity_spec
from asirp.backend import resolve_device, to_numpy, to_tensor
from asirp.io import InputFileError, read_array, split_hdf5_path
from asirp.provenance import array_sha256, device_name, library_versions
from asirp.registry import Problem
from asirp.restore import Restoration, restore
from asirp.results_io import read_restoration
from asirp.threads import fixed_threads
from asirp.validation import as_image_stack

STORED_INPUT = "stored in the result file"
"""``ReplayReport.input_source`` when the input came from the result file (``/entry/input``)."""

REQUIRED_KEYS = (
    "method",
    "params_resolved",
    "input_sha256",
    "input_shape",
    "input_dtype",
    "replay_seed",
    "device",
    "threads",
)
"""Provenance entries a replay cannot do without (files of ASIRP 0.1.0 and earlier lack them)."""


@dataclass
class ReplayReport:
    """What a replay found.

    Attributes
    ----------
    result_path : str
        The result file replayed.
    input_source : str
        Where the input came from: a path, or :data:`STORED_INPUT`.
    method : str
        The method re-run.
    identical : bool
        Whether the new image has the shape and float32 bits of the stored one.
    shape : list of int
        Shape of the stored image.
    max_abs_difference : float
        Largest ``|new - stored|``, counts (0 when identical; ``inf`` for another shape).
    differing_pixels : int
        Pixels whose float32 bits differ (all of them for another shape).
    pixels : int
        Pixels of the stored image.
    threads : int or None
        Threads of torch and the kernels in the replay (the recorded count); None on a GPU.
    environment : list of str
        How this machine differs from the recorded one (versions, device, threads), one
        sentence each; a difference can explain a result that is not bit-identical.
    elapsed_s : float
        Wall time of the re-run, s.
    """

    result_path: str
    input_source: str
    method: str
    identical: bool
    shape: list[int]
    max_abs_difference: float
    differing_pixels: int
    pixels: int
    threads: int | None
    environment: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dict (``inf`` as the string ``"inf"``)."""
        report = asdict(self)
        if not np.isfinite(self.max_abs_difference):
            report["max_abs_difference"] = "inf"
        return report

    def summary(self) -> str:
        """One line: ``bit-identical`` or the size of the difference."""
        where = f"{self.method} on {self.threads} thread(s)" if self.threads else self.method
        if self.identical:
            return f"bit-identical: {where}, {self.pixels} pixels, in {self.elapsed_s:.2f} s"
        if not np.isfinite(self.max_abs_difference):
            return f"different: {where} gave another shape than the stored {self.shape}"
        return (
            f"different: {where}, max |difference| {self.max_abs_difference:.3g} counts, "
            f"{self.differing_pixels} of {self.pixels} pixels differ"
        )


def compare_images(stored: np.ndarray, replayed: np.ndarray) -> tuple[bool, float, int]:
    """Compare two results bit for bit, as float32 (the type results are written in).

    Parameters
    ----------
    stored, replayed : numpy.ndarray
        ``(H, W)`` or ``(B, H, W)`` images.

    Returns
    -------
    identical : bool
        Same shape and the same float32 bits everywhere (so ``-0.0`` differs from ``0.0``).
    max_abs_difference : float
        Largest absolute difference, counts; ``inf`` for another shape.
    differing_pixels : int
        Pixels whose bits differ; all of them for another shape.
    """
    first = np.ascontiguousarray(stored, dtype=np.float32)
    second = np.ascontiguousarray(replayed, dtype=np.float32)
    if first.shape != second.shape:
        return False, float("inf"), int(first.size)
    differ = first.view(np.uint32) != second.view(np.uint32)
    count = int(np.count_nonzero(differ))
    if count == 0:
        return True, 0.0, 0
    gap = np.abs(first[differ].astype(np.float64) - second[differ].astype(np.float64))
    return False, float(gap.max()), count


def replay_record(stored: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The provenance of a read result file, checked to hold what a replay needs.

    Raises
    ------
    asirp.io.InputFileError
        When entries of :data:`REQUIRED_KEYS` are missing (a file of an older ASIRP, or a
        result not made by :func:`asirp.restore`).
    """
    provenance = stored.get("provenance")
    if not isinstance(provenance, dict):
        raise InputFileError(f"{path}: no provenance in the result file; it cannot be replayed")
    missing = [key for key in REQUIRED_KEYS if key not in provenance]
    if missing:
        raise InputFileError(
            f"{path}: the provenance lacks {', '.join(missing)} (a file of an ASIRP without "
            "replay records, or a result not made by asirp.restore); it cannot be replayed"
        )
    return provenance


def _input_candidates(recorded: str, result_path: Path) -> list[str]:
    """Paths to try for a recorded input: as given, then relative to the result's folder."""
    if not recorded:
        return []
    file_part, dataset = split_hdf5_path(recorded)
    paths = [recorded]
    if not file_part.is_absolute():
        beside = result_path.parent / file_part
        paths.append(f"{beside}::{dataset}" if dataset else str(beside))
    return paths


def _check_hash(image: np.ndarray, provenance: dict[str, Any], source: str) -> None:
    """Refuse an input that is not the recorded one (sha256 of values, dtype and shape)."""
    digest = array_sha256(image)
    if digest != provenance["input_sha256"]:
        raise InputFileError(
            f"the input {source} is not the one the result was made from: its sha256 is "
            f"{digest[:16]}... ({image.dtype.str} {list(image.shape)}), the recorded one "
            f"{str(provenance['input_sha256'])[:16]}... ({provenance['input_dtype']} "
            f"{provenance['input_shape']})"
        )


def read_replay_input(
    stored: dict[str, Any],
    provenance: dict[str, Any],
    result_path: str | os.PathLike,
    input_path: str | os.PathLike | None = None,
) -> tuple[np.ndarray, str]:
    """The recorded input of a result, checked against its recorded sha256.

    Parameters
    ----------
    stored : dict
        :func:`asirp.results_io.read_restoration`'s dict.
    provenance : dict
        Its checked provenance (:func:`replay_record`).
    result_path : str or os.PathLike
        The result file (a relative recorded input is also looked for beside it).
    input_path : str or os.PathLike, optional
        The input to use instead of the recorded one (``.npy``, TIFF, ``file.h5::/dataset``).

    Returns
    -------
    image : numpy.ndarray
        The input, exactly as read.
    source : str
        Its path, or :data:`STORED_INPUT`.

    Raises
    ------
    asirp.io.InputFileError
        When no input is found, or the one found is not the recorded one.
    """
    if input_path is not None:
        image = read_array(input_path)
        _check_hash(image, provenance, os.fspath(input_path))
        return image, os.fspath(input_path)
    recorded = str(stored.get("input_path") or "")
    mismatch: InputFileError | None = None
    for candidate in _input_candidates(recorded, Path(result_path)):
        if split_hdf5_path(candidate)[0].is_file():
            image = read_array(candidate)
            try:
                _check_hash(image, provenance, candidate)
            except InputFileError as error:  # another file of that name: try the next place
                mismatch = error
                continue
            return image, candidate
    kept = stored.get("input_image")
    if kept is not None:
        _check_hash(np.asarray(kept), provenance, f"stored in {result_path}")
        return np.asarray(kept), STORED_INPUT
    if mismatch is not None:
        raise mismatch
    where = f"its recorded input {recorded} is missing" if recorded else "it names no input"
    raise InputFileError(
        f"{result_path}: {where} and holds no copy of it; give the input with --input FILE"
    )


def psf_keywords(provenance: dict[str, Any]) -> dict[str, Any]:
    """The PSF keywords of :func:`asirp.restore` that make the recorded PSF again.

    Raises
    ------
    asirp.io.InputFileError
        For a PSF source a replay cannot rebuild, or an array PSF without recorded values.
    """
    description = provenance.get("psf") or {}
    source = description.get("source")
    if source is None:
        return {}
    if source == "beam":
        return {
            "beam_fwhm_um": tuple(description["beam_fwhm_um"]),
            "pixel_um": tuple(description["pixel_um"]),
        }
    if source == "gaussian":
        return {"psf_sigma_px": tuple(description["sigma_px"])}
    if source in ("array", "file"):
        given = provenance.get("psf_given")
        if not isinstance(given, dict) or "values" not in given:
            raise InputFileError(f"the {source} PSF's values were not recorded: cannot replay")
        values = np.asarray(given["values"], dtype=np.float64)
        return {"psf": values.reshape([int(side) for side in given["shape"]])}
    raise InputFileError(f"cannot rebuild a PSF of source {source!r} for a replay")


def environment_differences(provenance: dict[str, Any]) -> list[str]:
    """Where this machine differs from the recorded one, one sentence each.

    Library versions, the device and its model, and a recorded thread count that the compiled
    kernels cannot reach here (their pool is smaller).
    """
    import numba

    notes = []
    recorded = provenance.get("versions") or {}
    for name, version in library_versions().items():
        if name in recorded and recorded[name] != version:
            notes.append(f"{name} {version} here, {recorded[name]} when the result was made")
    device = str(provenance.get("device", ""))
    here = device_name(device) if device else ""
    if provenance.get("device_name") and provenance["device_name"] != here:
        notes.append(f"computed on {provenance['device_name']}, replayed on {here}")
    threads = provenance.get("threads")
    if isinstance(threads, int) and threads > numba.config.NUMBA_NUM_THREADS:
        notes.append(
            f"the result was computed on {threads} threads; the compiled kernels run at most "
            f"{numba.config.NUMBA_NUM_THREADS} here"
        )
    return notes


def _restore_identity(image: np.ndarray, scale: int, device: str) -> Restoration:
    """``auto``'s "no restoration" (the input, bicubically upsampled for ``scale > 1``)."""
    stack, was_2d = as_image_stack(image)
    compute = resolve_device(device)
    spec = identity_spec(scale)
    output = spec.run(Problem(data=to_tensor(stack, compute), psf=None, device=compute), {})
    restored = to_numpy(output.image)
    return Restoration(restored[0] if was_2d else restored, "identity", {}, None, {}, 0.0)


def rerun(provenance: dict[str, Any], image: np.ndarray, stored_shape: Any) -> Restoration:
    """Restore ``image`` again as the provenance records (method, parameters, PSF, threads).

    Parameters
    ----------
    provenance : dict
        A checked provenance (:func:`replay_record`).
    image : numpy.ndarray
        The recorded input (checked by :func:`read_replay_input`).
    stored_shape : tuple of int
        Shape of the stored result (gives the scale of ``auto``'s "no restoration").

    Returns
    -------
    Restoration
        The new result.
    """
    threads = provenance.get("threads")
    pinned = (
        fixed_threads(int(threads), provenance.get("blas_threads") or None)
        if isinstance(threads, int)
        else contextlib.nullcontext()
    )
    device = str(provenance["device"])
    with pinned:
        if provenance["method"] == "identity":
            scale = max(1, int(stored_shape[-1]) // int(np.shape(image)[-1]))
            return _restore_identity(image, scale, device)
        return restore(
            image,
            str(provenance["method"]),
            device=device,
            seed=int(provenance["replay_seed"]),
            counts_gain=provenance.get("counts_gain_given"),
            **psf_keywords(provenance),
            **dict(provenance["params_resolved"]),
        )


def replay(
    result_path: str | os.PathLike, *, input_path: str | os.PathLike | None = None
) -> tuple[ReplayReport, Restoration]:
    """Re-run the restoration of a result file and compare, bit for bit (module notes).

    Parameters
    ----------
    result_path : str or os.PathLike
        A file written by :func:`asirp.results_io.write_restoration`.
    input_path : str or os.PathLike, optional
        The input to use instead of the recorded one; it must have the recorded sha256.

    Returns
    -------
    report : ReplayReport
        Whether the result is bit-identical, and the environment's differences.
    restoration : Restoration
        The new result (write it with :func:`asirp.results_io.write_restoration`).

    Raises
    ------
    asirp.io.InputFileError
        An unreadable result file, one without a replay record, a missing input, or an input
        that is not the recorded one.
    ValueError
        A recorded device that is not here (CUDA on a machine without a GPU).
    """
    stored = read_restoration(result_path)
    provenance = replay_record(stored, result_path)
    image, source = read_replay_input(stored, provenance, result_path, input_path)
    started = time.perf_counter()
    again = rerun(provenance, image, np.shape(stored["image"]))
    elapsed = time.perf_counter() - started
    identical, gap, count = compare_images(stored["image"], again.image)
    threads = provenance.get("threads")
    report = ReplayReport(
        result_path=os.fspath(result_path),
        input_source=source,
        method=str(provenance["method"]),
        identical=identical,
        shape=[int(side) for side in np.shape(stored["image"])],
        max_abs_difference=gap,
        differing_pixels=count,
        pixels=int(np.size(stored["image"])),
        threads=int(threads) if isinstance(threads, int) else None,
        environment=environment_differences(provenance),
        elapsed_s=elapsed,
    )
    return report, again

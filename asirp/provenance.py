"""What a result needs to be re-run bit for bit: input hash, versions, device, threads, seed.

:func:`asirp.restore` records :func:`record_run` in every :class:`asirp.Restoration`
(``Restoration.provenance()``), and ``asirp replay RESULT.h5`` (:mod:`asirp.replay`) re-runs
it. Floating-point results depend on more than the method and its parameters:

- the **input**, identified by :func:`array_sha256` (its values, dtype and shape);
- the **PSF**: a beam or a Gaussian is described exactly by its numbers (``psf_description``);
  an array or file PSF is recorded as given (``psf_given``, float64 values, exact in JSON),
  because normalising it again from the float32 PSF that was used does not always give the
  same float32 values back (3 of 2,000 random kernels differed in the last bit);
- the **libraries** (:func:`library_versions`) and the **device** (:func:`device_name`): another
  torch or another GPU may order its sums differently;
- the **thread count** of torch, the compiled kernels and BLAS: a reduction split over another
  number of threads adds in another order. The engine adapts the count to the free cores
  (:func:`asirp.threads.compute_threads`); a replay pins the recorded one
  (:func:`asirp.threads.fixed_threads`);
- the **seed** of the methods that draw random numbers (:data:`SEEDED_METHODS`, and the split
  of ``auto``), each from its own generator, never from global state.

This module imports no method and no file reader: it sits in the core's lower layers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from asirp._version import __version__

HASH_FORMAT = "asirp-array-sha256-v1"
"""Tag hashed before an array's header: a change of the canonical form changes every hash."""

LIBRARIES = ("numpy", "scipy", "torch", "numba", "h5py")
"""Libraries whose versions are recorded besides asirp's and Python's."""

SEEDED_METHODS = frozenset({"unsupervised_wiener", "blind_richardson_lucy", "zssr"})
"""Built-in methods whose result depends on ``seed`` (the Gibbs sampler, the beam-width search
on thinned counts, the network's weights and training crops); ``auto`` also uses it (the split).
``tests/asirp/test_replay.py`` checks that the other built-in methods ignore the seed."""


def array_sha256(array: Any) -> str:
    """SHA-256 of an array's values in a canonical form, with its dtype and shape.

    The bytes hashed are ``HASH_FORMAT``, the dtype in little-endian form (``numpy.dtype.str``,
    e.g. ``"<f4"``) and the shape, each followed by a newline, then the values in C order,
    little-endian. So the same values give the same hash whatever the memory layout (C or
    Fortran order, a strided view) or byte order of the file they were read from, and the same
    bytes under another dtype or shape give another hash.

    Parameters
    ----------
    array : array_like
        Any real or complex numeric array (or bool), any shape.

    Returns
    -------
    str
        64 hexadecimal digits.

    Raises
    ------
    TypeError
        For arrays of objects, strings or other non-numeric dtypes.
    """
    values = np.asarray(array)
    if values.dtype.kind not in "biufc":
        raise TypeError(f"can hash numeric arrays only, got dtype {values.dtype}")
    dtype = values.dtype.newbyteorder("<")
    canonical = np.ascontiguousarray(values, dtype=dtype)
    digest = hashlib.sha256()
    digest.update(f"{HASH_FORMAT}\n{dtype.str}\n{list(values.shape)}\n".encode("ascii"))
    digest.update(canonical.reshape(-1).view(np.uint8))
    return digest.hexdigest()


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of asirp, Python and :data:`LIBRARIES` (``"not installed"`` when absent)."""
    versions = {"asirp": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def device_name(device: str) -> str:
    """What computed, in words: the CPU model and its logical cores, or the GPU's name.

    Parameters
    ----------
    device : str
        A torch device string, ``"cpu"`` or ``"cuda[:N]"``.
    """
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"
    return f"{_cpu_model()}, {os.cpu_count() or 1} logical cores"


def json_safe(value: Any) -> Any:
    """``value`` in a JSON-serialisable form, for the record of the caller's keywords.

    Numbers, strings, booleans and None stay; numpy scalars become Python ones; tuples become
    lists; paths become strings; arrays become ``{"array_sha256", "shape", "dtype"}`` (not their
    values); anything else its ``repr``.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        return {
            "array_sha256": array_sha256(array),
            "shape": list(array.shape),
            "dtype": array.dtype.str,
        }
    return repr(value)


def record_run(
    image: Any,
    *,
    method_requested: str,
    params_requested: Mapping[str, Any],
    counts_gain_given: float | None,
    method: str,
    params_resolved: Mapping[str, Any],
    seed: int,
    device: str,
    threads: int | None,
    blas_threads: int | None,
    psf_given: np.ndarray | None,
) -> dict[str, Any]:
    """The replay record of one restoration (JSON-serialisable), for ``Restoration.run_record``.

    Parameters
    ----------
    image : array_like
        The input exactly as given to :func:`asirp.restore` ``(H, W)`` or ``(B, H, W)``.
    method_requested : str
        The ``method`` the caller asked for (``"auto"`` or a name).
    params_requested : mapping
        The caller's ``**params`` (method parameters, or ``auto``'s context), as given.
    counts_gain_given : float or None
        The caller's ``counts_gain``.
    method : str
        The method that ran (``auto``'s choice).
    params_resolved : mapping
        Its validated parameters with the defaults filled in: what a replay passes.
    seed : int
        :func:`asirp.restore`'s ``seed``.
    device : str
        The torch device that computed (``"cpu"``, ``"cuda"``).
    threads : int or None
        Threads of torch and the kernels (CPU runs), None on a GPU.
    blas_threads : int or None
        Threads of the BLAS pools.
    psf_given : numpy.ndarray or None
        An array or file PSF as given ``(h, w)``, before normalisation; None for a beam or
        Gaussian description (``psf_description`` holds their numbers).

    Returns
    -------
    dict
        ``method_requested``, ``params_requested``, ``params_resolved``, ``counts_gain_given``,
        ``input_sha256``, ``input_shape``, ``input_dtype``, ``versions``, ``device``,
        ``device_name``, ``threads``, ``blas_threads``, ``seed`` (None for a method that does
        not use it), ``replay_seed`` (the seed passed, always) and, for an array or file PSF,
        ``psf_given`` (``{"shape", "values"}``, float64 values as nested lists).
    """
    values = np.asarray(image)
    seeded = method_requested == "auto" or method in SEEDED_METHODS
    record: dict[str, Any] = {
        "method_requested": method_requested,
        "params_requested": json_safe(dict(params_requested)),
        "params_resolved": json_safe(dict(params_resolved)),
        "counts_gain_given": counts_gain_given,
        "input_sha256": array_sha256(values),
        "input_shape": list(values.shape),
        "input_dtype": values.dtype.str,
        "versions": dict(library_versions()),
        "device": device,
        "device_name": device_name(device),
        "threads": threads,
        "blas_threads": blas_threads,
        "seed": int(seed) if seeded else None,
        "replay_seed": int(seed),
    }
    if psf_given is not None:
        given = np.asarray(psf_given, dtype=np.float64)
        record["psf_given"] = {"shape": list(given.shape), "values": given.tolist()}
    return record

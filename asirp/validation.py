"""Checks on the images that enter the engine: shape, dtype, finiteness."""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_SIDE_PX = 4
"""Smallest map side the engine accepts, px."""
MAX_ABS_VALUE = 1e12
"""Largest magnitude accepted in a map: far above any counts or normalised intensity, and low
enough that float32 sums, squares and power spectra of 4096 x 4096 maps stay finite."""


def as_image_stack(image: Any, name: str = "image") -> tuple[np.ndarray, bool]:
    """Check an image or stack and return it as float32 ``(B, H, W)``.

    Parameters
    ----------
    image : array_like
        A 2-D map ``(H, W)`` or a 3-D stack ``(B, H, W)`` of real numbers (counts). Integer,
        boolean and floating dtypes are accepted and converted to float32.
    name : str
        What to call the array in error messages.

    Returns
    -------
    stack : numpy.ndarray
        ``(B, H, W)`` float32 (a new array; the input is never modified).
    was_2d : bool
        Whether the input was a single 2-D map.

    Raises
    ------
    TypeError
        For non-numeric or complex data.
    ValueError
        For a wrong number of dimensions, an empty array, a side below ``MIN_SIDE_PX``, or
        NaN/Inf values (also values too large for float32), or magnitudes above
        ``MAX_ABS_VALUE``.
    """
    if isinstance(image, str | bytes) or image is None:
        raise TypeError(f"{name} must be a numeric array, got {type(image).__name__}")
    array = np.asarray(image)
    if np.iscomplexobj(array):
        raise TypeError(
            f"{name} has complex dtype {array.dtype}; restoration needs real intensities "
            "(take the magnitude or the real part first)"
        )
    if not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
        or array.dtype == bool
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be 2-D (rows, columns) or 3-D (stack, rows, columns), got "
            f"{array.ndim}-D shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if min(array.shape[-2:]) < MIN_SIDE_PX:
        raise ValueError(
            f"{name} of shape {array.shape} is too small: each map needs at least "
            f"{MIN_SIDE_PX}x{MIN_SIDE_PX} pixels"
        )
    with np.errstate(over="ignore"):
        stack = np.array(array, dtype=np.float32, copy=True)
    bad = ~np.isfinite(stack)
    if bad.any():
        count = int(bad.sum())
        source_bad = ~np.isfinite(array.astype(np.float64)) if array.dtype.kind == "f" else bad
        what = "NaN or Inf" if source_bad.any() else "values beyond the float32 range"
        raise ValueError(
            f"{name} holds {count} {what} value(s) (first at index "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])}); mask or fill them before restoring"
        )
    peak = float(np.abs(stack).max())
    if peak > MAX_ABS_VALUE:
        raise ValueError(
            f"{name} holds values up to {peak:.3g}, beyond the {MAX_ABS_VALUE:.0e} that "
            "restoration handles in float32 (its sums and squares would overflow); rescale the "
            "map (to counts, or divide by a constant) before restoring"
        )
    was_2d = stack.ndim == 2
    return (stack[None] if was_2d else stack), was_2d


def check_seed(seed: Any) -> int:
    """Return ``seed`` as an int; refuse anything but an integer (bools included).

    Raises
    ------
    TypeError
        For a non-integer seed.
    """
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    return int(seed)


def check_cancel(cancel: Any) -> Any:
    """Return ``cancel`` if it can stop a restoration: None, or an object with ``is_set()``.

    Parameters
    ----------
    cancel : threading.Event or None
        Set from another thread to stop the work (any object with a callable ``is_set()``
        returning a truth value, such as :class:`threading.Event` or
        :class:`multiprocessing.Event`, is accepted).

    Raises
    ------
    TypeError
        For anything else (``True``, a string, a function...).
    """
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError(
            "cancel must be a threading.Event (or an object with is_set()), got "
            f"{type(cancel).__name__} {cancel!r:.60}"
        )
    return cancel


def check_progress(progress: Any) -> Any:
    """Return ``progress`` if it is None or callable (called with the fraction done, 0 to 1).

    Raises
    ------
    TypeError
        For a value that cannot be called.
    """
    if progress is not None and not callable(progress):
        raise TypeError(
            "progress must be a callable taking the fraction done (0 to 1), got "
            f"{type(progress).__name__} {progress!r:.60}"
        )
    return progress

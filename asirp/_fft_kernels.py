r"""The CPU FFT path of :class:`asirp.blur.BlurOperator`: in-place FFTs and compiled kernels.

Between two FFTs lies a handful of passes over megapixel arrays. Done as separate torch
operations, each pass allocates its result and reads and writes the whole array once more; the
kernels here (numba) fuse each step between two FFTs into one parallel pass (over image rows,
``prange``) that writes into arrays the operator keeps:

- :func:`place`: write a stack into a zero-padded FFT grid (the zeros too, as the in-place FFTs
  leave other values there), and :func:`take_window` the way back;
- :func:`multiply_spectrum`: the product with the transfer function (or its conjugate), in
  place;
- :func:`poisson_epilogue`: the prediction, the ratio of the data to it, and the ratio again on
  the zero-padded grid of the adjoint's FFT;
- :func:`update_epilogue`: the Richardson-Lucy update ``factor * H^T r / denominator``, the step
  from ``factor`` and its inner products (Biggs-Andrews acceleration);
- :func:`mirror_pad` and :func:`residual_sums_at`: the data residual of
  :func:`asirp.metrics.data_residual` for a non-separable PSF.

All arrays are C-contiguous numpy arrays, float32 (spectra complex64). Sums accumulate in
float64 per row and then add the rows in order, so results do not depend on the thread count.
Callers set the thread count (:func:`asirp.separable.use_torch_threads`); compilation is
cached like :mod:`asirp._kernels`.

The FFTs into reused arrays
---------------------------
``torch.fft.rfft2`` and ``irfft2`` return fresh tensors, and torch's ``out=`` only copies into
the given one. A fresh 1080² grid is 4.7 MB, whose first touch costs some 1150 page faults; at
about 4 µs a fault on a virtual machine (measured here), that is as long as the FFT itself, and
the allocator gives such blocks back to the system often enough that a 1024² Richardson-Lucy
call took 6000 faults. :class:`RealFFT2` therefore calls the FFT library under torch's CPU FFTs,
Intel MKL's DFTI interface (exported by ``libtorch_cpu``), directly: in place on a buffer the
caller keeps, the inverse as one 2-D complex-to-real transform (torch makes it a complex
transform into a fresh array and a real one). :func:`real_fft2_plan` gives ``None`` wherever
that library is not there or does not pass a self-test on first use (torch without MKL, another
platform, ``ASIRP_MKL_FFT=0``); callers then use torch's FFTs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from collections import OrderedDict

import numpy as np
import torch
from numba import njit, prange

from asirp._kernels import CACHED

_log = logging.getLogger(__name__)

_JIT = {"cache": CACHED, "fastmath": True, "nogil": True}

UPDATE_ONLY = 0
"""Mode of :func:`update_epilogue`: write ``out`` only."""
UPDATE_STEP = 1
"""Mode: also the step ``out - factor`` and ``sum(step * step)``."""
UPDATE_STEP_OVERLAP = 2
"""Mode: also ``sum(step * previous)``."""


@njit(parallel=True, **_JIT)
def place(src, grid, top, left, cols):
    """Write a ``(B, h, w)`` stack at ``(top, left)`` of an FFT grid, zeros around it.

    ``grid`` is ``(B, N0, P)`` with ``P >= cols``; its first ``cols`` columns of every row are
    written (the stack's window, and zeros elsewhere), the rest is left alone. Writing the zeros
    again each time lets the FFTs run in place on the grid.
    """
    batch, height, width = src.shape
    rows = grid.shape[1]
    for task in prange(batch * rows):
        b = task // rows
        r = task - b * rows
        target = grid[b, r]
        if r < top or r >= top + height:
            target[:cols] = 0.0
            continue
        target[:left] = 0.0
        target[left : left + width] = src[b, r - top]
        target[left + width : cols] = 0.0


@njit(parallel=True, **_JIT)
def take_window(grid, top, left, out):
    """``out[b, i, j] = grid[b, top + i, left + j]``: a window ``(B, h, w)`` of a grid."""
    batch, height, width = out.shape
    for task in prange(batch * height):
        b = task // height
        i = task - b * height
        out[b, i] = grid[b, top + i, left : left + width]


@njit(parallel=True, **_JIT)
def multiply_spectrum(spectrum, otf, conjugate):
    """``spectrum *= otf`` (or ``conj(otf)``), in place.

    ``spectrum`` is ``(B, N, M)`` complex64, ``otf`` ``(1, N, M)`` (shared by the stack) or
    ``(B, N, M)``.
    """
    batch, rows, width = spectrum.shape
    shared = otf.shape[0] == 1
    for task in prange(batch * rows):
        b = task // rows
        i = task - b * rows
        values, weights = spectrum[b, i], otf[0 if shared else b, i]
        if conjugate:
            for k in range(width):
                values[k] = values[k] * weights[k].conjugate()
        else:
            for k in range(width):
                values[k] = values[k] * weights[k]


# The loops below index row slices from 0: an index such as ``left + j`` keeps numba's
# negative-index wrap-around check in the loop, which stops its vectorisation (3 to 5 times
# slower, measured).


@njit(parallel=True, **_JIT)
def poisson_epilogue(blurred, top, left, data, background, prediction, ratio, grid, cols):
    """The prediction and the Poisson ratio from a blurred FFT grid, one pass.

    For the data window ``(H, W)`` at ``(top, left)`` of ``blurred`` ``(B, N0, >= N1)``:
    ``prediction = blurred + background``, ``ratio = data / max(prediction, 1e-12)``, and the
    ratio again in the same window of ``grid`` ``(B, N0, P)``, the adjoint's FFT input, whose
    first ``cols`` columns are written (zeros outside the window, as :func:`place`). ``data``,
    ``prediction``, ``ratio`` are ``(B, H, W)``. ``grid`` may be ``blurred``: each row is read
    before it is written.
    """
    batch, height, width = data.shape
    rows = grid.shape[1]
    tiny = np.float32(1e-12)
    for task in prange(batch * rows):
        b = task // rows
        r = task - b * rows
        padded = grid[b, r]
        if r < top or r >= top + height:
            padded[:cols] = 0.0
            continue
        i = r - top
        source = blurred[b, r, left : left + width]
        window = padded[left : left + width]
        measured, predicted, quotient = data[b, i], prediction[b, i], ratio[b, i]
        for j in range(width):
            value = source[j] + background
            predicted[j] = value
            q = measured[j] / max(value, tiny)
            quotient[j] = q
            window[j] = q
        padded[:left] = 0.0
        padded[left + width : cols] = 0.0


@njit(parallel=True, **_JIT)
def update_epilogue(back, factor, denominator, out, step, previous, mode):
    """``out = factor * back / denominator`` on the object grid, and the step's products.

    ``back`` is the adjoint's FFT grid ``(B, N0, N1)``, read in its ``(H_o, W_o)`` top-left
    window; ``factor``, ``out``, ``step``, ``previous`` are ``(B, H_o, W_o)``, ``denominator``
    ``(1, H_o, W_o)`` (shared) or ``(B, H_o, W_o)``. With ``mode`` :data:`UPDATE_STEP` or
    :data:`UPDATE_STEP_OVERLAP`, also ``step = out - factor`` (the update's step) and, per
    map, ``sum(step * step)`` and (overlap mode) ``sum(step * previous)``; the unused arrays may
    be any ``(B, H_o, W_o)`` float32 arrays (``out``). ``out`` may be ``factor``.

    Returns
    -------
    numpy.ndarray
        ``(B, 2)`` float64: the two sums per map (zeros where not computed).
    """
    batch, height, width = out.shape
    shared = denominator.shape[0] == 1
    per_row = np.zeros((batch * height, 2))
    for task in prange(batch * height):
        b = task // height
        i = task - b * height
        source, weight = back[b, i, :width], factor[b, i]
        below, result = denominator[0 if shared else b, i], out[b, i]
        if mode == UPDATE_ONLY:
            for j in range(width):
                result[j] = weight[j] * source[j] / below[j]
            continue
        change, earlier = step[b, i], previous[b, i]
        energy = 0.0
        overlap = 0.0
        if mode == UPDATE_STEP_OVERLAP:
            for j in range(width):
                before = weight[j]
                value = before * source[j] / below[j]
                difference = value - before
                result[j] = value
                change[j] = difference
                energy += np.float64(difference) * np.float64(difference)
                overlap += np.float64(difference) * np.float64(earlier[j])
        else:
            for j in range(width):
                before = weight[j]
                value = before * source[j] / below[j]
                difference = value - before
                result[j] = value
                change[j] = difference
                energy += np.float64(difference) * np.float64(difference)
        per_row[task, 0] = energy
        per_row[task, 1] = overlap
    sums = np.zeros((batch, 2))
    for task in range(batch * height):  # in row order: independent of the thread count
        sums[task // height, 0] += per_row[task, 0]
        sums[task // height, 1] += per_row[task, 1]
    return sums


@njit(**_JIT)
def _mirror(k, size):
    """Index of the mirrored (edge pixel repeated) continuation of ``range(size)`` at ``k``."""
    k = k % (2 * size)
    return k if k < size else 2 * size - 1 - k


@njit(parallel=True, **_JIT)
def mirror_pad(image, grid, pad_y, pad_x):
    """Write the ``(H + 2 pad_y, W + 2 pad_x)`` mirrored extension of ``image`` into ``grid``.

    ``image`` is ``(H, W)``; the extension is ``numpy.pad(image, mode="symmetric")`` (repeated
    as often as the pads need) at the top left of ``grid`` ``(N0, N1)``, and every other pixel of
    ``grid`` is set to zero (so a fresh ``numpy.empty`` grid will do).
    """
    height, width = image.shape
    rows, cols = grid.shape
    used_rows, used_cols = height + 2 * pad_y, width + 2 * pad_x
    for p in prange(rows):
        target = grid[p]
        if p >= used_rows:
            for q in range(cols):
                target[q] = 0.0
            continue
        source = image[_mirror(p - pad_y, height)]
        for q in range(min(pad_x, cols)):
            target[q] = source[_mirror(q - pad_x, width)]
        target[pad_x : pad_x + width] = source
        for q in range(pad_x + width, used_cols):
            target[q] = source[_mirror(q - pad_x, width)]
        for q in range(used_cols, cols):
            target[q] = 0.0


@njit(parallel=True, **_JIT)
def residual_sums_at(data, blurred, top, left, background):
    """``(sum (data - blurred - background)**2, sum data**2)`` (float64) over the data window.

    ``data`` is ``(H, W)``; ``blurred`` ``(N0, N1)`` is read in its window at ``(top, left)``.
    """
    height, width = data.shape
    per_row = np.zeros((height, 2))
    for i in prange(height):
        measured, predicted = data[i], blurred[top + i, left : left + width]
        misfit = 0.0
        energy = 0.0
        for j in range(width):
            value = np.float64(measured[j])
            difference = value - np.float64(predicted[j]) - background
            misfit += difference * difference
            energy += value * value
        per_row[i, 0] = misfit
        per_row[i, 1] = energy
    misfit = 0.0
    energy = 0.0
    for i in range(height):
        misfit += per_row[i, 0]
        energy += per_row[i, 1]
    return misfit, energy


# --- 2-D real FFTs through MKL's DFTI -------------------------------------------------------------

MKL_VARIABLE = "ASIRP_MKL_FFT"
"""Environment variable: ``0`` keeps the FFTs on torch (see the module notes)."""

PLAN_CACHE_SIZE = 8
"""FFT plans kept per thread (one per batch size, grid and thread count)."""

# Values of MKL's mkl_dfti.h (enum DFTI_CONFIG_PARAM and DFTI_CONFIG_VALUE), stable across
# releases. The self-test of _dfti_library checks them against torch.fft.
_DFTI_BACKWARD_SCALE = 5
_DFTI_NUMBER_OF_TRANSFORMS = 7
_DFTI_CONJUGATE_EVEN_STORAGE = 10
_DFTI_PLACEMENT = 11
_DFTI_INPUT_STRIDES = 12
_DFTI_OUTPUT_STRIDES = 13
_DFTI_INPUT_DISTANCE = 14
_DFTI_OUTPUT_DISTANCE = 15
_DFTI_THREAD_LIMIT = 27
_DFTI_REAL = 33
_DFTI_COMPLEX_COMPLEX = 39
_DFTI_INPLACE = 43

_library_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_library_checked = False
_plans = threading.local()


class RealFFT2:
    """In-place 2-D real FFTs of float32 ``(B, N0, N1)`` stacks, by MKL's DFTI.

    The same transforms as ``torch.fft.rfft2`` and ``torch.fft.irfft2(..., s=(N0, N1))``
    (``"backward"`` normalisation: the inverse is scaled by ``1 / (N0 N1)``), in place on a
    buffer ``(B, N0, P)`` float32 with ``P = 2 (N1 // 2 + 1)``: the real maps are its first
    ``N1`` columns, the half spectrum ``(B, N0, N1 // 2 + 1)`` complex64 is the same memory
    (:meth:`spectrum`). In place, one buffer serves a whole convolution (half the memory
    traffic of out-of-place transforms, measured 7-10 % faster). Made by
    :func:`real_fft2_plan`.

    Parameters
    ----------
    library : ctypes.CDLL
        The library exporting DFTI (``libtorch_cpu``).
    batch : int
        ``B``, maps per call.
    shape : (int, int)
        ``(N0, N1)``, the FFT grid.
    threads : int
        Most threads one transform may use (torch's count when the plan is made).
    """

    def __init__(self, library: ctypes.CDLL, batch: int, shape: tuple[int, int], threads: int):
        self._library = library
        self.batch = int(batch)
        self.shape = (int(shape[0]), int(shape[1]))
        self.half = self.shape[1] // 2 + 1
        self.padded = 2 * self.half
        self._handles: list[ctypes.c_void_p] = []
        real = (self.padded, 1, self.shape[0] * self.padded)  # row stride, column, map (floats)
        half = (self.half, 1, self.shape[0] * self.half)  # the same, in complex elements
        self._forward = self._descriptor(real, half, threads, scale=None)
        self._backward = self._descriptor(half, real, threads, 1.0 / (shape[0] * shape[1]))

    def _check(self, status: int) -> None:
        if status != 0:
            self._library.DftiErrorMessage.restype = ctypes.c_char_p
            message = self._library.DftiErrorMessage(ctypes.c_long(status))
            raise RuntimeError(f"MKL DFTI error {status}: {message!r}")

    def _descriptor(
        self, source: tuple, target: tuple, threads: int, scale: float | None
    ) -> ctypes.c_void_p:
        """A committed in-place 2-D real descriptor from layout ``source`` to ``target``.

        A layout is ``(row stride, column stride, distance between maps)`` in elements (real
        or complex); the backward one has ``scale``.
        """
        lib, long = self._library, ctypes.c_long
        handle = ctypes.c_void_p()
        lengths = (long * 2)(*self.shape)
        self._check(
            lib.DftiCreateDescriptor_s_md(ctypes.byref(handle), long(_DFTI_REAL), long(2), lengths)
        )
        self._handles.append(handle)
        settings = [
            (_DFTI_CONJUGATE_EVEN_STORAGE, long(_DFTI_COMPLEX_COMPLEX)),
            (_DFTI_PLACEMENT, long(_DFTI_INPLACE)),
            (_DFTI_INPUT_STRIDES, (long * 3)(0, source[0], source[1])),
            (_DFTI_OUTPUT_STRIDES, (long * 3)(0, target[0], target[1])),
            (_DFTI_NUMBER_OF_TRANSFORMS, long(self.batch)),
            (_DFTI_INPUT_DISTANCE, long(source[2])),
            (_DFTI_OUTPUT_DISTANCE, long(target[2])),
            (_DFTI_THREAD_LIMIT, long(max(1, threads))),
        ]
        if scale is not None:  # a variadic float argument is passed as a double
            settings.append((_DFTI_BACKWARD_SCALE, ctypes.c_double(scale)))
        for name, value in settings:
            self._check(lib.DftiSetValue(handle, long(name), value))
        self._check(lib.DftiCommitDescriptor(handle))
        return handle

    def buffer(self) -> torch.Tensor:
        """A new (uninitialised) buffer ``(B, N0, P)`` float32 for this plan."""
        return torch.empty((self.batch, self.shape[0], self.padded))

    def _pointer(self, buffer: torch.Tensor) -> ctypes.c_void_p:
        shape = (self.batch, self.shape[0], self.padded)
        if (
            buffer.dtype != torch.float32
            or tuple(buffer.shape) != shape
            or not buffer.is_contiguous()
            or buffer.device.type != "cpu"
        ):
            raise ValueError(
                f"expected a contiguous float32 CPU buffer of shape {shape}, got "
                f"{buffer.dtype} {tuple(buffer.shape)}"
            )
        return ctypes.c_void_p(buffer.data_ptr())

    def spectrum(self, buffer: torch.Tensor) -> torch.Tensor:
        """The buffer as the half spectrum ``(B, N0, N1 // 2 + 1)`` complex64 (a view)."""
        return buffer.view(torch.complex64)

    def forward(self, buffer: torch.Tensor) -> None:
        """``rfft2`` of the maps in the buffer's first ``N1`` columns, into the buffer."""
        self._check(self._library.DftiComputeForward(self._forward, self._pointer(buffer)))

    def backward(self, buffer: torch.Tensor) -> None:
        """``irfft2`` of the half spectrum in the buffer, into its first ``N1`` columns."""
        self._check(self._library.DftiComputeBackward(self._backward, self._pointer(buffer)))

    def __del__(self) -> None:
        free = getattr(getattr(self, "_library", None), "DftiFreeDescriptor", None)
        for handle in getattr(self, "_handles", ()):
            if free is not None and handle:
                free(ctypes.byref(handle))
        self._handles = []


def _load_library() -> ctypes.CDLL | None:
    """``libtorch_cpu`` when it exports DFTI and we may use it, else None."""
    if os.environ.get(MKL_VARIABLE, "1").strip() == "0":
        return None
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None  # torch's MKL builds; ctypes' variadic calls are safe on this ABI
    if not torch.backends.mkl.is_available():
        return None
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        library = ctypes.CDLL(path)  # already loaded by torch: this only finds it
    except OSError:
        return None
    names = (
        "DftiCreateDescriptor_s_md",
        "DftiSetValue",
        "DftiCommitDescriptor",
        "DftiComputeForward",
        "DftiComputeBackward",
        "DftiFreeDescriptor",
        "DftiErrorMessage",
    )
    if not all(hasattr(library, name) for name in names):
        return None
    library.DftiCommitDescriptor.argtypes = [ctypes.c_void_p]
    library.DftiFreeDescriptor.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    return library


def _passes_self_test(library: ctypes.CDLL) -> bool:
    """Whether a small batch of transforms agrees with torch.fft (rounding only)."""
    generator = torch.Generator().manual_seed(0)
    real = torch.rand((2, 6, 10), generator=generator)
    plan = RealFFT2(library, 2, (6, 10), 1)
    buffer = plan.buffer()
    buffer[..., :10] = real
    plan.forward(buffer)
    expected = torch.fft.rfft2(real)
    spectrum_ok = torch.allclose(plan.spectrum(buffer), expected, rtol=1e-5, atol=1e-5)
    plan.backward(buffer)
    return bool(spectrum_ok and torch.allclose(buffer[..., :10], real, rtol=1e-5, atol=1e-5))


def _dfti_library() -> ctypes.CDLL | None:
    """The DFTI library, loaded and self-tested once per process; None where unusable."""
    global _library, _library_checked
    if _library_checked:
        return _library
    with _library_lock:
        if not _library_checked:
            library = None
            try:
                library = _load_library()
                if library is not None and not _passes_self_test(library):
                    _log.warning("MKL DFTI disagrees with torch.fft; using torch's FFTs")
                    library = None
            except (OSError, RuntimeError, ValueError, AttributeError) as error:
                _log.warning("MKL DFTI unusable (%s); using torch's FFTs", error)
                library = None
            _library = library
            _library_checked = True
    return _library


def real_fft2_plan(batch: int, shape: tuple[int, int]) -> RealFFT2 | None:
    """A :class:`RealFFT2` for ``batch`` maps on grid ``shape``, or None (use torch.fft).

    Plans are kept per thread (the descriptors are not shared between threads) and per torch
    thread count at the time of the call (a plan's thread limit is fixed when it is made); the
    last :data:`PLAN_CACHE_SIZE` of a thread are kept.
    """
    library = _dfti_library()
    if library is None:
        return None
    threads = torch.get_num_threads()
    key = (int(batch), (int(shape[0]), int(shape[1])), threads)
    cache: OrderedDict | None = getattr(_plans, "cache", None)
    if cache is None:
        cache = _plans.cache = OrderedDict()
    plan = cache.get(key)
    if plan is None:
        plan = cache[key] = RealFFT2(library, *key)
        while len(cache) > PLAN_CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return plan

r"""Compiled CPU kernels (numba): separable convolutions and the per-pixel image figures.

Everything here works on float32 numpy arrays (C-contiguous) and is parallel over image rows
(``prange``), with ``cache=True`` so that the first-call compilation (a few seconds per kernel)
is paid once per machine. Callers choose the thread count (:func:`numba.set_num_threads`); the
public entry points are :func:`asirp.separable.SeparableBlur` and :mod:`asirp.metrics`.

Where the compiled kernels are cached
-------------------------------------
numba caches next to this file (``__pycache__``), in ``NUMBA_CACHE_DIR`` when set, or in the
user's cache folder (``~/.cache/numba``), and refuses to compile a ``cache=True`` function when
none of them is writable (a read-only installation run by a user whose home is not writable, as
service accounts often are). :func:`_configure_cache` checks this once, before the kernels are
defined: when no default location is writable, the cache goes to a private per-user folder under
the temporary directory (``asirp-numba-cache-<uid>``, mode 0700, owned by the user; a folder of
that name that someone else owns or could write is not used, a fresh private one is made
instead), through ``NUMBA_CACHE_DIR``. Only if that fails too do the kernels run uncached
(compiled again in every process), with one :class:`RuntimeWarning`.

Separable correlation
---------------------
For taps ``ty`` (``ny``) and ``tx`` (``nx``) and shifts ``sy``, ``sx`` the kernels compute, for
each map ``b`` of a stack,

.. math:: \mathrm{out}[b, i, j] = \sum_{a < n_y} \sum_{c < n_x} t_y[a] \, t_x[c] \,
          \mathrm{src}[b, i + a - s_y, j + c - s_x]

where ``src`` continues past its edges as zero (``EDGE_ZERO``), periodically
(``EDGE_PERIODIC``) or mirrored with the edge pixel repeated (``EDGE_SYMMETRIC``,
``d c b a | a b c d``). Four output rows at a time: the column pass sums the ``ny`` source
rows of each into a line buffer (kept in the L1/L2 cache; a source row loaded once serves the four
lines), the line's margins are filled by the edge rule, and the row pass sums ``nx`` shifted views
of the line. Taps are applied four at a time so each vectorised loop writes its destination once
per four taps. The passes are bound by loads from the cache, not by arithmetic.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import warnings

import numba
import numpy as np
from numba import njit, prange

_log = logging.getLogger(__name__)

CACHE_FOLDER_PREFIX = "asirp-numba-cache"
"""Name of the fallback cache folder under the temporary directory (``-<uid>`` appended)."""


def _cache_probe() -> None:
    """A function of this file whose cache location numba is asked for (never compiled)."""


def _numba_can_cache() -> bool:
    """Whether numba finds a writable cache location for this file (its own locator search)."""
    try:
        from numba.core.caching import FunctionCache

        FunctionCache(_cache_probe)
    except RuntimeError:
        return False
    except Exception:  # numba's internals moved: keep its default behaviour
        return True
    return True


def _private_folder(path: str) -> bool:
    """Whether ``path`` is a real folder owned by this user that nobody else can write."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False  # a symbolic link or a file: someone else may control where it leads
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False
    return not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _fallback_cache_folder() -> str | None:
    """A private per-user cache folder under the temporary directory, or None."""
    user = os.getuid() if hasattr(os, "getuid") else os.getpid()
    base = tempfile.gettempdir()
    shared = os.path.join(base, f"{CACHE_FOLDER_PREFIX}-{user}")
    try:
        os.mkdir(shared, 0o700)
    except FileExistsError:
        pass
    except OSError:
        shared = ""
    if shared and _private_folder(shared):
        return shared
    # Another user made (or could write) the shared name: cached files are loaded as code, so
    # use a fresh folder of our own (the cache then lasts for this process only).
    try:
        return tempfile.mkdtemp(prefix=f"{CACHE_FOLDER_PREFIX}-{user}-")
    except OSError:
        return None


def _configure_cache() -> bool:
    """Make sure numba can cache the kernels; return whether they are cached.

    Runs once at import, before any kernel is defined. When numba finds a writable location
    (next to this file, ``NUMBA_CACHE_DIR``, the user's cache folder) nothing changes. Otherwise
    ``NUMBA_CACHE_DIR`` is pointed at :func:`_fallback_cache_folder` (also for child processes);
    if no such folder can be made, the kernels run uncached with one :class:`RuntimeWarning`.

    Returns
    -------
    bool
        True when ``cache=True`` can be used.
    """
    if _numba_can_cache():
        return True
    folder = _fallback_cache_folder()
    if folder is not None:
        previous = numba.config.CACHE_DIR
        os.environ["NUMBA_CACHE_DIR"] = folder
        numba.config.CACHE_DIR = folder
        if _numba_can_cache():
            _log.info("numba cache: no default location is writable; using %s", folder)
            return True
        numba.config.CACHE_DIR = previous
        if previous:
            os.environ["NUMBA_CACHE_DIR"] = previous
        else:
            os.environ.pop("NUMBA_CACHE_DIR", None)
    warnings.warn(
        "asirp: no writable folder for numba's compiled-kernel cache (next to "
        f"{os.path.dirname(__file__)}, NUMBA_CACHE_DIR, the home cache folder or the temporary "
        "directory); the kernels are compiled again in every process (a few seconds each). "
        "Set NUMBA_CACHE_DIR to a writable folder to keep them",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


CACHED = _configure_cache()
"""Whether the compiled kernels are cached on disk (see the module notes)."""

EDGE_ZERO = 0
"""Pixels past the source's edges are zero."""
EDGE_PERIODIC = 1
"""The source repeats (circular convolution)."""
EDGE_SYMMETRIC = 2
"""The source is mirrored about its edges, edge pixel repeated (``numpy.pad(mode="symmetric")``,
``scipy.ndimage`` ``mode="reflect"``)."""

PLAIN = 0
"""Epilogue of :func:`correlate_separable`: ``out = corr(src)``."""
POISSON_RATIO = 1
"""Epilogue: ``out = corr(src) + background`` (the prediction), ``second = first / max(out,
1e-12)``."""
MULTIPLICATIVE = 2
"""Epilogue: ``out = first * corr(src) / second`` (``second`` may be shared by the stack)."""
MULTIPLICATIVE_STEP = 3
"""Epilogue: ``MULTIPLICATIVE``, then ``step = out - first`` and, per output row, the sums
``step * step`` and ``step * previous`` into ``row_sums`` (the products of Biggs-Andrews
acceleration, in the same pass)."""
DIVIDE_FLOOR = 4
"""Epilogue: ``out = max(corr(src) / second, background)`` (the smooth initial estimate)."""

ROW_BLOCK = 16
"""Output rows per parallel task (a multiple of 4)."""

_JIT = {"cache": CACHED, "fastmath": True, "nogil": True}


# --- building blocks of the separable correlation -------------------------------------------


@njit(**_JIT)
def _taps4(dst, s0, s1, s2, s3, c0, c1, c2, c3, accumulate):
    """``dst (+)= c0 s0 + c1 s1 + c2 s2 + c3 s3`` over ``dst.size`` elements."""
    if accumulate:
        for t in range(dst.size):
            dst[t] += c0 * s0[t] + c1 * s1[t] + c2 * s2[t] + c3 * s3[t]
    else:
        for t in range(dst.size):
            dst[t] = c0 * s0[t] + c1 * s1[t] + c2 * s2[t] + c3 * s3[t]


@njit(**_JIT)
def _taps1(dst, s0, c0, accumulate):
    """``dst (+)= c0 s0`` over ``dst.size`` elements."""
    if accumulate:
        for t in range(dst.size):
            dst[t] += c0 * s0[t]
    else:
        for t in range(dst.size):
            dst[t] = c0 * s0[t]


@njit(**_JIT)
def _four_rows_taps4(d0, d1, d2, d3, s0, s1, s2, s3, s4, s5, s6, c0, c1, c2, c3, accumulate):
    """Four taps for four consecutive output rows from seven consecutive source rows.

    ``d_k (+)= c0 s_k + c1 s_{k+1} + c2 s_{k+2} + c3 s_{k+3}``: each source row is loaded once
    for the four outputs (the column pass is bound by loads, not arithmetic).
    """
    if accumulate:
        for t in range(d0.size):
            x0, x1, x2, x3, x4, x5, x6 = s0[t], s1[t], s2[t], s3[t], s4[t], s5[t], s6[t]
            d0[t] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
            d1[t] += c0 * x1 + c1 * x2 + c2 * x3 + c3 * x4
            d2[t] += c0 * x2 + c1 * x3 + c2 * x4 + c3 * x5
            d3[t] += c0 * x3 + c1 * x4 + c2 * x5 + c3 * x6
    else:
        for t in range(d0.size):
            x0, x1, x2, x3, x4, x5, x6 = s0[t], s1[t], s2[t], s3[t], s4[t], s5[t], s6[t]
            d0[t] = c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
            d1[t] = c0 * x1 + c1 * x2 + c2 * x3 + c3 * x4
            d2[t] = c0 * x2 + c1 * x3 + c2 * x4 + c3 * x5
            d3[t] = c0 * x3 + c1 * x4 + c2 * x5 + c3 * x6


@njit(**_JIT)
def _four_rows_taps1(d0, d1, d2, d3, s0, s1, s2, s3, c0, accumulate):
    """One tap for four consecutive output rows: ``d_k (+)= c0 s_k``."""
    if accumulate:
        for t in range(d0.size):
            d0[t] += c0 * s0[t]
            d1[t] += c0 * s1[t]
            d2[t] += c0 * s2[t]
            d3[t] += c0 * s3[t]
    else:
        for t in range(d0.size):
            d0[t] = c0 * s0[t]
            d1[t] = c0 * s1[t]
            d2[t] = c0 * s2[t]
            d3[t] = c0 * s3[t]


@njit(**_JIT)
def _source_index(k, size, edge):
    """Index into a source axis of ``size`` for position ``k`` under the edge rule; -1 = zero."""
    if 0 <= k < size:
        return k
    if edge == EDGE_ZERO:
        return -1
    if edge == EDGE_PERIODIC:
        return k % size
    folded = k % (2 * size)
    return 2 * size - 1 - folded if folded >= size else folded


@njit(**_JIT)
def _column_pass_one(src, b, i, ty, sy, edge, rows, coefs, dst, lo, hi):
    """Column pass of output row ``i`` into ``dst``: source columns ``lo:hi``, any edge rule."""
    count = 0
    for a in range(ty.size):
        row = _source_index(i + a - sy, src.shape[1], edge)
        if row >= 0:
            rows[count] = row
            coefs[count] = ty[a]
            count += 1
    g = 0
    while g + 4 <= count:
        _taps4(
            dst,
            src[b, rows[g], lo:hi],
            src[b, rows[g + 1], lo:hi],
            src[b, rows[g + 2], lo:hi],
            src[b, rows[g + 3], lo:hi],
            coefs[g],
            coefs[g + 1],
            coefs[g + 2],
            coefs[g + 3],
            g > 0,
        )
        g += 4
    while g < count:
        _taps1(dst, src[b, rows[g], lo:hi], coefs[g], g > 0)
        g += 1
    if count == 0:
        dst[:] = 0.0


@njit(**_JIT)
def _column_pass_four(src, b, rows, ty, lines, start, stop, lo, hi):
    """Column pass of four consecutive output rows; ``rows``: their ``ny + 3`` source rows."""
    d0, d1 = lines[0, start:stop], lines[1, start:stop]
    d2, d3 = lines[2, start:stop], lines[3, start:stop]
    g = 0
    while g + 4 <= ty.size:
        _four_rows_taps4(
            d0,
            d1,
            d2,
            d3,
            src[b, rows[g], lo:hi],
            src[b, rows[g + 1], lo:hi],
            src[b, rows[g + 2], lo:hi],
            src[b, rows[g + 3], lo:hi],
            src[b, rows[g + 4], lo:hi],
            src[b, rows[g + 5], lo:hi],
            src[b, rows[g + 6], lo:hi],
            ty[g],
            ty[g + 1],
            ty[g + 2],
            ty[g + 3],
            g > 0,
        )
        g += 4
    while g < ty.size:
        _four_rows_taps1(
            d0,
            d1,
            d2,
            d3,
            src[b, rows[g], lo:hi],
            src[b, rows[g + 1], lo:hi],
            src[b, rows[g + 2], lo:hi],
            src[b, rows[g + 3], lo:hi],
            ty[g],
            g > 0,
        )
        g += 1


@njit(**_JIT)
def _row_pass(line, start, stop, sx, width, edge, tx, out_row):
    """Fill the line's margins by the edge rule, then ``out_row[j] = sum_c tx[c] line[j + c]``."""
    for t in range(0, start):
        k = _source_index(t - sx, width, edge)
        line[t] = line[k + sx] if k >= 0 else 0.0
    for t in range(stop, line.size):
        k = _source_index(t - sx, width, edge)
        line[t] = line[k + sx] if k >= 0 else 0.0
    n_out = out_row.size
    c = 0
    while c + 4 <= tx.size:
        _taps4(
            out_row,
            line[c : c + n_out],
            line[c + 1 : c + 1 + n_out],
            line[c + 2 : c + 2 + n_out],
            line[c + 3 : c + 3 + n_out],
            tx[c],
            tx[c + 1],
            tx[c + 2],
            tx[c + 3],
            c > 0,
        )
        c += 4
    while c < tx.size:
        _taps1(out_row, line[c : c + n_out], tx[c], c > 0)
        c += 1


@njit(**_JIT)
def _finish_row(result, epilogue, first_row, second_row, background, step_row, previous_row, sums):
    """The element-wise epilogue of one output row (see :func:`correlate_separable`).

    ``sums`` (2,) float64 receives the row's step products for ``MULTIPLICATIVE_STEP``.
    """
    if epilogue == POISSON_RATIO:
        for j in range(result.size):
            value = result[j] + background
            result[j] = value
            second_row[j] = first_row[j] / max(value, np.float32(1e-12))
    elif epilogue == MULTIPLICATIVE:
        for j in range(result.size):
            result[j] = first_row[j] * result[j] / second_row[j]
    elif epilogue == MULTIPLICATIVE_STEP:
        energy = 0.0
        overlap = 0.0
        for j in range(result.size):
            value = first_row[j] * result[j] / second_row[j]
            result[j] = value
            difference = value - first_row[j]
            overlap += np.float64(difference) * np.float64(previous_row[j])
            step_row[j] = difference  # after reading previous_row: they may be the same row
            energy += np.float64(difference) * np.float64(difference)
        sums[0] = energy
        sums[1] = overlap
    elif epilogue == DIVIDE_FLOOR:
        for j in range(result.size):
            result[j] = max(result[j] / second_row[j], background)


# --- separable correlation entry point ----------------------------------------------------------


_NO_ROW_SUMS = np.zeros((1, 2))


def correlate_separable(src, ty, tx, sy, sx, edge, out, epilogue, first, second, background):
    """:func:`correlate_separable_steps` for the epilogues that need no step arrays."""
    correlate_separable_steps(
        src, ty, tx, sy, sx, edge, out, epilogue, first, second, background, out, out, _NO_ROW_SUMS
    )


@njit(parallel=True, **_JIT)
def correlate_separable_steps(
    src, ty, tx, sy, sx, edge, out, epilogue, first, second, background, step, previous, row_sums
):
    """``corr(src)`` (see the module notes) into ``out``, then an element-wise epilogue per row.

    Parameters
    ----------
    src : numpy.ndarray
        ``(B, Hs, Ws)`` float32.
    ty, tx : numpy.ndarray
        Taps along rows and columns, float32.
    sy, sx : int
        Shifts; ``sx >= 0`` and, for the non-zero edge rules, ``W + tx.size - 1 >= Ws + sx``.
    edge : int
        ``EDGE_ZERO``, ``EDGE_PERIODIC`` or ``EDGE_SYMMETRIC``.
    out : numpy.ndarray
        ``(B, H, W)`` float32, written.
    epilogue : int
        ``PLAIN``, ``POISSON_RATIO`` (``first``: the data, read; ``second``: the ratio, written),
        ``MULTIPLICATIVE`` (``first``: the factor, read; ``second``: the denominator,
        ``(B, H, W)`` or ``(1, H, W)``, read), ``MULTIPLICATIVE_STEP`` (as ``MULTIPLICATIVE``;
        also ``step`` written, ``previous`` and ``row_sums`` used) or ``DIVIDE_FLOOR``
        (``second``: the divisor, ``(B or 1, H, W)``; ``background``: the floor). Unused arrays
        may be any float32 3-D array (``row_sums``: any float64 2-D array).
    first, second : numpy.ndarray
        See ``epilogue``; ``(B, H, W)`` float32.
    background : float32
        Added to the blur for ``POISSON_RATIO``; the floor of ``DIVIDE_FLOOR``.
    step, previous : numpy.ndarray
        ``MULTIPLICATIVE_STEP``: ``step = out - first`` (written) and the previous step (read;
        it may be ``step`` itself when its products are not wanted), ``(B, H, W)`` float32.
    row_sums : numpy.ndarray
        ``MULTIPLICATIVE_STEP``: ``(B * H, 2)`` float64, written with each output row's
        ``sum(step * step)`` and ``sum(step * previous)`` (rows of map ``b`` at ``b * H + i``;
        the caller adds them up in a fixed order, so the totals do not depend on the threads).

    Notes
    -----
    Each task takes ``ROW_BLOCK`` output rows of one map, four at a time where all their source
    rows exist (:func:`_column_pass_four`), else one at a time (near zero edges).
    """
    batch, height, width = out.shape
    src_height, src_width = src.shape[1], src.shape[2]
    n_line = width + tx.size - 1
    start = sx  # the line holds source column t - sx at t, in [start, stop)
    stop = min(n_line, src_width + sx)
    lo, hi = start - sx, stop - sx
    blocks = (height + ROW_BLOCK - 1) // ROW_BLOCK
    shared = second.shape[0] == 1
    for task in prange(batch * blocks):
        b = task // blocks
        i = (task - b * blocks) * ROW_BLOCK
        last = min(i + ROW_BLOCK, height)
        lines = np.zeros((4, n_line), dtype=np.float32)
        rows = np.empty(ty.size + 3, dtype=np.int64)
        coefs = np.empty(ty.size, dtype=np.float32)
        while i < last:
            count = 4 if i + 4 <= last else 1
            for a in range(ty.size + 3 if count == 4 else 0):
                rows[a] = _source_index(i + a - sy, src_height, edge)
                if rows[a] < 0:
                    count = 1
            if count == 4:
                _column_pass_four(src, b, rows, ty, lines, start, stop, lo, hi)
            else:
                _column_pass_one(src, b, i, ty, sy, edge, rows, coefs, lines[0, start:stop], lo, hi)
            for k in range(count):
                result = out[b, i + k]
                _row_pass(lines[k], start, stop, sx, src_width, edge, tx, result)
                if epilogue != PLAIN:
                    below = second[0 if shared else b, i + k]
                    stepping = epilogue == MULTIPLICATIVE_STEP
                    _finish_row(
                        result,
                        epilogue,
                        first[b, i + k],
                        below,
                        background,
                        step[b, i + k] if stepping else result,
                        previous[b, i + k] if stepping else result,
                        row_sums[b * height + i + k] if stepping else row_sums[0],
                    )
            i += count


# --- image figures ------------------------------------------------------------------------------


@njit(**_JIT)
def _pixel_terms(a, b, c, d, value, f, g, h, k, shift):
    """One pixel's terms of :func:`image_figures` from its 3 x 3 neighbourhood (float64).

    The neighbourhood is ``a b c`` (row above), ``d value f``, ``g h k`` (row below).
    """
    grad_y = ((g + 2.0 * h + k) - (a + 2.0 * b + c)) / 8.0
    grad_x = ((c + 2.0 * f + k) - (a + 2.0 * d + g)) / 8.0
    second = (a - 2.0 * b + c) - 2.0 * (d - 2.0 * value + f) + (g - 2.0 * h + k)
    return (
        value - shift,
        abs(value),
        (value - shift) * (value - shift),
        grad_y * grad_y + grad_x * grad_x,
        abs(second),
    )


@njit(**_JIT)
def _row_figures(up, row, down, shift, immerkaer, sums):
    """Add the terms of one row (``up``, ``down``: its neighbour rows, itself at the edges)."""
    width = row.size
    for j in (0, width - 1):  # mirrored columns: the edge pixel is its own neighbour
        left, right = max(j - 1, 0), min(j + 1, width - 1)
        terms = _pixel_terms(
            np.float64(up[left]),
            np.float64(up[j]),
            np.float64(up[right]),
            np.float64(row[left]),
            np.float64(row[j]),
            np.float64(row[right]),
            np.float64(down[left]),
            np.float64(down[j]),
            np.float64(down[right]),
            shift,
        )
        for q in range(4):  # the Immerkaer sum leaves out the edge columns
            sums[q] += terms[q]
    total = 0.0
    total_abs = 0.0
    total_square = 0.0
    sobel = 0.0
    second = 0.0
    for j in range(1, width - 1):  # interior columns: no branches, vectorised
        terms = _pixel_terms(
            np.float64(up[j - 1]),
            np.float64(up[j]),
            np.float64(up[j + 1]),
            np.float64(row[j - 1]),
            np.float64(row[j]),
            np.float64(row[j + 1]),
            np.float64(down[j - 1]),
            np.float64(down[j]),
            np.float64(down[j + 1]),
            shift,
        )
        total += terms[0]
        total_abs += terms[1]
        total_square += terms[2]
        sobel += terms[3]
        second += terms[4]
    sums[0] += total
    sums[1] += total_abs
    sums[2] += total_square
    sums[3] += sobel
    if immerkaer:
        sums[4] += second


@njit(parallel=True, **_JIT)
def image_figures(image):
    """Sums over a 2-D float32 map for the no-reference figures, accumulated in float64.

    Returns
    -------
    (float, float, float, float, float)
        ``sum(x - x0)``, ``sum(|x|)``, ``sum((x - x0)**2)`` (``x0 = image[0, 0]``, a shift that
        keeps the variance accurate), the Sobel energy ``sum(gy**2 + gx**2)`` and the Immerkaer
        sum ``sum(|image * K|)`` over the valid region, ``K = [1,-2,1]^T [1,-2,1]``.

    Notes
    -----
    ``gy`` is ``[-1, 0, 1]`` along rows by ``[1, 2, 1]`` along columns, divided by 8
    (``scipy.ndimage.sobel``, ``mode="reflect"``: for a 3-tap kernel the mirror is the edge
    pixel itself), ``gx`` the same transposed. The map must be at least 3 x 3.
    """
    height = image.shape[0]
    shift = np.float64(image[0, 0])
    per_row = np.zeros((height, 5))  # partial sums per row: no shared accumulators
    for i in prange(height):
        up = image[max(i - 1, 0)]
        down = image[min(i + 1, height - 1)]
        _row_figures(up, image[i], down, shift, 0 < i < height - 1, per_row[i])
    totals = np.zeros(5)
    for i in range(height):  # in row order: the result does not depend on the thread count
        for q in range(5):
            totals[q] += per_row[i, q]
    return totals[0], totals[1], totals[2], totals[3], totals[4]


@njit(parallel=True, **_JIT)
def residual_sums(data, predicted, background):
    """``(sum (data - predicted - background)**2, sum data**2)`` of two 2-D maps (float64)."""
    height, width = data.shape
    misfit = 0.0
    energy = 0.0
    for i in prange(height):
        row_misfit = 0.0
        row_energy = 0.0
        for j in range(width):
            measured = np.float64(data[i, j])
            difference = measured - np.float64(predicted[i, j]) - background
            row_misfit += difference * difference
            row_energy += measured * measured
        misfit += row_misfit
        energy += row_energy
    return misfit, energy


@njit(parallel=True, **_JIT)
def change_sums(data, restored):
    """``(sum (restored - data)**2, sum |data|)`` of two 2-D float32 maps, in float64.

    Row sums are added in row order, so the result does not depend on the thread count.
    """
    height, width = data.shape
    per_row = np.zeros((height, 2))
    for i in prange(height):
        square = 0.0
        level = 0.0
        for j in range(width):
            measured = np.float64(data[i, j])
            difference = np.float64(restored[i, j]) - measured
            square += difference * difference
            level += abs(measured)
        per_row[i, 0] = square
        per_row[i, 1] = level
    square = 0.0
    level = 0.0
    for i in range(height):
        square += per_row[i, 0]
        level += per_row[i, 1]
    return square, level


# --- element-wise steps of accelerated iterations ------------------------------------------------


@njit(parallel=True, **_JIT)
def extrapolate(estimate, previous, alpha, out):
    """``out = max(estimate + alpha[b] (estimate - previous), 0)``, all ``(B, H, W)`` float32.

    ``alpha`` is ``(B,)`` float32 (one factor per map); ``out`` may not alias the inputs.
    """
    batch, height, width = out.shape
    for task in prange(batch * height):
        b = task // height
        i = task - b * height
        factor = alpha[b]
        current, before, result = estimate[b, i], previous[b, i], out[b, i]
        for j in range(width):
            value = current[j] + factor * (current[j] - before[j])
            result[j] = max(value, np.float32(0.0))

r"""Separable PSFs: factorisation, the direct-or-FFT choice, and the direct (spatial) CPU blur.

A PSF that is an outer product :math:`p = u v^T` (a Gaussian beam, round or elliptical) blurs a
map with :math:`h + w` multiply-adds per pixel in two 1-D passes. For the beam sizes of scanning
maps (``h, w`` up to a few tens of pixels) that is several times cheaper on a CPU than the pair of
FFTs an FFT convolution needs, and it needs no padded FFT grid. :class:`SeparableBlur` applies
exactly the operator of :class:`asirp.blur.BlurOperator` (same boundaries, same object and data
grids) this way; :class:`~asirp.blur.BlurOperator` uses it on the CPU when
:func:`separable_factors` finds the PSF separable and :func:`direct_is_faster` says so.

The passes run in compiled kernels (:mod:`asirp._kernels`, numba) on as many threads as torch
uses (:func:`torch.get_num_threads`).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from asirp.threads import kernel_pool_wait_policy, kernel_threads

SEPARABLE_TOLERANCE = 1e-6
"""Largest relative L1 misfit ``sum |p - u v^T| / sum |p|`` accepted as separable.

A blur by the factorised PSF then differs from the exact one by at most this fraction of the
object's largest value: the float32 rounding level of an FFT convolution.
"""

DIRECT_TAPS_PER_FFT_LEVEL = 6.0
"""Cost model of :func:`direct_is_faster`: the direct blur wins while ``h + w`` is below this many
taps per ``log2`` of the FFT grid size (measured on 2 and 16 CPU cores: the two passes cost about
``h + w`` vectorised multiply-adds per pixel, an FFT convolution about ``2 log2 N`` butterflies per
grid point at a lower throughput)."""


def separable_factors(
    psf: np.ndarray | torch.Tensor, tolerance: float = SEPARABLE_TOLERANCE
) -> tuple[np.ndarray, np.ndarray] | None:
    """Column and row profiles ``(u, v)`` with ``psf = outer(u, v)``, or None if not separable.

    For a rank-one PSF the profiles are its row and column sums (``u = p.sum(1)``,
    ``v = p.sum(0) / p.sum()``); the PSF counts as separable when they reproduce it within
    ``tolerance`` (relative, L1).

    Parameters
    ----------
    psf : numpy.ndarray or torch.Tensor
        2-D PSF ``(h, w)``, any real dtype, non-zero sum.
    tolerance : float
        Largest accepted ``sum |psf - outer(u, v)| / sum |psf|``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray) or None
        ``u`` ``(h,)`` and ``v`` ``(w,)``, float32; None for a 3-D (per-image) or non-separable
        PSF.
    """
    if isinstance(psf, torch.Tensor):
        psf = psf.detach().to("cpu", torch.float64).numpy()
    kernel = np.asarray(psf, dtype=np.float64)
    if kernel.ndim != 2 or not np.all(np.isfinite(kernel)):
        return None
    total = kernel.sum()
    scale = np.abs(kernel).sum()
    if total == 0 or scale == 0:
        return None
    column = kernel.sum(axis=1)
    row = kernel.sum(axis=0) / total
    if np.abs(kernel - np.outer(column, row)).sum() > tolerance * scale:
        return None
    return column.astype(np.float32), row.astype(np.float32)


def direct_is_faster(psf_shape: tuple[int, int], fft_shape: tuple[int, int]) -> bool:
    """Whether a direct separable blur beats an FFT convolution on the CPU (cost model).

    Parameters
    ----------
    psf_shape : (int, int)
        ``(h, w)`` of the PSF, px.
    fft_shape : (int, int)
        The FFT grid the FFT path would use, px.

    Returns
    -------
    bool
        True while ``h + w <= DIRECT_TAPS_PER_FFT_LEVEL * log2(N_rows * N_cols)``.
    """
    taps = psf_shape[0] + psf_shape[1]
    level = math.log2(max(2, fft_shape[0] * fft_shape[1]))
    return taps <= DIRECT_TAPS_PER_FFT_LEVEL * level


_kernel_threads = threading.local()
"""The count this thread last gave numba (numba's setting is per thread)."""


def use_torch_threads() -> None:
    """Make the compiled kernels use as many threads as torch, within the thread budget.

    See :func:`asirp.threads.kernel_threads`. numba is told only when the count changes: the
    kernels of one iteration are launched thousands of times a second on small maps.
    """
    count = kernel_threads()
    if getattr(_kernel_threads, "count", None) != count:  # 3 µs a call: only on a change
        import numba

        torch_count = torch.get_num_threads()
        with kernel_pool_wait_policy():  # the pool starts on the first call
            numba.set_num_threads(count)
        if torch.get_num_threads() != torch_count:
            # numba's first launch of its OpenMP pool resets the OpenMP thread count that
            # torch reads (they resolve to one runtime): put torch's back
            torch.set_num_threads(torch_count)
        _kernel_threads.count = count


_NO_ROW_SUMS = np.zeros((1, 2))
"""The ``row_sums`` argument of the kernel for epilogues that write none."""


def _float32_stack(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array`` as a C-contiguous float32 ``(B, *shape)`` stack (a view when it already is)."""
    return np.ascontiguousarray(array, dtype=np.float32).reshape(-1, *shape)


class SeparableBlur:
    """A :class:`~asirp.blur.BlurOperator`'s forward and adjoint as direct separable passes.

    Parameters
    ----------
    column, row : numpy.ndarray
        Profiles ``u`` ``(h,)`` and ``v`` ``(w,)`` of the PSF ``outer(u, v)``, odd lengths.
    data_shape : (int, int)
        ``(H, W)`` of one measured map.
    object_shape : (int, int)
        ``(H_o, W_o)`` of the object grid.
    offset : (int, int)
        Where the data grid starts inside the object grid (``(h // 2, w // 2)`` for
        ``"extend"``, else ``(0, 0)``).
    periodic : bool
        Circular convolution (``boundary="periodic"``); otherwise the object is zero outside its
        grid.

    Notes
    -----
    With radii ``r = h // 2`` (rows) and the data grid at ``top`` inside the object grid, the
    forward blur is the correlation with the flipped profiles at shift ``r - top`` and the adjoint
    the correlation with the profiles at shift ``r + top`` (per axis), which is the FFT
    operator's convolution and its transpose. All arrays are float32 numpy arrays; ``out``
    arguments are written in place.
    """

    def __init__(
        self,
        column: np.ndarray,
        row: np.ndarray,
        data_shape: tuple[int, int],
        object_shape: tuple[int, int],
        offset: tuple[int, int],
        periodic: bool,
    ):
        from asirp import _kernels  # lazy: numba, about 0.9 s to import (see asirp.metrics)

        self._kernels = _kernels
        self.data_shape = data_shape
        self.object_shape = object_shape
        self.taps = tuple(np.ascontiguousarray(p, dtype=np.float32) for p in (column, row))
        self.flipped = (self.taps[0][::-1].copy(), self.taps[1][::-1].copy())
        radius = (column.size // 2, row.size // 2)
        self.forward_shift = (radius[0] - offset[0], radius[1] - offset[1])
        self.adjoint_shift = (radius[0] + offset[0], radius[1] + offset[1])
        self.edge = _kernels.EDGE_PERIODIC if periodic else _kernels.EDGE_ZERO

    def _run(
        self,
        src: np.ndarray,
        taps: tuple[np.ndarray, np.ndarray],
        shift: tuple[int, int],
        out: np.ndarray,
        epilogue: int = 0,
        first: np.ndarray | None = None,
        second: np.ndarray | None = None,
        background: float = 0.0,
        step: np.ndarray | None = None,
        previous: np.ndarray | None = None,
        row_sums: np.ndarray | None = None,
    ) -> None:
        """Call the correlation kernel on the kernels' thread count (unused arrays: ``out``)."""
        use_torch_threads()
        self._kernels.correlate_separable_steps(
            src,
            *taps,
            *shift,
            self.edge,
            out,
            epilogue,
            out if first is None else first,
            out if second is None else second,
            np.float32(background),
            out if step is None else step,
            out if previous is None else previous,
            _NO_ROW_SUMS if row_sums is None else row_sums,
        )

    def forward(self, obj: np.ndarray, out: np.ndarray) -> None:
        """Blur objects ``(B, *object_shape)`` into ``out`` ``(B, *data_shape)``."""
        self._run(_float32_stack(obj, self.object_shape), self.flipped, self.forward_shift, out)

    def adjoint(self, data: np.ndarray, out: np.ndarray) -> None:
        """Transpose of :meth:`forward`: data ``(B, *data_shape)`` into ``out`` (object grid)."""
        self._run(_float32_stack(data, self.data_shape), self.taps, self.adjoint_shift, out)

    def poisson_ratio(
        self,
        obj: np.ndarray,
        data: np.ndarray,
        background: float,
        prediction: np.ndarray,
        ratio: np.ndarray,
    ) -> None:
        """``prediction = H obj + background``, ``ratio = data / max(prediction, 1e-12)``.

        Parameters
        ----------
        obj : numpy.ndarray
            Objects ``(B, *object_shape)``.
        data : numpy.ndarray
            Measured maps ``(B, *data_shape)`` (counts).
        background : float
            Constant background, counts per pixel.
        prediction, ratio : numpy.ndarray
            Outputs ``(B, *data_shape)``.
        """
        self._run(
            _float32_stack(obj, self.object_shape),
            self.flipped,
            self.forward_shift,
            prediction,
            self._kernels.POISSON_RATIO,
            _float32_stack(data, self.data_shape),
            ratio,
            background,
        )

    def multiplicative_adjoint(
        self, data: np.ndarray, factor: np.ndarray, denominator: np.ndarray, out: np.ndarray
    ) -> None:
        """``out = factor * H^T data / denominator`` on the object grid.

        Parameters
        ----------
        data : numpy.ndarray
            ``(B, *data_shape)``.
        factor : numpy.ndarray
            ``(B, *object_shape)``.
        denominator : numpy.ndarray
            ``(B, *object_shape)`` or ``(1, *object_shape)``, non-zero.
        out : numpy.ndarray
            Output ``(B, *object_shape)``.
        """
        self._run(
            _float32_stack(data, self.data_shape),
            self.taps,
            self.adjoint_shift,
            out,
            self._kernels.MULTIPLICATIVE,
            _float32_stack(factor, self.object_shape),
            _float32_stack(denominator, self.object_shape),
        )

    def multiplicative_update(
        self,
        data: np.ndarray,
        factor: np.ndarray,
        denominator: np.ndarray,
        out: np.ndarray,
        step: np.ndarray,
        previous: np.ndarray | None,
    ) -> np.ndarray:
        """The multiplicative update and its step, with the step's products, in one pass.

        ``out = factor * H^T data / denominator``, ``step = out - factor``: what
        :meth:`multiplicative_adjoint` and a separate difference pass give, with the two inner
        products that Biggs-Andrews acceleration needs summed as the rows are written.

        Parameters
        ----------
        data : numpy.ndarray
            ``(B, *data_shape)``.
        factor : numpy.ndarray
            ``(B, *object_shape)``.
        denominator : numpy.ndarray
            ``(B, *object_shape)`` or ``(1, *object_shape)``, non-zero.
        out, step : numpy.ndarray
            Outputs ``(B, *object_shape)``, C-contiguous (``step`` not ``out``, ``factor`` or
            ``previous``).
        previous : numpy.ndarray or None
            The previous step ``(B, *object_shape)``, or None.

        Returns
        -------
        numpy.ndarray
            ``(B, 2)`` float64: ``sum(step * step)`` and ``sum(step * previous)`` per map (0
            without ``previous``), summed in row order (the same for any thread count).
        """
        batch = out.shape[0]
        row_sums = np.empty((batch * self.object_shape[0], 2))
        self._run(
            _float32_stack(data, self.data_shape),
            self.taps,
            self.adjoint_shift,
            out,
            self._kernels.MULTIPLICATIVE_STEP,
            _float32_stack(factor, self.object_shape),
            _float32_stack(denominator, self.object_shape),
            step=step,
            # without a previous step, any finite array of the shape (its products are dropped)
            previous=_float32_stack(factor, self.object_shape) if previous is None else previous,
            row_sums=row_sums,
        )
        sums = row_sums.reshape(batch, -1, 2).sum(axis=1)
        if previous is None:
            sums[:, 1] = 0.0
        return sums

    def divided_adjoint(
        self, data: np.ndarray, divisor: np.ndarray, floor: np.ndarray, out: np.ndarray
    ) -> None:
        """``out = max(H^T data / divisor, floor)`` on the object grid, in one pass.

        Parameters
        ----------
        data : numpy.ndarray
            ``(B, *data_shape)``.
        divisor : numpy.ndarray
            ``(B, *object_shape)`` or ``(1, *object_shape)``, positive.
        floor : numpy.ndarray
            ``(B,)`` float32, the smallest value per map.
        out : numpy.ndarray
            Output ``(B, *object_shape)``.
        """
        data = _float32_stack(data, self.data_shape)
        divisor = _float32_stack(divisor, self.object_shape)
        for index in range(out.shape[0]):  # one floor per map: the kernel takes one value
            self._run(
                data[index : index + 1],
                self.taps,
                self.adjoint_shift,
                out[index : index + 1],
                self._kernels.DIVIDE_FLOOR,
                second=divisor if divisor.shape[0] == 1 else divisor[index : index + 1],
                background=float(floor[index]),
            )

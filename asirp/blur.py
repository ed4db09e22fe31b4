"""The blur (forward) operator as FFT convolutions in torch, with boundary handling.

Images are float32 tensors of shape ``(B, H, W)`` (a batch of maps). The operator maps an
*object* (the restored estimate) to the *data* (the measured map):

``"extend"`` (default of the iterative methods)
    The object is larger than the data by the PSF radius on every side, and the data is the
    part of the blurred object that was measured. Nothing is assumed outside the map, so edges do
    not ring (Bertero & Boccacci 2005). The restored image is the central ``(H, W)`` part.
``"zero"``
    Object and data have the same size, and the object is zero outside (linear convolution, the
    boundary of :func:`scipy.signal.convolve` with ``mode="same"`` used by scikit-image).
``"periodic"``
    Circular convolution: the map is taken to repeat (fastest; rings when edges differ).

On the CPU, a separable PSF small enough (a Gaussian beam) is applied by direct 1-D passes instead
of FFTs (:mod:`asirp.separable`): the same operator to float32 rounding, several times faster.
Every other case (CUDA, a PSF that is not separable, a per-image PSF stack, a very wide PSF)
uses the FFTs.

On the CPU in float32 (no autograd), the FFT path is fused: the operator keeps two FFT buffers
per batch size, runs the FFTs in place on them (:class:`asirp._fft_kernels.RealFFT2`, or
torch's FFTs where that is not available), and does each step between two FFTs in one compiled
pass (:mod:`asirp._fft_kernels`): the zero-padded grid written with the object or the data, the
product with the transfer function in place, the prediction and ratio of
:meth:`BlurOperator.poisson_ratio` (the ratio written straight onto the adjoint's padded grid),
the multiplicative update with its step and the step's inner products
(:meth:`BlurOperator.multiplicative_update`). A 10-iteration Richardson-Lucy restoration of a
1024² map with a non-separable 31x31 PSF then costs about its FFTs: 20 pairs for the iterations,
one for the starting estimate and one for :func:`asirp.metrics.data_residual`. CUDA, float64 and
gradients use plain torch operations, unchanged.

The direct (Fourier-filter) methods use ``"reflect"`` by default: the map is mirrored into a
``(2H, 2W)`` even extension, which is smooth when repeated, so the filter does not ring; it is
exact for symmetric PSFs (the discrete cosine transform diagonalises such blurs).

References
----------
.. [1] M. Bertero and P. Boccacci, "A simple method for the reduction of boundary effects in the
   Richardson-Lucy approach to image deconvolution", A&A 437, 369-374 (2005).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from asirp.backend import fast_fft_shape
from asirp.separable import (
    SeparableBlur,
    direct_is_faster,
    separable_factors,
    use_torch_threads,
)

BOUNDARY_MODES = ("extend", "zero", "periodic")
PATH_CHOICES = ("auto", "fft", "direct")


def psf_to_otf(psf: torch.Tensor, fft_shape: tuple[int, int]) -> torch.Tensor:
    """Optical transfer function of a centred PSF on an FFT grid.

    Parameters
    ----------
    psf : torch.Tensor
        Shape ``(h, w)`` or ``(B, h, w)``, odd sizes, centre pixel at ``(h // 2, w // 2)``.
    fft_shape : (int, int)
        FFT grid ``(N_rows, N_cols)``, at least the PSF size.

    Returns
    -------
    torch.Tensor
        Complex tensor ``(..., N_rows, N_cols // 2 + 1)``: the real FFT of the PSF with its centre
        moved to index ``(0, 0)``.
    """
    rows, cols = psf.shape[-2:]
    top, left = rows // 2, cols // 2
    # The PSF's four quadrants go straight to the grid's corners: the same grid as zero-padding
    # and rolling by (-top, -left), without the two full-grid passes those take.
    grid = psf.new_zeros((*psf.shape[:-2], *fft_shape))
    n_rows, n_cols = fft_shape
    grid[..., : rows - top, : cols - left] = psf[..., top:, left:]
    grid[..., : rows - top, n_cols - left :] = psf[..., top:, :left]
    grid[..., n_rows - top :, : cols - left] = psf[..., :top, left:]
    grid[..., n_rows - top :, n_cols - left :] = psf[..., :top, :left]
    return torch.fft.rfft2(grid)


OTF_CACHE_SIZE = 2
"""How many transfer functions :func:`cached_otf` keeps (the latest ones)."""

_CACHED_DTYPES = (torch.float32, torch.float64)
_otf_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_otf_cache_lock = threading.Lock()


def cached_otf(psf: torch.Tensor, fft_shape: tuple[int, int]) -> torch.Tensor:
    """:func:`psf_to_otf`, reusing the result for the same PSF values and grid.

    A restoration computes the PSF's transfer function for its operator, and
    :func:`asirp.metrics.data_residual` needs the same one on the same grid just after (half
    an FFT pair at a megapixel); the last :data:`OTF_CACHE_SIZE` results are kept, keyed by the
    PSF's values. Only CPU PSFs that do not need gradients are cached (a CUDA PSF would have to
    be copied to the host for its key); others are computed every time.

    Parameters
    ----------
    psf : torch.Tensor
        As for :func:`psf_to_otf`.
    fft_shape : (int, int)
        The FFT grid.

    Returns
    -------
    torch.Tensor
        The transfer function ``(..., N_rows, N_cols // 2 + 1)``, complex; shared with other
        callers, so it must not be modified in place.
    """
    if psf.device.type != "cpu" or psf.requires_grad or psf.dtype not in _CACHED_DTYPES:
        return psf_to_otf(psf, fft_shape)
    values = psf.detach().contiguous()
    key = (tuple(fft_shape), tuple(values.shape), str(values.dtype), values.numpy().tobytes())
    with _otf_cache_lock:
        otf = _otf_cache.get(key)
        if otf is not None:
            _otf_cache.move_to_end(key)
            return otf
    otf = psf_to_otf(values, fft_shape)
    with _otf_cache_lock:
        _otf_cache[key] = otf
        while len(_otf_cache) > OTF_CACHE_SIZE:
            _otf_cache.popitem(last=False)
    return otf


class BlurOperator:
    """Convolution with a PSF between an object grid and a data grid.

    Parameters
    ----------
    psf : torch.Tensor
        Shape ``(h, w)`` (shared by the batch) or ``(B, h, w)``, float32, sum 1, odd sizes.
    data_shape : (int, int)
        ``(H, W)`` of one measured map.
    boundary : {"extend", "zero", "periodic"}
        How the object continues past the map's edges (see the module notes).
    path : {"auto", "fft", "direct"}
        How :meth:`forward`, :meth:`adjoint` and the fused updates are computed: ``"fft"``
        always by FFTs; ``"direct"`` by direct separable passes (:mod:`asirp.separable`;
        needs a separable 2-D PSF on the CPU, else ``ValueError``); ``"auto"`` direct when
        that is possible and :func:`asirp.separable.direct_is_faster`. The ``*_spectrum``
        methods always use FFTs.

    Attributes
    ----------
    object_shape : (int, int)
        Shape of the object grid: ``(H + h - 1, W + w - 1)`` for ``"extend"``, else ``(H, W)``.
    offset : (int, int)
        Where the data grid starts inside the object grid.
    fft_shape : (int, int)
        The FFT grid (fast sizes, large enough that no wrap-around reaches the data).
    psf : torch.Tensor
        The current PSF.
    otf : torch.Tensor
        The PSF's transfer function on ``fft_shape`` (computed when first needed).
    path : str
        ``"direct"`` or ``"fft"``: how :meth:`forward` and :meth:`adjoint` run for CPU tensors.

    Notes
    -----
    The fused FFT path (see the module notes) keeps work arrays on the operator, two
    ``(B, *fft_shape)`` float32 buffers per batch size ``B`` used (9.4 MB for one 1024² map with
    a 31x31 PSF), for as long as the operator lives; an operator must therefore not be used by
    two threads at once. :meth:`forward` and :meth:`adjoint` always return fresh tensors.
    """

    def __init__(
        self,
        psf: torch.Tensor,
        data_shape: tuple[int, int],
        boundary: str = "extend",
        *,
        path: str = "auto",
    ):
        if boundary not in BOUNDARY_MODES:
            raise ValueError(f"unknown boundary {boundary!r}; allowed: {', '.join(BOUNDARY_MODES)}")
        if path not in PATH_CHOICES:
            raise ValueError(f"unknown path {path!r}; allowed: {', '.join(PATH_CHOICES)}")
        rows, cols = data_shape
        radius_y, radius_x = psf.shape[-2] // 2, psf.shape[-1] // 2
        self.boundary = boundary
        self.data_shape = (int(rows), int(cols))
        if boundary == "extend":
            self.object_shape = (rows + 2 * radius_y, cols + 2 * radius_x)
            self.offset = (radius_y, radius_x)
            self.fft_shape = fast_fft_shape(self.object_shape)
        elif boundary == "zero":
            self.object_shape = (rows, cols)
            self.offset = (0, 0)
            self.fft_shape = fast_fft_shape((rows + 2 * radius_y, cols + 2 * radius_x))
        else:
            self.object_shape = (rows, cols)
            self.offset = (0, 0)
            self.fft_shape = (rows, cols)
        self.psf_shape = (int(psf.shape[-2]), int(psf.shape[-1]))
        self.requested_path = path
        self._workspaces: dict[int, _Workspace] = {}
        self.set_psf(psf)

    def set_psf(self, psf: torch.Tensor) -> None:
        """Replace the PSF (same size), as blind deconvolution does every iteration."""
        self.psf = psf
        self._otf: torch.Tensor | None = None
        self._otf_conj: torch.Tensor | None = None
        self._direct = self._direct_blur(psf)
        self.path = "direct" if self._direct is not None else "fft"

    def _direct_blur(self, psf: torch.Tensor) -> SeparableBlur | None:
        """The direct separable blur for ``psf`` when the path allows and favours it, else None."""
        if self.requested_path == "fft":
            return None
        factors = None
        if psf.ndim == 2 and psf.device.type == "cpu":
            factors = separable_factors(psf)
        if factors is None:
            if self.requested_path == "direct":
                raise ValueError(
                    "the direct path needs a separable 2-D PSF on the CPU "
                    f"(got shape {tuple(psf.shape)} on {psf.device})"
                )
            return None
        if self.requested_path == "auto" and not direct_is_faster(self.psf_shape, self.fft_shape):
            return None
        return SeparableBlur(
            *factors,
            data_shape=self.data_shape,
            object_shape=self.object_shape,
            offset=self.offset,
            periodic=self.boundary == "periodic",
        )

    @property
    def otf(self) -> torch.Tensor:
        """The PSF's transfer function on ``fft_shape`` (see :func:`psf_to_otf`)."""
        if self._otf is None:
            self._otf = cached_otf(self.psf, self.fft_shape)
        return self._otf

    @otf.setter
    def otf(self, value: torch.Tensor) -> None:
        self._otf = value
        self._otf_conj = None

    @property
    def otf_conj(self) -> torch.Tensor:
        """The conjugate transfer function (the adjoint's), computed once per PSF."""
        if self._otf_conj is None:
            self._otf_conj = self.otf.conj().resolve_conj()
        return self._otf_conj

    def _runs_direct(self, *tensors: torch.Tensor, outputs: tuple[torch.Tensor, ...] = ()) -> bool:
        """Whether the direct path applies: float32 CPU tensors, contiguous outputs, no autograd.

        The direct kernels are not differentiable, so tensors that need gradients take the FFT
        path.
        """
        every = tensors + outputs
        return (
            self._direct is not None
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in every)
            and all(t.is_contiguous() for t in outputs)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in every))
        )

    def _fuses(
        self, batch: int, *tensors: torch.Tensor, outputs: tuple[torch.Tensor, ...] = ()
    ) -> bool:
        """Whether the fused FFT path applies to a stack of ``batch`` maps.

        It needs what the compiled kernels need: float32 CPU tensors and PSF, ``(B, ., .)``
        stacks, contiguous outputs, no autograd (the kernels write numpy views in place), and a
        transfer function shared by the stack or one per map. Everything else (CUDA, float64,
        gradients) takes plain torch operations.
        """
        every = (*tensors, *outputs, self.psf)
        if not (
            all(t.device.type == "cpu" and t.dtype == torch.float32 for t in every)
            and all(t.ndim == 3 and t.shape[0] == batch for t in (*tensors, *outputs))
            and all(t.is_contiguous() for t in outputs)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in every))
        ):
            return False
        otf = self.otf
        return (
            otf.device.type == "cpu"
            and otf.dtype == torch.complex64
            and not otf.requires_grad
            and (otf.ndim == 2 or otf.shape[0] in (1, batch))
        )

    # --- the fused FFT path (CPU, float32) ----------------------------------------------------

    def _workspace(self, batch: int) -> _Workspace:
        """The reused FFT-grid buffers for stacks of ``batch`` maps (made when first needed)."""
        work = self._workspaces.get(batch)
        if work is None:
            work = self._workspaces[batch] = _Workspace()
        return work

    def _grid_buffer(self, batch: int) -> torch.Tensor:
        """A new FFT buffer ``(B, N0, 2 (N1 // 2 + 1))`` float32, uninitialised.

        The FFT grid is its first ``N1`` columns; the spare one or two let the real FFTs run
        in place (:class:`asirp._fft_kernels.RealFFT2`).
        """
        rows, cols = self.fft_shape
        return torch.empty((batch, rows, 2 * (cols // 2 + 1)))

    def _object_grid(self, obj: torch.Tensor) -> torch.Tensor:
        """Objects ``(B, *object_shape)`` on the zero-padded FFT grid, in the operator's buffer.

        Every pixel of the grid is written (the object, zeros around it), since the in-place
        FFTs leave other values there.
        """
        array = _array(obj)
        work = self._workspace(array.shape[0])
        if work.object_grid is None:
            work.object_grid = self._grid_buffer(array.shape[0])
        _fft_kernels().place(array, work.object_grid.numpy(), 0, 0, self.fft_shape[1])
        return work.object_grid

    def _data_grid(self, data: torch.Tensor) -> torch.Tensor:
        """Data ``(B, H, W)`` at its offset on the zero-padded FFT grid, in the operator's buffer.

        When the buffer already holds these data, because :meth:`poisson_ratio` wrote this ratio
        there too and nothing has changed the tensor since (same tensor, storage and torch
        version counter), it is not written again. The caller transforms the buffer, so it holds
        nothing known afterwards.
        """
        work = self._workspace(data.shape[0])
        if work.data_grid is None:
            work.data_grid = self._grid_buffer(data.shape[0])
        elif work.holds(data):
            work.holding = None
            return work.data_grid
        work.holding = None
        _fft_kernels().place(_array(data), work.data_grid.numpy(), *self.offset, self.fft_shape[1])
        return work.data_grid

    def _filtered(self, grid: torch.Tensor, conjugate: bool) -> torch.Tensor:
        """``irfft2(rfft2(grid) * otf)`` (``conj(otf)`` for the adjoint), ``(B, N0, >= N1)``.

        ``grid`` is one of the operator's buffers (:meth:`_grid_buffer`). The FFTs run in place
        on it (:class:`asirp._fft_kernels.RealFFT2`: no allocation, no page faults), and the
        result is the buffer itself; where that library is not available, torch's FFTs leave the
        buffer alone and the result is a fresh ``(B, *fft_shape)`` tensor. The product with the
        transfer function is taken in place on the spectrum, by a compiled kernel: one pass
        instead of torch's allocation plus pass (plus one more to resolve a lazy conjugate).
        (Computing only the window's rows, by splitting the inverse into its column and row
        transforms, measured no faster.)
        """
        kernels = _fft_kernels()
        otf = _complex_array(self.otf)
        plan = kernels.real_fft2_plan(grid.shape[0], self.fft_shape)
        if plan is None:
            spectrum = torch.fft.rfft2(grid[..., : self.fft_shape[1]])
            kernels.multiply_spectrum(_complex_array(spectrum), otf, conjugate)
            return torch.fft.irfft2(spectrum, s=self.fft_shape)
        plan.forward(grid)
        kernels.multiply_spectrum(_complex_array(plan.spectrum(grid)), otf, conjugate)
        plan.backward(grid)
        return grid

    def _window_copy(
        self, grid: torch.Tensor, offset: tuple[int, int], shape: tuple[int, int]
    ) -> torch.Tensor:
        """A fresh contiguous ``(B, *shape)`` copy of the window at ``offset`` of a grid.

        The fused :meth:`forward` and :meth:`adjoint` return these (like the direct path), not
        views of the operator's buffers, which the next call overwrites; a contiguous result
        also lets callers work in place.
        """
        out = torch.empty((grid.shape[0], *shape))
        _fft_kernels().take_window(grid.numpy(), *offset, out.numpy())
        return out

    def _data_window(self, grid: torch.Tensor) -> torch.Tensor:
        """The data grid's window ``(B, H, W)`` of an FFT grid (a view)."""
        top, left = self.offset
        return grid[..., top : top + self.data_shape[0], left : left + self.data_shape[1]]

    def _object_window(self, grid: torch.Tensor) -> torch.Tensor:
        """The object grid's window ``(B, *object_shape)`` of an FFT grid (a view)."""
        return grid[..., : self.object_shape[0], : self.object_shape[1]]

    # --- the operator --------------------------------------------------------------------------

    def object_spectrum(self, obj: torch.Tensor) -> torch.Tensor:
        """Real FFT of an object ``(B, *object_shape)`` on the FFT grid."""
        if obj.ndim == 3 and obj.shape[-2:] == self.object_shape and self._fuses(len(obj), obj):
            return torch.fft.rfft2(self._object_grid(obj)[..., : self.fft_shape[1]])
        return torch.fft.rfft2(obj, s=self.fft_shape)

    def forward_from_spectrum(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Blurred data ``(B, H, W)`` from an object's spectrum (which is left unchanged)."""
        return self._data_window(torch.fft.irfft2(spectrum * self.otf, s=self.fft_shape))

    def forward(self, obj: torch.Tensor) -> torch.Tensor:
        """Blur an object ``(B, *object_shape)`` and return the data part ``(B, H, W)``."""
        if self._runs_direct(obj):
            out = torch.empty((*obj.shape[:-2], *self.data_shape), dtype=torch.float32)
            self._direct.forward(_array(obj), _array(out).reshape(-1, *self.data_shape))
            return out
        if obj.ndim == 3 and obj.shape[-2:] == self.object_shape and self._fuses(len(obj), obj):
            blurred = self._filtered(self._object_grid(obj), conjugate=False)
            return self._window_copy(blurred, self.offset, self.data_shape)
        return self.forward_from_spectrum(self.object_spectrum(obj))

    def data_spectrum(self, data: torch.Tensor) -> torch.Tensor:
        """Real FFT of data ``(B, H, W)`` placed at its offset on the FFT grid (zeros elsewhere)."""
        if data.ndim == 3 and data.shape[-2:] == self.data_shape and self._fuses(len(data), data):
            return torch.fft.rfft2(self._data_grid(data)[..., : self.fft_shape[1]])
        top, left = self.offset
        pad_bottom = self.fft_shape[0] - self.data_shape[0] - top
        pad_right = self.fft_shape[1] - self.data_shape[1] - left
        if top or left:
            data = F.pad(data, (left, pad_right, top, pad_bottom))
            return torch.fft.rfft2(data)
        return torch.fft.rfft2(data, s=self.fft_shape)

    def adjoint_from_spectrum(self, spectrum: torch.Tensor, otf: torch.Tensor | None = None):
        """Adjoint (correlation with the PSF) of data given by its spectrum, on the object grid.

        The spectrum is left unchanged; ``otf`` defaults to the operator's.
        """
        conjugate = self.otf_conj if otf is None else otf.conj()
        return self._object_window(torch.fft.irfft2(spectrum * conjugate, s=self.fft_shape))

    def adjoint(self, data: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`forward`: data ``(B, H, W)`` to object ``(B, *object_shape)``."""
        if self._runs_direct(data):
            out = torch.empty((*data.shape[:-2], *self.object_shape), dtype=torch.float32)
            self._direct.adjoint(_array(data), _array(out).reshape(-1, *self.object_shape))
            return out
        if data.ndim == 3 and data.shape[-2:] == self.data_shape and self._fuses(len(data), data):
            back = self._filtered(self._data_grid(data), conjugate=True)
            return self._window_copy(back, (0, 0), self.object_shape)
        return self.adjoint_from_spectrum(self.data_spectrum(data))

    def divided_adjoint(
        self, data: torch.Tensor, divisor: torch.Tensor, floor: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        """``out = max(H^T data / divisor, floor)`` on the object grid (a smooth start).

        Parameters
        ----------
        data : torch.Tensor
            ``(B, H, W)``.
        divisor : torch.Tensor
            ``(1 or B, *object_shape)``, positive.
        floor : torch.Tensor
            ``(B, 1, 1)``, the smallest value per map.
        out : torch.Tensor
            Contiguous ``(B, *object_shape)`` to write (one pass of the direct kernel on the
            CPU; torch operations else).

        Returns
        -------
        torch.Tensor
            ``out``.
        """
        if (
            self._runs_direct(data, divisor, floor, outputs=(out,))
            and out.shape == (data.shape[0], *self.object_shape)
            and divisor.shape[0] in (1, data.shape[0])
        ):
            floors = _array(floor).reshape(-1).astype(np.float32)
            self._direct.divided_adjoint(_array(data), _array(divisor), floors, _array(out))
            return out
        torch.div(self.adjoint(data), divisor, out=out)
        return torch.maximum(out, floor, out=out)

    def poisson_ratio(
        self,
        obj: torch.Tensor,
        data: torch.Tensor,
        background: float = 0.0,
        out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prediction ``H x + b`` of an object and the data's ratio to it.

        Parameters
        ----------
        obj : torch.Tensor
            Objects ``(B, *object_shape)``.
        data : torch.Tensor
            Measured maps ``(B, H, W)`` (counts).
        background : float
            Constant background ``b``, counts per pixel.
        out : (torch.Tensor, torch.Tensor), optional
            Contiguous ``(B, H, W)`` tensors to write the prediction and the ratio into (reused
            buffers save an allocation, and its page faults, per call).

        Returns
        -------
        prediction : torch.Tensor
            ``H obj + background``, ``(B, H, W)``.
        ratio : torch.Tensor
            ``data / max(prediction, 1e-12)``, ``(B, H, W)``.

        Notes
        -----
        On the fused FFT path the ratio is also written, in the same pass, onto the zero-padded
        grid of the adjoint's FFT, so that :meth:`multiplicative_update` (or any adjoint) of
        this very ratio right after skips that copy.
        """
        if out is None:
            out = (torch.empty_like(data), torch.empty_like(data))
        prediction, ratio = out
        direct = self._runs_direct(obj, data, outputs=(prediction, ratio))
        if direct and obj.shape[0] == data.shape[0]:
            self._direct.poisson_ratio(
                _array(obj), _array(data), background, _array(prediction), _array(ratio)
            )
            return prediction, ratio
        batch = data.shape[0] if data.ndim == 3 else -1
        if (
            obj.shape[-2:] == self.object_shape
            and data.shape[-2:] == self.data_shape
            and self._fuses(batch, obj, data, outputs=(prediction, ratio))
        ):
            self._fused_poisson_ratio(obj, data, background, prediction, ratio)
            return prediction, ratio
        torch.add(self.forward(obj), background, out=prediction)
        torch.div(data, prediction.clamp_min(1e-12), out=ratio)
        return prediction, ratio

    def _fused_poisson_ratio(
        self,
        obj: torch.Tensor,
        data: torch.Tensor,
        background: float,
        prediction: torch.Tensor,
        ratio: torch.Tensor,
    ) -> None:
        """:meth:`poisson_ratio` by two in-place FFTs and three compiled passes (module notes)."""
        blurred = self._filtered(self._object_grid(obj), conjugate=False)
        work = self._workspace(data.shape[0])
        if work.data_grid is None:
            work.data_grid = self._grid_buffer(data.shape[0])
        _fft_kernels().poisson_epilogue(
            blurred.numpy(),
            *self.offset,
            _array(data),
            np.float32(background),
            prediction.numpy(),
            ratio.numpy(),
            work.data_grid.numpy(),
            self.fft_shape[1],
        )
        work.hold(ratio)

    def _update_shapes_match(
        self, data: torch.Tensor, factor: torch.Tensor, denominator: torch.Tensor
    ) -> bool:
        """Whether the shapes suit the fused multiplicative updates (else plain torch)."""
        return (
            data.ndim == 3
            and factor.shape == (data.shape[0], *self.object_shape)
            and denominator.ndim == 3
            and denominator.shape[0] in (1, data.shape[0])
            and denominator.shape[1:] == self.object_shape
        )

    def multiplicative_adjoint(
        self,
        data: torch.Tensor,
        factor: torch.Tensor,
        denominator: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``factor * H^T data / denominator``: the multiplicative (Richardson-Lucy) update.

        Parameters
        ----------
        data : torch.Tensor
            ``(B, H, W)``.
        factor : torch.Tensor
            ``(B, *object_shape)``.
        denominator : torch.Tensor
            ``(B, *object_shape)`` or ``(1, *object_shape)``, non-zero.
        out : torch.Tensor, optional
            Contiguous ``(B, *object_shape)`` tensor to write into (not ``data``; it may be
            ``factor``).

        Returns
        -------
        torch.Tensor
            ``(B, *object_shape)``.
        """
        if out is None:
            out = torch.empty_like(factor)
        if (
            self._runs_direct(data, factor, denominator, outputs=(out,))
            and factor.shape == (data.shape[0], *self.object_shape)
            and denominator.shape[0] in (1, data.shape[0])
        ):
            self._direct.multiplicative_adjoint(
                _array(data), _array(factor), _array(denominator), _array(out)
            )
            return out
        if self._update_shapes_match(data, factor, denominator) and self._fuses(
            data.shape[0], data, factor, outputs=(out,)
        ):
            self._fused_update(data, factor, denominator, out, out, None, with_step=False)
            return out
        return torch.div(factor * self.adjoint(data), denominator, out=out)

    def multiplicative_update(
        self,
        ratio: torch.Tensor,
        factor: torch.Tensor,
        denominator: torch.Tensor,
        out: torch.Tensor,
        step: torch.Tensor,
        previous_step: torch.Tensor | None,
    ) -> torch.Tensor:
        """``out = factor * H^T ratio / denominator`` (the RL update, object grid), and the step.

        One Richardson-Lucy update with what Biggs-Andrews acceleration needs of it: the step
        ``out - factor`` and its inner products with itself and with the previous step, in the
        same pass over the object grid as the update on the CPU (float32).

        Parameters
        ----------
        ratio : torch.Tensor
            The data's ratio to the prediction, ``(B, H, W)``, dimensionless.
        factor : torch.Tensor
            The point the update multiplies, ``(B, *object_shape)``, contiguous (counts).
        denominator : torch.Tensor
            ``(B, *object_shape)`` or ``(1, *object_shape)``, non-zero (``H^T 1``, or it with
            the total-variation term).
        out : torch.Tensor
            Contiguous ``(B, *object_shape)`` output for the update (not ``ratio``).
        step : torch.Tensor
            Contiguous ``(B, *object_shape)`` output for ``out - factor`` (not ``out``,
            ``factor`` or ``previous_step``).
        previous_step : torch.Tensor or None
            The previous iteration's step ``(B, *object_shape)``, if any.

        Returns
        -------
        torch.Tensor
            ``(B, 2)`` float64 on the CPU: per image ``sum(step * step)`` and
            ``sum(step * previous_step)`` (0 when ``previous_step`` is None), counts squared.
        """
        earlier = () if previous_step is None else (previous_step,)
        batch = ratio.shape[0] if ratio.ndim == 3 else -1
        shapes = self._update_shapes_match(ratio, factor, denominator) and all(
            t.shape == factor.shape for t in (out, step, *earlier)
        )
        if shapes and self._runs_direct(ratio, factor, denominator, *earlier, outputs=(out, step)):
            sums = self._direct.multiplicative_update(
                _array(ratio),
                _array(factor),
                _array(denominator),
                _array(out),
                _array(step),
                None if previous_step is None else _array(previous_step),
            )
            return torch.from_numpy(sums)
        if shapes and self._fuses(batch, ratio, factor, *earlier, outputs=(out, step)):
            sums = self._fused_update(
                ratio, factor, denominator, out, step, previous_step, with_step=True
            )
            return torch.from_numpy(sums)
        # Any other device, dtype or autograd: plain torch operations. The update goes to a fresh
        # tensor first, so that ``out`` may be ``factor``.
        updated = factor * self.adjoint(ratio) / denominator
        torch.sub(updated, factor, out=step)
        out.copy_(updated)
        flat = step.flatten(1)
        energy = torch.linalg.vecdot(flat, flat)
        if previous_step is None:
            overlap = torch.zeros_like(energy)
        else:
            overlap = torch.linalg.vecdot(flat, previous_step.flatten(1))
        return torch.stack((energy, overlap), dim=1).to("cpu", torch.float64)

    def _fused_update(
        self,
        ratio: torch.Tensor,
        factor: torch.Tensor,
        denominator: torch.Tensor,
        out: torch.Tensor,
        step: torch.Tensor,
        previous_step: torch.Tensor | None,
        with_step: bool,
    ) -> np.ndarray:
        """The multiplicative update by two FFTs and one compiled pass; ``(B, 2)`` step sums."""
        kernels = _fft_kernels()
        back = self._filtered(self._data_grid(ratio), conjugate=True)
        if not with_step:
            mode = kernels.UPDATE_ONLY
        elif previous_step is None:
            mode = kernels.UPDATE_STEP
        else:
            mode = kernels.UPDATE_STEP_OVERLAP
        return kernels.update_epilogue(
            back.numpy(),
            _array(factor),
            _array(denominator),
            out.numpy(),
            step.numpy(),
            out.numpy() if previous_step is None else _array(previous_step),
            mode,
        )

    def adjoint_of_ones(self) -> torch.Tensor:
        """``H^T 1``: the adjoint of a map of ones, from partial sums of the PSF (no FFT).

        Object pixel ``j`` collects the PSF weights that land on the data grid, a rectangle of
        the PSF, so ``H^T 1`` is a rectangle sum of the PSF's summed-area table: 1 (the PSF's
        sum) inside, less near the edges for ``"extend"`` and ``"zero"``.

        Returns
        -------
        torch.Tensor
            ``(1, *object_shape)`` for a 2-D PSF, ``(B, *object_shape)`` for a PSF stack,
            float32, on the PSF's device.
        """
        psf = self.psf.to(torch.float64)
        psf = psf if psf.ndim == 3 else psf[None]
        table = F.pad(psf.cumsum(-2).cumsum(-1), (1, 0, 1, 0))  # (B, h + 1, w + 1)
        if self.boundary == "periodic":
            total = table[:, -1:, -1:].to(torch.float32)
            return total.expand(-1, *self.object_shape).contiguous()
        bounds = []
        for axis in (0, 1):
            first = self.psf_shape[axis] // 2 + self.offset[axis]  # adjoint shift
            position = torch.arange(self.object_shape[axis], device=psf.device)
            low = (first - position).clamp(0, self.psf_shape[axis])
            high = (first - position + self.data_shape[axis]).clamp(0, self.psf_shape[axis])
            bounds.append((low, high))
        (row_low, row_high), (col_low, col_high) = bounds
        rows = (table.index_select(-2, row_high) - table.index_select(-2, row_low)).float()
        sums = (rows[..., -1:] - rows[..., :1]).expand(*rows.shape[:-1], self.object_shape[1])
        sums = sums.contiguous()  # every column sees the whole PSF width, except near the edges
        edge = torch.nonzero((col_low > 0) | (col_high < self.psf_shape[1])).squeeze(1)
        high, low = col_high[edge], col_low[edge]
        sums[..., edge] = rows.index_select(-1, high) - rows.index_select(-1, low)
        return sums

    def crop(self, obj: torch.Tensor) -> torch.Tensor:
        """The part of an object that lies under the data grid, ``(B, H, W)``."""
        top, left = self.offset
        return obj[..., top : top + self.data_shape[0], left : left + self.data_shape[1]]


def _array(tensor: torch.Tensor) -> np.ndarray:
    """The numpy view of a CPU float32 tensor (a contiguous copy if it is not contiguous)."""
    return tensor.detach().contiguous().numpy()


def _complex_array(spectrum: torch.Tensor) -> np.ndarray:
    """A complex64 ``(..., N, M)`` tensor as a C-contiguous ``(B, N, M)`` numpy array.

    A view when the tensor is contiguous and has no lazy conjugate, else a copy.
    """
    return spectrum.resolve_conj().contiguous().numpy().reshape(-1, *spectrum.shape[-2:])


def _fft_kernels():
    """:mod:`asirp._fft_kernels`, set to torch's thread count (imported on first use)."""
    # Lazy on purpose: the kernels import numba (about 0.9 s, see asirp.metrics), which a
    # CUDA run or a direct-path run never needs.
    from asirp import _fft_kernels as kernels

    use_torch_threads()
    return kernels


@dataclass
class _Workspace:
    """The fused FFT path's reused buffers for one batch size of one operator.

    A fresh megapixel array costs an allocation and its page faults on every call (see
    :mod:`asirp._fft_kernels`); these buffers are made once per operator and batch size, and
    the FFTs run in place on them. They belong to the operator, so an operator must not be used
    from two threads at once.

    Attributes
    ----------
    object_grid : torch.Tensor or None
        FFT buffer (:meth:`BlurOperator._grid_buffer`) of the forward blur: the objects at the
        top left and zeros around them, then their spectrum, then the blurred objects.
    data_grid : torch.Tensor or None
        FFT buffer of the adjoint: data (a ratio) at the operator's offset and zeros around
        them, then their spectrum, then the adjoint.
    holding : (weakref.ref, int, int) or None
        The tensor whose values ``data_grid`` holds (a weak reference), with its torch version
        counter and data pointer at the time they were written; None when unknown.
    """

    object_grid: torch.Tensor | None = None
    data_grid: torch.Tensor | None = None
    holding: tuple[weakref.ref, int, int] | None = field(default=None, repr=False)

    def hold(self, tensor: torch.Tensor) -> None:
        """Record that ``data_grid`` now holds ``tensor``'s values (without keeping it alive)."""
        self.holding = (weakref.ref(tensor), tensor._version, tensor.data_ptr())

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether ``data_grid`` holds ``tensor``'s current values (see :meth:`hold`).

        In-place torch operations on the tensor bump its version counter and are seen; writes
        through a numpy view of it are not, so callers must not change a ratio that way
        between :meth:`BlurOperator.poisson_ratio` and the adjoint.
        """
        if self.holding is None:
            return False
        held, version, pointer = self.holding
        return held() is tensor and tensor._version == version and tensor.data_ptr() == pointer


def mirror_extend(data: torch.Tensor) -> torch.Tensor:
    """Even extension ``(B, 2H, 2W)`` of ``(B, H, W)`` maps: continuous when repeated."""
    flipped_rows = torch.cat([data, data.flip(-2)], dim=-2)
    return torch.cat([flipped_rows, flipped_rows.flip(-1)], dim=-1)

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

The direct (Fourier-filter) methods use ``"reflect"`` by default: the map is mirrored into a
``(2H, 2W)`` even extension, which is smooth when repeated, so the filter does not ring; it is
exact for symmetric PSFs (the discrete cosine transform diagonalises such blurs).

References
----------
.. [1] M. Bertero and P. Boccacci, "A simple method for the reduction of boundary effects in the
   Richardson-Lucy approach to image deconvolution", A&A 437, 369-374 (2005).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from asirp.backend import fast_fft_shape
from asirp.separable import SeparableBlur, direct_is_faster, separable_factors

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
    padded = F.pad(psf, (0, fft_shape[1] - cols, 0, fft_shape[0] - rows))
    padded = torch.roll(padded, shifts=(-(rows // 2), -(cols // 2)), dims=(-2, -1))
    return torch.fft.rfft2(padded)


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
        self.set_psf(psf)

    def set_psf(self, psf: torch.Tensor) -> None:
        """Replace the PSF (same size), as blind deconvolution does every iteration."""
        self.psf = psf
        self._otf: torch.Tensor | None = None
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
            self._otf = psf_to_otf(self.psf, self.fft_shape)
        return self._otf

    @otf.setter
    def otf(self, value: torch.Tensor) -> None:
        self._otf = value

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

    def object_spectrum(self, obj: torch.Tensor) -> torch.Tensor:
        """Real FFT of an object ``(B, *object_shape)`` on the FFT grid."""
        return torch.fft.rfft2(obj, s=self.fft_shape)

    def forward_from_spectrum(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Blurred data ``(B, H, W)`` from an object's spectrum."""
        blurred = torch.fft.irfft2(spectrum * self.otf, s=self.fft_shape)
        top, left = self.offset
        return blurred[..., top : top + self.data_shape[0], left : left + self.data_shape[1]]

    def forward(self, obj: torch.Tensor) -> torch.Tensor:
        """Blur an object ``(B, *object_shape)`` and return the data part ``(B, H, W)``."""
        if self._runs_direct(obj):
            out = torch.empty((*obj.shape[:-2], *self.data_shape), dtype=torch.float32)
            self._direct.forward(_array(obj), _array(out).reshape(-1, *self.data_shape))
            return out
        return self.forward_from_spectrum(self.object_spectrum(obj))

    def data_spectrum(self, data: torch.Tensor) -> torch.Tensor:
        """Real FFT of data ``(B, H, W)`` placed at its offset on the FFT grid (zeros elsewhere)."""
        top, left = self.offset
        pad_bottom = self.fft_shape[0] - self.data_shape[0] - top
        pad_right = self.fft_shape[1] - self.data_shape[1] - left
        if top or left:
            data = F.pad(data, (left, pad_right, top, pad_bottom))
            return torch.fft.rfft2(data)
        return torch.fft.rfft2(data, s=self.fft_shape)

    def adjoint_from_spectrum(self, spectrum: torch.Tensor, otf: torch.Tensor | None = None):
        """Adjoint (correlation with the PSF) of data given by its spectrum, on the object grid."""
        otf = self.otf if otf is None else otf
        back = torch.fft.irfft2(spectrum * otf.conj(), s=self.fft_shape)
        return back[..., : self.object_shape[0], : self.object_shape[1]]

    def adjoint(self, data: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`forward`: data ``(B, H, W)`` to object ``(B, *object_shape)``."""
        if self._runs_direct(data):
            out = torch.empty((*data.shape[:-2], *self.object_shape), dtype=torch.float32)
            self._direct.adjoint(_array(data), _array(out).reshape(-1, *self.object_shape))
            return out
        return self.adjoint_from_spectrum(self.data_spectrum(data))

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
        torch.add(self.forward(obj), background, out=prediction)
        torch.div(data, prediction.clamp_min(1e-12), out=ratio)
        return prediction, ratio

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
        return torch.div(factor * self.adjoint(data), denominator, out=out)

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


def mirror_extend(data: torch.Tensor) -> torch.Tensor:
    """Even extension ``(B, 2H, 2W)`` of ``(B, H, W)`` maps: continuous when repeated."""
    flipped_rows = torch.cat([data, data.flip(-2)], dim=-2)
    return torch.cat([flipped_rows, flipped_rows.flip(-1)], dim=-1)

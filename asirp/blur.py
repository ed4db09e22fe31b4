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

The direct (Fourier-filter) methods use ``"reflect"`` by default: the map is mirrored into a
``(2H, 2W)`` even extension, which is smooth when repeated, so the filter does not ring; it is
exact for symmetric PSFs (the discrete cosine transform diagonalises such blurs).

References
----------
.. [1] M. Bertero and P. Boccacci, "A simple method for the reduction of boundary effects in the
   Richardson-Lucy approach to image deconvolution", A&A 437, 369-374 (2005).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asirp.backend import fast_fft_shape

BOUNDARY_MODES = ("extend", "zero", "periodic")


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

    Attributes
    ----------
    object_shape : (int, int)
        Shape of the object grid: ``(H + h - 1, W + w - 1)`` for ``"extend"``, else ``(H, W)``.
    offset : (int, int)
        Where the data grid starts inside the object grid.
    fft_shape : (int, int)
        The FFT grid (fast sizes, large enough that no wrap-around reaches the data).
    otf : torch.Tensor
        The PSF's transfer function on ``fft_shape``.
    """

    def __init__(self, psf: torch.Tensor, data_shape: tuple[int, int], boundary: str = "extend"):
        if boundary not in BOUNDARY_MODES:
            raise ValueError(f"unknown boundary {boundary!r}; allowed: {', '.join(BOUNDARY_MODES)}")
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
        self.set_psf(psf)

    def set_psf(self, psf: torch.Tensor) -> None:
        """Replace the PSF (same size), as blind deconvolution does every iteration."""
        self.otf = psf_to_otf(psf, self.fft_shape)

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
        return self.adjoint_from_spectrum(self.data_spectrum(data))

    def crop(self, obj: torch.Tensor) -> torch.Tensor:
        """The part of an object that lies under the data grid, ``(B, H, W)``."""
        top, left = self.offset
        return obj[..., top : top + self.data_shape[0], left : left + self.data_shape[1]]


def mirror_extend(data: torch.Tensor) -> torch.Tensor:
    """Even extension ``(B, 2H, 2W)`` of ``(B, H, W)`` maps: continuous when repeated."""
    flipped_rows = torch.cat([data, data.flip(-2)], dim=-2)
    return torch.cat([flipped_rows, flipped_rows.flip(-1)], dim=-1)

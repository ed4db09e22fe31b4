"""Fourier-domain set-up shared by the direct (filtering) methods."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asirp.blur import mirror_extend, psf_to_otf


@dataclass
class SpectralProblem:
    """Data and PSF on the FFT grid of a direct method.

    Attributes
    ----------
    data_spectrum : torch.Tensor
        Real FFT of the (extended) data, ``(B, N_rows, N_cols // 2 + 1)``.
    otf : torch.Tensor
        Real FFT of the PSF on the same grid.
    grid_shape : (int, int)
        ``(N_rows, N_cols)``: ``(2H, 2W)`` for ``"reflect"``, ``(H, W)`` for ``"periodic"``.
    data_shape : (int, int)
        ``(H, W)`` of the maps.
    """

    data_spectrum: torch.Tensor
    otf: torch.Tensor
    grid_shape: tuple[int, int]
    data_shape: tuple[int, int]

    def to_image(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Inverse FFT of a filtered spectrum, cropped to the maps, ``(B, H, W)``."""
        image = torch.fft.irfft2(spectrum, s=self.grid_shape)
        return image[..., : self.data_shape[0], : self.data_shape[1]]


def spectral_problem(data: torch.Tensor, psf: torch.Tensor, boundary: str) -> SpectralProblem:
    """Put maps ``(B, H, W)`` and a PSF ``(h, w)`` on an FFT grid for ``boundary``.

    ``"reflect"`` mirrors the maps into a ``(2H, 2W)`` even extension (no edge ringing);
    ``"periodic"`` uses the maps as they are.
    """
    data_shape = (int(data.shape[-2]), int(data.shape[-1]))
    extended = mirror_extend(data) if boundary == "reflect" else data
    grid_shape = (int(extended.shape[-2]), int(extended.shape[-1]))
    return SpectralProblem(
        torch.fft.rfft2(extended), psf_to_otf(psf, grid_shape), grid_shape, data_shape
    )


def laplacian_power(grid_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``|L(f)|^2`` of the 5-point discrete Laplacian, on a real-FFT grid."""
    rows = torch.fft.fftfreq(grid_shape[0], device=device)
    cols = torch.fft.rfftfreq(grid_shape[1], device=device)
    symbol = (
        4 * torch.sin(torch.pi * rows)[:, None] ** 2 + 4 * torch.sin(torch.pi * cols)[None] ** 2
    )
    return symbol**2

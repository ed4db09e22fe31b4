r"""The no-reference score: predict one part of the data from a restoration of the other.

Let :math:`y_1, y_2` be the two independent parts of a map (:mod:`asirp.selection.splitting`),
:math:`\hat x_k` a candidate's restoration of part :math:`k`, :math:`F` the forward model (the
blur, and for super-resolution the area sampling), :math:`r` the intensity ratio of the parts
and :math:`h` the PSF's transfer function. The residual of the prediction of the *other* part,

.. math:: \rho_2 = y_2 - r \, F \hat x_1, \qquad \rho_1 = y_1 - F \hat x_2 / r,

has expectation :math:`F(x - \hat x)` and noise independent of :math:`\hat x` (that is what the
split is for), so for any fixed weight :math:`w(f)` the weighted residual energy is an unbiased
estimate of the weighted error of the restoration plus a constant (the noise energy, the same for
every candidate). The score uses the weight :math:`|G|^2` of a regularised inverse filter
:math:`G = h^* / (|h|^2 + \alpha)`, which maps the data-domain error back to the object
domain over the band the data measure (where :math:`|h|^2 \gg \alpha`):
:math:`|G h|^2 \approx 1` there and :math:`\to 0` where the blur erased the object. Outside that
band the data say nothing about the bias of a restoration, but the split still measures its
*variance*: the two restorations differ only by their noise, so
:math:`E |\hat x_1 - \hat x_2|^2 = 2 \, \mathrm{Var}\, \hat x`.

A part holds half the counts (binomial thinning) or twice the noise variance (data fission) of
the data, and the data, not a part, will be restored. For a linear, scale-equivariant estimator
with fixed settings the bias is the same and the variance halves on the full data, which removes
:math:`\tfrac14 |\hat x_1 - \hat x_2|^2` from the half-data error; the score makes that
extrapolation, :math:`c = 1/4` (:data:`EXTRAPOLATION`; none for two real measurements, where
the data themselves are restored). Non-linear methods at very low counts gain less than that;
the narrower band used for noisy data (below) keeps them from being over-credited:

.. math:: S = \frac{1}{N} \Big[ \tfrac12 \sum_f |G(f)|^2 \big( |\hat\rho_1(f)|^2
          + |\hat\rho_2(f)|^2 \big)
          + \sum_f \big( \tfrac12 (1 - |G(f) h(f)|^2) - c \big)
          \, |\hat x_1(f) - \hat x_2(f) / r|^2 \Big],

an estimate (plus the constant noise term) of the mean squared error of the candidate's
restoration of the data in the object domain: in-band error and out-of-band variance, in the
units of a part (data units squared). Lower is better. It is computed on the interior of the
maps (a margin of one PSF radius is left out, since predictions near the edges depend on the
unknown object outside the map), mirror-extended so the FFT sees no edge.

Assumptions, stated plainly:

- the two parts have independent noise (exact for binomial thinning of Poisson counts and for
  two measurements; approximate for data fission, see :mod:`asirp.selection.splitting`);
- the forward model is right (the PSF, and for super-resolution the sampling);
- out-of-band bias is not measurable, so two restorations that differ only there score the same
  (the variance they add there is counted): methods that extrapolate past the band (positivity
  on sparse objects) get no credit for it;
- the step from a part to the data is the variance extrapolation above. Self-tuning
  methods (discrepancy stop, GCV, estimated spectra) re-tune on the full data, which the score
  does not see.

:math:`\alpha` (dimensionless, :math:`|h(0)|^2 = 1`) sets the band: frequencies where the PSF
still passes more than about :math:`\sqrt{\alpha}` of the amplitude. A wide band makes the score
see more of the object-domain error, but the noise it amplifies (by up to :math:`1 / 4\alpha`)
makes it less certain; so :math:`\alpha` follows the data's noise-to-signal ratio
(:func:`band_alpha`): narrow for faint, noisy maps, wide for bright ones. ``ALPHA_PER_NSR``,
``ALPHA_RANGE`` and ``EXTRAPOLATION`` were fixed on tuning sets of simulated maps drawn from
seeds other than the evaluation set's (``bench/eval_selector.py``).

Alongside the score, the mean Poisson deviance of the predictions (binomial splits) and the
Fourier ring correlation of the two restorations (its 1/7 resolution) are reported.

References
----------
.. [1] M. Stone, "Cross-validatory choice and assessment of statistical predictions", J. R.
   Stat. Soc. B 36, 111-147 (1974).
.. [2] J. Batson and L. Royer, "Noise2Self: blind denoising by self-supervision", ICML (2019).
.. [3] N. Banterle, K. H. Bui, E. A. Lemke and M. Beck, "Fourier ring correlation as a
   resolution criterion for super-resolution microscopy", J. Struct. Biol. 183, 363 (2013).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from asirp.blur import mirror_extend
from asirp.iteration import poisson_deviance
from asirp.metrics import fourier_ring_correlation, noise_sigma

ALPHA_PER_NSR = 0.02
r""":math:`\alpha` per unit of the data's noise-to-signal power ratio (see :func:`band_alpha`)."""
ALPHA_RANGE = (1e-4, 3e-2)
r"""Bounds of :math:`\alpha`."""
ALPHA = 1e-3
r"""Default :math:`\alpha` of :func:`band_weights` (dimensionless)."""
EXTRAPOLATION = 0.25
"""Share ``c`` of the split difference's energy removed to go from a part to the data."""
EMPHASES = ("flat", "ramp")
"""Frequency weightings of the object-domain error (:func:`band_weights`)."""


def transfer_power(
    psf: np.ndarray | None, grid_shape: tuple[int, int], scale: int = 1
) -> np.ndarray:
    """``|h(f)|^2`` of a centred PSF on a real-FFT grid, at frequencies in input pixels.

    Parameters
    ----------
    psf : numpy.ndarray or None
        ``(h, w)`` kernel on the input (measured) grid, sum 1; ``None`` for no blur.
    grid_shape : (int, int)
        ``(N_rows, N_cols)`` of the grid, in output pixels (``scale`` per input pixel).
    scale : int
        Output pixels per input pixel. Frequencies beyond the input's Nyquist limit are not
        measured: their power is 0.

    Returns
    -------
    numpy.ndarray
        ``(N_rows, N_cols // 2 + 1)``, float64, in [0, 1].
    """
    key = None if psf is None else (np.asarray(psf, dtype=np.float32).tobytes(), np.shape(psf))
    return _transfer_power(key, (int(grid_shape[0]), int(grid_shape[1])), int(scale)).copy()


@functools.lru_cache(maxsize=32)
def _transfer_power(
    key: tuple[bytes, tuple[int, ...]] | None, grid_shape: tuple[int, int], scale: int
) -> np.ndarray:
    """:func:`transfer_power` with the PSF as bytes (cached: live scans reuse one PSF)."""
    psf = None if key is None else np.frombuffer(key[0], dtype=np.float32).reshape(key[1])
    freq_y = np.fft.fftfreq(grid_shape[0]) * scale
    freq_x = np.fft.rfftfreq(grid_shape[1]) * scale
    if psf is None:
        power = np.ones((freq_y.size, freq_x.size))
    else:
        kernel = np.asarray(psf, dtype=np.float64)
        kernel = kernel / kernel.sum()
        taps_y = np.arange(kernel.shape[0]) - kernel.shape[0] // 2
        taps_x = np.arange(kernel.shape[1]) - kernel.shape[1] // 2
        phase_y = np.exp(-2j * np.pi * np.outer(freq_y, taps_y))
        phase_x = np.exp(-2j * np.pi * np.outer(taps_x, freq_x))
        power = np.abs(phase_y @ kernel @ phase_x) ** 2
    measured = (np.abs(freq_y)[:, None] <= 0.5 + 1e-9) & (np.abs(freq_x)[None, :] <= 0.5 + 1e-9)
    return np.where(measured, np.clip(power, 0.0, 1.0), 0.0)


def band_alpha(data: np.ndarray) -> float:
    r"""The band floor :math:`\alpha` for maps ``(B, H, W)``: ``ALPHA_PER_NSR`` times their NSR.

    The noise power is Immerkaer's estimate (:func:`asirp.metrics.noise_sigma`) squared, the
    signal power the maps' variance less it; the ratio is averaged over the maps and the result
    clipped to ``ALPHA_RANGE``.
    """
    ratios = []
    for image in np.asarray(data, dtype=np.float64):
        noise = noise_sigma(image) ** 2
        signal = max(float(np.var(image)) - noise, 1e-3 * noise, 1e-30)
        ratios.append(noise / signal)
    low, high = ALPHA_RANGE
    return float(np.clip(ALPHA_PER_NSR * np.mean(ratios), low, high))


def _real_fft_multiplicity(grid_shape: tuple[int, int]) -> np.ndarray:
    columns = grid_shape[1] // 2 + 1
    multiplicity = np.full(columns, 2.0)
    multiplicity[0] = 1.0
    if grid_shape[1] % 2 == 0:
        multiplicity[-1] = 1.0
    return multiplicity[None, :]


@dataclass
class BandWeights:
    """Frequency weights of the score for one interior shape (see the module notes).

    Attributes
    ----------
    residual : torch.Tensor
        ``|G|^2`` times the real-FFT multiplicity over ``N^2``, on the mirrored input grid.
    variance : torch.Tensor
        ``1 - |G h|^2`` likewise, on the mirrored output grid.
    flat : torch.Tensor
        The multiplicity over ``N^2`` alone on that grid (the plain mean square).
    noise_gain : float
        Mean of ``|G|^2`` over the full FFT grid: white noise of variance ``v`` adds
        ``v * noise_gain`` to the residual term.
    """

    residual: torch.Tensor
    variance: torch.Tensor
    flat: torch.Tensor
    noise_gain: float


def ramp_emphasis(grid_shape: tuple[int, int]) -> np.ndarray:
    r"""FBP's weight :math:`|f_x|` along the rows of a sinogram, mean 1 over the FFT grid.

    Filtered back-projection multiplies each projection's spectrum by the ramp :math:`|f|`
    along the detector, and by Parseval in polar coordinates the reconstruction's squared error
    is the projections' error spectrum weighted by :math:`|f|`, summed over the angles (the
    rows). Normalised so that white noise keeps its energy.

    Parameters
    ----------
    grid_shape : (int, int)
        ``(angles, columns)`` of the (mirrored) grid.

    Returns
    -------
    numpy.ndarray
        ``(1, columns // 2 + 1)`` float64, on the real-FFT grid.
    """
    ramp = np.abs(np.fft.rfftfreq(grid_shape[1]))
    mean = float(np.mean(np.abs(np.fft.fftfreq(grid_shape[1]))))
    return (ramp / mean)[None, :]


def band_weights(
    psf: np.ndarray | None,
    interior: tuple[int, int],
    scale: int,
    device: torch.device,
    alpha: float = ALPHA,
    emphasis: str = "flat",
) -> BandWeights:
    """Weights for residuals on an ``interior`` (input px) and differences on ``scale`` times it.

    Parameters
    ----------
    psf : numpy.ndarray or None
        PSF on the input grid, or ``None`` (no blur: the band is every frequency).
    interior : (int, int)
        Shape of the scored interior of one map, input pixels.
    scale : int
        Output pixels per input pixel.
    device : torch.device
        Where the weights live.
    alpha : float
        Band floor (> 0).
    emphasis : {"flat", "ramp"}
        How the object-domain error is weighted over frequency: evenly (a map is the result),
        or by FBP's ramp along the rows (:func:`ramp_emphasis`: the maps are sinograms, angles
        x detector columns, and the reconstruction is the result).
    """
    if emphasis not in EMPHASES:
        raise ValueError(f"unknown emphasis {emphasis!r}; allowed: {', '.join(EMPHASES)}")
    grid = (2 * interior[0], 2 * interior[1])
    power = transfer_power(psf, grid, 1)
    g2 = power / (power + alpha) ** 2
    n = grid[0] * grid[1]
    multiplicity = _real_fft_multiplicity(grid)
    if emphasis == "ramp":
        multiplicity = multiplicity * ramp_emphasis(grid)
    residual = g2 * multiplicity / n**2
    noise_gain = float((g2 * multiplicity).sum() / n)

    out_grid = (2 * interior[0] * scale, 2 * interior[1] * scale)
    out_power = transfer_power(psf, out_grid, scale)
    passed = out_power / (out_power + alpha)
    out_n = out_grid[0] * out_grid[1]
    out_multiplicity = _real_fft_multiplicity(out_grid)
    if emphasis == "ramp":
        out_multiplicity = out_multiplicity * ramp_emphasis(out_grid)
    flat = np.broadcast_to(out_multiplicity / out_n**2, passed.shape)
    variance = (1.0 - passed**2) * flat

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

    return BandWeights(tensor(residual), tensor(variance), tensor(flat), noise_gain)


def weighted_energy(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted spectral energy of mirror-extended maps ``(B, h, w)``, shape ``(B,)``."""
    spectrum = torch.fft.rfft2(mirror_extend(maps))
    return (spectrum.abs() ** 2 * weights).sum(dim=(-2, -1))


def interior(maps: torch.Tensor, margin: int) -> torch.Tensor:
    """The maps ``(B, H, W)`` without ``margin`` pixels on each side."""
    if margin == 0:
        return maps
    return maps[..., margin:-margin, margin:-margin]


@dataclass
class PartScores:
    """Score terms of one candidate on one split, per map.

    Attributes
    ----------
    residual : numpy.ndarray
        ``(B,)``: half the sum of the weighted residual energies of both predictions.
    variance : numpy.ndarray
        ``(B,)``: half the out-of-band energy of the difference of the two restorations, less
        the extrapolation to the full data (``c`` times its whole energy).
    noise : numpy.ndarray
        ``(B,)``: the expected residual energy of a perfect restoration (noise only).
    deviance : numpy.ndarray or None
        ``(B,)`` mean Poisson deviance of the predictions per pixel (binomial splits only).
    """

    residual: np.ndarray
    variance: np.ndarray
    noise: np.ndarray
    deviance: np.ndarray | None

    @property
    def total(self) -> np.ndarray:
        """The score ``S`` per map."""
        return self.residual + self.variance


def score_parts(
    parts: tuple[torch.Tensor, torch.Tensor],
    predictions: tuple[torch.Tensor, torch.Tensor],
    restorations: tuple[torch.Tensor, torch.Tensor],
    ratio: torch.Tensor,
    weights: BandWeights,
    margin: int,
    scale: int,
    noise_variance: np.ndarray,
    gain: float | None = None,
    extrapolation: float = EXTRAPOLATION,
) -> PartScores:
    """Score a candidate from its restorations of both parts and their cross-predictions.

    Parameters
    ----------
    parts : (torch.Tensor, torch.Tensor)
        The data parts ``(B, H, W)``.
    predictions : (torch.Tensor, torch.Tensor)
        Predictions of each part from the restoration of the other, ``(B, H, W)``.
    restorations : (torch.Tensor, torch.Tensor)
        The restorations of the first and the second part, ``(B, s H, s W)``.
    ratio : torch.Tensor
        ``(B,)`` second/first intensity ratio.
    weights : BandWeights
        From :func:`band_weights` for the interior shape.
    margin : int
        Border left out, input pixels.
    scale : int
        Output pixels per input pixel.
    noise_variance : numpy.ndarray
        ``(2, B)`` noise variance per pixel of each part.
    gain : float, optional
        Data units per Poisson event: when given, the Poisson deviance is reported.
    extrapolation : float
        ``c`` in the module notes (0 when the data themselves were one of the parts).

    Returns
    -------
    PartScores
        The terms per map.
    """
    residual = 0.5 * sum(
        weighted_energy(interior(part - prediction, margin), weights.residual)
        for part, prediction in zip(parts, predictions, strict=True)
    )
    first, second = restorations
    difference = first - second / ratio.view(-1, 1, 1)
    weight = 0.5 * weights.variance - extrapolation * weights.flat
    variance = weighted_energy(interior(difference, margin * scale), weight)
    noise = 0.5 * weights.noise_gain * (noise_variance[0] + noise_variance[1])
    deviance = None
    if gain is not None:
        deviance = 0.5 * sum(
            poisson_deviance(
                interior(part, margin).clamp_min(0.0) / gain,
                interior(prediction, margin).clamp_min(1e-6) / gain,
            )
            for part, prediction in zip(parts, predictions, strict=True)
        )
        deviance = deviance.detach().cpu().numpy().astype(np.float64)
    return PartScores(
        residual.detach().cpu().numpy().astype(np.float64),
        variance.detach().cpu().numpy().astype(np.float64),
        np.asarray(noise, dtype=np.float64),
        deviance,
    )


def gain_over_input_db(score: float, input_score: float, noise: float) -> float:
    """Estimated error reduction of a candidate over the unrestored input, dB.

    Both scores less the noise term estimate the object-domain errors; the ratio is clamped so
    that noise in the estimate cannot give infinities (at most about +-30 dB).
    """
    floor = 1e-3 * max(abs(input_score - noise), 1e-30)
    ratio = max(input_score - noise, floor) / max(score - noise, floor)
    return 10.0 * math.log10(ratio)


def frc_resolution_px(first: np.ndarray, second: np.ndarray, scale: int) -> float:
    """1/7-threshold FRC resolution of two restorations, input pixels (``nan``: not reached)."""
    return fourier_ring_correlation(first, second).resolution_px / scale

r"""The hallucination guard of super-resolution: do two independent halves of the data agree.

The consistency check (:mod:`asirp.sr.consistency`) cannot see invented detail that the forward
model removes again: detail finer than the beam, or above the measured grid's Nyquist frequency,
is blurred and averaged away, so a result full of it still reproduces the input. This guard
asks the data instead. The measured map ``y`` is split into two halves with independent noise
(binomial thinning for integer counts, :func:`asirp.heldout.thin_counts`; Gaussian data fission
otherwise: ``y ± z`` with ``z ~ N(0, sigma^2)``, as :func:`asirp.selection.splitting.fission_split`
makes it), and each half is super-resolved with the same method and settings (for ``zssr``: the
network trained once on the full map, applied to each half). Then two Fourier ring correlations
(:func:`asirp.metrics.fourier_ring_correlation`, 1/7 threshold) are compared on the fine grid:

- the **data's agreement**: the FRC of the two halves upsampled by bicubic interpolation, a
  linear map that adds nothing the data do not hold;
- the **super-resolution's agreement**: the FRC of the two super-resolved halves.

A ring-wise linear filter (a correct deconvolution) leaves the FRC unchanged, and whatever the
data hold is in both halves with independent noise. Where the super-resolved halves agree at
frequencies at which the data's halves no longer do, the agreement comes from what the two runs
share, the method's prior (a network's training set), not from the data: that detail is
invented. A result is flagged when its agreement reaches past the data's by more than
:data:`INVENTED_MARGIN` (as a ratio of the resolutions). A map whose halves, on the measured
grid, agree beyond chance in no ring (:func:`significant_rings`) is noise-dominated: anything
sharper is the method's.

Figures, per map (``Restoration.metrics``, input pixels; over a stack the resolutions are
averaged and a flag holds when it holds for any map; the cautions count the flagged maps):

``split_agreement_resolution_px``
    FRC resolution of the two super-resolved halves.
``data_resolution_px``
    FRC resolution of the two halves upsampled by bicubic interpolation (the data's).
``invented_detail``
    ``True`` when the first is finer than the second by more than :data:`INVENTED_MARGIN`.
``noise_dominated``
    ``True`` when the halves agree beyond chance in fewer than :data:`NOISE_RINGS` rings.

A resolution that the FRC never drops below the threshold is the fine grid's limit,
``2 / scale`` input pixels; one that drops at once is the ring's period (about the map side).
The guard super-resolves two full-size maps more: the inference of ``fca_sr`` and ``rrdb_sr``
takes three times as long (measured on the CPU: 0.40 s to 1.42 s for a 512 x 512 map with
``fca_sr``, 0.75 s to 2.62 s with ``rrdb_sr``), ``zssr`` little more (its training, done
once, dominates). The runner therefore uses it for the networks only and for maps up to
:data:`MAX_GUARD_PIXELS` (``params["split_guard_status"]`` records what happened).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from asirp.heldout import thin_counts
from asirp.iteration import is_integer_counts
from asirp.metrics import FRC_THRESHOLD, fourier_ring_correlation, noise_sigma

INVENTED_MARGIN = 1.25
"""The super-resolved halves must agree to a resolution this many times finer than the data's
halves to flag invented detail (the FRC's first crossing moves by a ring or two with the noise
of a small map)."""

NOISE_RINGS = 1
"""A map whose halves agree beyond chance (:func:`significant_rings`) in fewer rings than this,
besides the constant one, is noise-dominated."""

MAX_GUARD_PIXELS = 512 * 512
"""Largest map (pixels of the input) the runner guards: the guard triples a network's inference."""

MIN_GUARD_SIDE = 8
"""Smallest map side (input px) with enough rings for an FRC."""

INVENTED_NOTE = "invented detail (split-data guard)"
"""Starts the selector's note on a super-resolution candidate whose two restorations agree past
the data (:func:`asirp.selection.trials.score_candidate`, read by
:func:`asirp.selection.report.explain_choice`)."""

SuperResolve = Callable[[torch.Tensor], torch.Tensor]
"""``super_resolve(halves (2, H, W)) -> (2, s H, s W)``: the method, as it ran on the map."""


@dataclass
class GuardFigures:
    """The guard's verdict on one map.

    Attributes
    ----------
    split_agreement_resolution_px : float
        FRC resolution of the two super-resolved halves, input px.
    data_resolution_px : float
        FRC resolution of the two bicubic-upsampled halves, input px.
    invented_detail : bool
        The super-resolved halves agree past the data's halves (see the module notes).
    noise_dominated : bool
        The data's halves agree in fewer than :data:`NOISE_RINGS` rings.
    split : str
        ``"binomial"`` or ``"fission"``.
    """

    split_agreement_resolution_px: float
    data_resolution_px: float
    invented_detail: bool
    noise_dominated: bool
    split: str

    def metrics(self) -> dict[str, float | bool]:
        """The figures for ``Restoration.metrics``."""
        return {
            "split_agreement_resolution_px": self.split_agreement_resolution_px,
            "data_resolution_px": self.data_resolution_px,
            "invented_detail": self.invented_detail,
            "noise_dominated": self.noise_dominated,
        }


def split_halves(image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Two halves of a map ``(H, W)`` with independent noise, float32, and the split's kind.

    Integer counts are thinned binomially (each half has half the counts, so the halves are
    scaled back by 2 to the map's level); other data get Gaussian data fission (each half has
    the full mean and twice the noise variance).
    """
    if is_integer_counts(image):
        first, second = thin_counts(np.asarray(image, np.int64), 0.5, np.random.default_rng(seed))
        return (2.0 * first).astype(np.float32), (2.0 * second).astype(np.float32), "binomial"
    # data fission, as asirp.selection.splitting.fission_split (a layer above this one) does it
    values = np.asarray(image, np.float64)
    draw = np.random.default_rng(seed).normal(size=values.shape) * noise_sigma(values)
    return (values + draw).astype(np.float32), (values - draw).astype(np.float32), "fission"


def _resolution(first: np.ndarray, second: np.ndarray, scale: int) -> float:
    """FRC (1/7) resolution of two fine maps ``(s H, s W)``, input px."""
    resolution = fourier_ring_correlation(first, second).resolution_px
    if not np.isfinite(resolution):  # agreement up to the fine grid's Nyquist frequency
        resolution = 2.0
    return float(resolution) / scale


def significant_rings(first: np.ndarray, second: np.ndarray) -> int:
    """Rings (the constant one left out) where two maps agree beyond chance.

    A ring's FRC must reach both the 1/7 threshold and three standard deviations of the FRC of
    two independent noise maps, ``3 / sqrt(n / 2)`` for a ring of ``n`` Fourier coefficients
    (half of them independent, the spectrum of a real map being symmetric): the innermost
    rings of a small map hold a handful of coefficients, and two noise maps pass 1/7 there
    by chance about half of the time.
    """
    frc = fourier_ring_correlation(first, second)
    rows, cols = first.shape
    radius = np.hypot(np.fft.fftfreq(rows)[:, None], np.fft.fftfreq(cols)[None, :])
    n_rings = frc.correlation.size  # the rings of asirp.metrics.fourier_ring_correlation
    ring = np.minimum((radius * 2 * n_rings).astype(int), n_rings)
    count = np.bincount(ring.ravel(), minlength=n_rings + 1)[:n_rings]
    level = np.maximum(FRC_THRESHOLD, 3.0 / np.sqrt(np.maximum(count, 1) / 2.0))
    return int(np.count_nonzero(frc.correlation[1:] >= level[1:]))


def guard_figures(
    first_fine: np.ndarray,
    second_fine: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    scale: int,
    split: str,
) -> GuardFigures:
    """The guard's figures from two halves and their super-resolutions.

    Parameters
    ----------
    first_fine, second_fine : numpy.ndarray
        ``(s H, s W)`` super-resolutions of the two halves.
    first, second : numpy.ndarray
        ``(H, W)`` the two halves (independent noise, same level).
    scale : int
        Upscaling factor ``s``.
    split : str
        How the halves were made (for the record).

    Returns
    -------
    GuardFigures
    """
    pair = torch.from_numpy(np.stack([first, second]).astype(np.float32))[:, None]
    bicubic = F.interpolate(pair, scale_factor=scale, mode="bicubic", align_corners=False)
    data_px = _resolution(bicubic[0, 0].numpy(), bicubic[1, 0].numpy(), scale)
    sr_px = _resolution(np.asarray(first_fine), np.asarray(second_fine), scale)
    # noise is judged on the measured grid: interpolation adds no rings of its own
    noise = significant_rings(first, second) < NOISE_RINGS
    invented = sr_px * INVENTED_MARGIN < data_px
    return GuardFigures(sr_px, data_px, bool(invented), bool(noise), split)


def guard_map(
    image: torch.Tensor, super_resolve: SuperResolve, scale: int, seed: int
) -> GuardFigures:
    """Split one measured map, super-resolve both halves, and compare their agreement.

    Parameters
    ----------
    image : torch.Tensor
        ``(H, W)`` measured map, on the compute device.
    super_resolve : callable
        ``(2, H, W) -> (2, s H, s W)``, the method as it ran on the map.
    scale : int
        Upscaling factor.
    seed : int
        Seed of the split.

    Returns
    -------
    GuardFigures
    """
    data = image.detach().float().cpu().numpy()
    first, second, split = split_halves(data, seed)
    halves = torch.from_numpy(np.stack([first, second])).to(image.device)
    with torch.no_grad():
        fine = super_resolve(halves).detach().float().cpu().numpy()
    return guard_figures(fine[0], fine[1], first, second, scale, split)

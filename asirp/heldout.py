r"""Held-out tools: scoring a fit on counts it did not see, without ground truth.

Restoring part of a measurement and predicting the rest is how ASIRP judges a restoration when
nobody knows the truth: the blind beam-width search (:mod:`asirp.methods._psf_search`) and the
adaptive selector (:mod:`asirp.selection.splitting`, :mod:`asirp.selection.score`) both do it.
This module holds the pieces they share. It imports nothing from ASIRP, so any layer can use it.

Binomial thinning
-----------------
For Poisson counts :math:`y \sim \mathcal{P}(\mu)`, drawing :math:`y_1 \sim \mathrm{Binomial}(y,
p)` gives :math:`y_1` and :math:`y - y_1` as *independent* Poisson maps of means :math:`p\mu`
and :math:`(1-p)\mu` (the thinning property of the Poisson process; Leiner et al. 2023, Neufeld
et al. 2024). :func:`thin_counts` draws two disjoint subsets this way, :func:`make_folds` thins
each map of a stack with a generator seeded by the map itself, and keeps the complement of each
subset as its held-out counts.

Held-out Poisson likelihood
---------------------------
A prediction :math:`\hat\mu` of held-out counts :math:`\tilde y` is scored by the Poisson
deviance :math:`2 \sum_i [\tilde y_i \ln(\tilde y_i / \hat\mu_i) - \tilde y_i + \hat\mu_i]`,
written as twice the sum of :func:`poisson_deviance_terms` (the terms that depend on the
prediction) plus :func:`poisson_deviance_offset` (those that do not, the same for every
candidate of a map). :func:`standard_error` gives the standard error of a difference of two
such scores from their per-pixel terms, for rules such as "within one standard error of the
best". :func:`structured_window` picks the part of a map with the most edges, where a held-out
score has the most to say.

References
----------
.. [1] J. Leiner, B. Duan, L. Wasserman and A. Ramdas, "Data fission: splitting a single data
   point", J. Am. Stat. Assoc. (2023).
.. [2] A. Neufeld, A. Dharamshi, L. L. Gao and D. Witten, "Data thinning for
   convolution-closed distributions", J. Mach. Learn. Res. 25, 1-35 (2024).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch


def thin_counts(
    events: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint binomial thinnings of a count map.

    Every event goes to the first subset with probability ``fraction``, to the second with
    probability ``fraction``, and stays out of both otherwise (a multinomial split). For Poisson
    counts the two subsets and the rest are independent Poisson maps.

    Parameters
    ----------
    events : numpy.ndarray
        Non-negative integer counts ``(H, W)``.
    fraction : float
        In (0, 1/2].
    rng : numpy.random.Generator
        Seeded generator.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The two subsets, int64 ``(H, W)``.
    """
    first = rng.binomial(events, fraction)
    if fraction >= 0.5:
        return first, events - first
    second = rng.binomial(events - first, fraction / (1.0 - fraction))
    return first, second


def structured_window(image: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window of a map with the most edge energy.

    Edge energy is the sum of squared differences of the map after a 3 x 3 box average (which
    lowers the noise). Windows are tried on a grid of steps ``size // 4``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` counts.
    size : int
        Window side, pixels.

    Returns
    -------
    (slice, slice)
        Rows and columns of the window (the whole axis where it is not longer than ``size``).
    """
    rows, cols = image.shape
    if rows <= size and cols <= size:
        return slice(0, rows), slice(0, cols)
    padded = np.pad(image.astype(np.float64), 1, mode="edge")
    smooth = sum(padded[dy : dy + rows, dx : dx + cols] for dy in range(3) for dx in range(3)) / 9.0
    energy = np.zeros_like(smooth)
    energy[:-1, :] += np.diff(smooth, axis=0) ** 2
    energy[:, :-1] += np.diff(smooth, axis=1) ** 2
    table = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    size_y, size_x = min(size, rows), min(size, cols)
    step = max(1, size // 4)
    starts_y = sorted({*range(0, rows - size_y + 1, step), rows - size_y})
    starts_x = sorted({*range(0, cols - size_x + 1, step), cols - size_x})
    best, where = -1.0, (0, 0)
    for top in starts_y:
        for left in starts_x:
            total = (
                table[top + size_y, left + size_x]
                - table[top, left + size_x]
                - table[top + size_y, left]
                + table[top, left]
            )
            if total > best:
                best, where = total, (top, left)
    return slice(where[0], where[0] + size_y), slice(where[1], where[1] + size_x)


@dataclass
class Folds:
    """Thinned counts of a stack of maps, for the held-out scores.

    Attributes
    ----------
    fit : torch.Tensor
        ``(B, 2, h, w)`` the two fitted subsets of every map (events).
    held : torch.Tensor
        ``(B, 2, h, w)`` the counts held out from each (events).
    fraction : numpy.ndarray
        ``(B,)`` the thinning probability of each map.
    background : float
        Background of the full map, events per pixel.
    """

    fit: torch.Tensor
    held: torch.Tensor
    fraction: np.ndarray
    background: float


def make_folds(
    events: np.ndarray, counts: float, background: float, seed: int, device: torch.device
) -> Folds:
    """Thin each map of a stack into two fitted subsets and their held-out complements.

    The generator of each map is seeded by ``seed`` and a checksum of the map, so a map gets
    the same split whatever stack or chunk it is restored in.

    Parameters
    ----------
    events : numpy.ndarray
        ``(B, h, w)`` non-negative integer counts (Poisson events).
    counts : float
        Target events per subset at the brightest pixels (99.5th percentile).
    background : float
        Background, events per pixel.
    seed : int
        The restoration's seed.
    device : torch.device
        Where the tensors go.
    """
    fits, helds, fractions = [], [], []
    for image in events:
        checksum = zlib.crc32(np.ascontiguousarray(image).tobytes())
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, checksum])
        bright = float(np.percentile(image, 99.5))
        fraction = 0.5 if bright <= 2.0 * counts else max(counts / bright, 1e-3)
        first, second = thin_counts(image, fraction, rng)
        fits.append(np.stack([first, second]))
        helds.append(np.stack([image - first, image - second]))
        fractions.append(fraction)

    def tensor(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays).astype(np.float32)).to(device)

    return Folds(tensor(fits), tensor(helds), np.asarray(fractions), float(background))


def standard_error(deviance: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    r"""Standard error of a difference of summed held-out deviances, from per-pixel terms.

    Parameters
    ----------
    deviance : torch.Tensor
        ``(..., h, w)`` per-pixel held-out deviance of candidates.
    reference : torch.Tensor
        ``(h, w)`` or broadcastable: that of the reference (the best candidate).

    Returns
    -------
    torch.Tensor
        ``(...)``: :math:`\sqrt{N \operatorname{var}_i(d_i - d^{\mathrm{ref}}_i)}` with ``N``
        pixels, in deviance units (events).
    """
    difference = (deviance - reference).flatten(-2).double()
    return (difference.shape[-1] * difference.var(dim=-1)).sqrt()


def poisson_deviance_terms(held: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    r"""Per-pixel terms of the half Poisson deviance that depend on the prediction.

    Parameters
    ----------
    held : torch.Tensor
        Held-out counts :math:`\tilde y` (events).
    mean : torch.Tensor
        Their predicted means :math:`\hat\mu`, > 0, broadcastable with ``held``.

    Returns
    -------
    torch.Tensor
        :math:`\hat\mu - \tilde y \ln \hat\mu`; summed over pixels and added to
        :func:`poisson_deviance_offset`, half the Poisson deviance.
    """
    return mean - held * mean.log()


def poisson_deviance_offset(held: torch.Tensor) -> torch.Tensor:
    r"""Per-image sum of the half-Poisson-deviance terms that do not depend on the prediction.

    Parameters
    ----------
    held : torch.Tensor
        ``(..., h, w)`` held-out counts :math:`\tilde y` (events).

    Returns
    -------
    torch.Tensor
        ``(...)`` float64: :math:`\sum_i (\tilde y_i \ln \tilde y_i - \tilde y_i)` (with
        :math:`0 \ln 0 = 0`).
    """
    return (torch.xlogy(held, held) - held).sum(dim=(-2, -1), dtype=torch.float64)

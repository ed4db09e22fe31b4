r"""Two independent parts of one measurement, for scoring restorations without ground truth.

The selector restores one part and predicts the other through the forward model; the score is
only honest when the two parts have independent noise. Three ways to get them:

``"binomial"`` (counts: µ-XRF maps, raw detector images)
    Binomial thinning. For Poisson counts :math:`n \sim \mathcal{P}(\lambda)`, drawing
    :math:`n_1 \sim \mathrm{Binomial}(n, 1/2)` and :math:`n_2 = n - n_1` gives two *independent*
    Poisson maps of mean :math:`\lambda / 2` each (the thinning property of the Poisson process;
    :func:`asirp.heldout.thin_counts`, shared with the blind beam-width search).
    Maps that are not integer counts (normalised by I0, say) are thinned in count units: the gain
    ``g`` (detector units per Poisson event) is estimated from the noise
    (:func:`asirp.iteration.estimate_counts_gain`), ``n = round(y / g)`` is thinned and the parts
    are scaled back by ``g``; the rounding remainder (and any negative value) is shared equally,
    so the parts sum exactly to the data.
``"fission"`` (data that are not counts: flat-fielded tomography projections)
    Gaussian data fission (Leiner et al. 2023): with white noise of standard deviation
    :math:`\sigma` (Immerkaer's estimate, :func:`asirp.metrics.noise_sigma`) and an independent
    draw :math:`z \sim \mathcal{N}(0, \sigma^2)`, the parts :math:`y + z` and :math:`y - z` are
    independent when the noise is Gaussian with that variance (their covariance
    :math:`\sigma^2 - \sigma^2` vanishes). Each part has the full mean and twice the noise
    variance. For signal-dependent noise the parts are uncorrelated but not exactly independent,
    and a wrong :math:`\sigma` makes them correlated (too small) or needlessly noisy (too large).
``"measurements"`` (two detector elements, two passes)
    The caller's second, independent measurement of the same map. No assumption on the noise;
    the second may have another efficiency: its mean over the first's, per map, is the ``ratio``
    used to compare them.

References
----------
.. [1] J. Leiner, B. Duan, L. Wasserman and A. Ramdas, "Data fission: splitting a single data
   point", Journal of the American Statistical Association (2023).
.. [2] A. Neufeld, A. Dharamshi, L. L. Gao and D. Witten, "Data thinning for
   convolution-closed distributions", Journal of Machine Learning Research 25 (2024).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asirp.heldout import thin_counts

SPLIT_KINDS = ("binomial", "fission", "measurements")


@dataclass
class DataSplit:
    """Two independent parts of a stack of maps.

    Attributes
    ----------
    first, second : numpy.ndarray
        The parts, ``(B, H, W)`` float32, in the data's units.
    kind : {"binomial", "fission", "measurements"}
        How they were made (see the module notes).
    ratio : numpy.ndarray
        ``(B,)``: mean of ``second`` over mean of ``first``, per map (1 for the random splits).
        A restoration of ``first`` times ``ratio`` predicts ``second``.
    noise_variance : numpy.ndarray
        ``(2, B)``: mean noise variance per pixel of each part, data units squared.
    gain : float
        Data units per Poisson event used by the thinning (1 for the other kinds).
    description : str
        One line for the selection's reasons.
    part_gain : float or None
        Gain of the parts estimated from their noise (kinds other than binomial), filled in
        when a candidate's discrepancy stop needs it.
    """

    first: np.ndarray
    second: np.ndarray
    kind: str
    ratio: np.ndarray
    noise_variance: np.ndarray
    gain: float
    description: str
    part_gain: float | None = None


def binomial_split(data: np.ndarray, rng: np.random.Generator, gain: float = 1.0) -> DataSplit:
    """Split counts into two independent halves by binomial thinning.

    Parameters
    ----------
    data : numpy.ndarray
        ``(B, H, W)`` counts, or counts times ``gain``.
    rng : numpy.random.Generator
        Source of the random draws (seeded by the caller).
    gain : float
        Data units per Poisson event (> 0).

    Returns
    -------
    DataSplit
        ``first + second == data`` (up to float32 rounding); each part has mean ``data / 2``.
    """
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be finite and > 0, got {gain!r}")
    values = np.asarray(data, dtype=np.float64)
    counts = np.rint(np.clip(values, 0.0, None) / gain)
    half = thin_counts(counts.astype(np.int64), 0.5, rng)[0].astype(np.float64)
    first = gain * half + 0.5 * (values - gain * counts)
    second = values - first
    variance = np.stack(
        [gain * np.clip(part, 0.0, None).mean(axis=(-2, -1)) for part in (first, second)]
    )
    return DataSplit(
        first.astype(np.float32),
        second.astype(np.float32),
        "binomial",
        np.ones(values.shape[0]),
        variance,
        float(gain),
        f"binomial thinning of the counts into two independent halves (gain {gain:.3g} per count)",
    )


def fission_split(
    data: np.ndarray, rng: np.random.Generator, sigma: np.ndarray | None = None
) -> DataSplit:
    """Split data with additive Gaussian noise into two independent parts (data fission).

    Parameters
    ----------
    data : numpy.ndarray
        ``(B, H, W)`` maps.
    rng : numpy.random.Generator
        Source of the random draws.
    sigma : numpy.ndarray, optional
        ``(B,)`` noise standard deviation per map; estimated with
        :func:`asirp.metrics.noise_sigma` when not given.

    Returns
    -------
    DataSplit
        ``(data + z, data - z)`` with ``z ~ N(0, sigma^2)``; each part has the full mean and
        variance ``2 sigma^2``.
    """
    from asirp.metrics import noise_sigma

    values = np.asarray(data, dtype=np.float64)
    if sigma is None:
        sigma = np.array([noise_sigma(image) for image in values])
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if sigma.shape != (values.shape[0],) or not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError(f"sigma must hold one finite value >= 0 per map, got {sigma!r}")
    draw = rng.normal(size=values.shape) * sigma[:, None, None]
    variance = np.stack([2.0 * sigma**2, 2.0 * sigma**2])
    return DataSplit(
        (values + draw).astype(np.float32),
        (values - draw).astype(np.float32),
        "fission",
        np.ones(values.shape[0]),
        variance,
        1.0,
        "Gaussian data fission y ± z with z ~ N(0, sigma^2), sigma estimated from the data "
        f"(median {float(np.median(sigma)):.3g}; assumes white, signal-independent noise)",
    )


def measurement_split(first: np.ndarray, second: np.ndarray) -> DataSplit:
    """Use two independent measurements of the same maps as the two parts.

    Parameters
    ----------
    first, second : numpy.ndarray
        ``(B, H, W)`` each, same shape (for example two detector elements).

    Returns
    -------
    DataSplit
        The measurements, with ``ratio`` = mean(second) / mean(first) per map.

    Raises
    ------
    ValueError
        If the shapes differ or a map of either measurement has a mean <= 0 (no common scale).
    """
    from asirp.metrics import noise_sigma

    a = np.asarray(first, dtype=np.float32)
    b = np.asarray(second, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"the two measurements differ in shape: {a.shape} and {b.shape}")
    mean_a = a.mean(axis=(-2, -1), dtype=np.float64)
    mean_b = b.mean(axis=(-2, -1), dtype=np.float64)
    if np.any(mean_a <= 0) or np.any(mean_b <= 0):
        raise ValueError(
            "each map of both measurements must have a positive mean to compare them "
            f"(means {mean_a.min():.3g} and {mean_b.min():.3g})"
        )
    variance = np.stack([np.array([noise_sigma(image) ** 2 for image in part]) for part in (a, b)])
    ratio = mean_b / mean_a
    return DataSplit(
        a,
        b,
        "measurements",
        ratio,
        variance,
        1.0,
        "the caller's two independent measurements (second/first intensity ratio "
        f"{float(np.median(ratio)):.3g})",
    )

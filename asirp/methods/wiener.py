r"""Wiener deconvolution, with a given or estimated noise-to-signal ratio, and its self-tuned form.

``wiener`` applies the filter

.. math:: \hat x = \frac{\hat h^*}{|\hat h|^2 + \mathrm{NSR}(f)} \, \hat y

With ``nsr`` given, the noise-to-signal power ratio is that constant (parametric Wiener). Left
to ``None`` it is estimated per frequency from the data: the white-noise power (Immerkaer's
estimate) over the object's power spectrum, itself the ring-averaged data power minus the noise,
divided by :math:`|\hat h|^2` (the classical Wiener filter with an estimated spectrum).
``unsupervised_wiener`` wraps :func:`skimage.restoration.unsupervised_wiener` (Orieux et al. 2010),
a Gibbs sampler that estimates the noise and the (Laplacian) image prior together; it runs on the
CPU with numpy whatever the device, seeded for reproducibility.

Input policy: linear methods take the data as they are (negative values allowed); the constant
``background`` is subtracted first and, with ``positivity`` on, negative values of the result are
clipped to zero.

References
----------
.. [1] N. Wiener, *Extrapolation, Interpolation, and Smoothing of Stationary Time Series*, MIT
   Press (1949).
.. [2] F. Orieux, J.-F. Giovannelli and T. Rodet, "Bayesian estimation of regularization and
   point spread function parameters for Wiener-Hunt deconvolution", JOSA A 27, 1593 (2010).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from asirp.backend import to_numpy, to_tensor
from asirp.blur import mirror_extend
from asirp.methods._fourier import spectral_problem
from asirp.methods._public import Device, DirectBoundary
from asirp.metrics import noise_sigma
from asirp.registry import (
    BACKGROUND,
    DIRECT_BOUNDARY,
    POSITIVITY,
    CostPrior,
    MethodOutput,
    MethodSpec,
    Parameter,
    Problem,
    SelectorGrid,
    no_grad,
    register_method,
)
from asirp.restore import restore

OTF_POWER_FLOOR = 1e-2
"""Below this ``|h|^2`` the object's spectrum is not estimated from the data."""


def noise_variance(data: torch.Tensor) -> torch.Tensor:
    """White-noise variance of each map ``(B, H, W)`` (Immerkaer's estimate), shape ``(B,)``."""
    host = to_numpy(data)
    return torch.tensor(
        [noise_sigma(image) ** 2 for image in host], dtype=data.dtype, device=data.device
    )


def radial_power(spectrum: torch.Tensor, grid_shape: tuple[int, int]) -> torch.Tensor:
    """Power of a real-FFT spectrum averaged over rings of equal frequency, same shape.

    Parameters
    ----------
    spectrum : torch.Tensor
        ``(B, N_rows, N_cols // 2 + 1)`` complex.
    grid_shape : (int, int)
        ``(N_rows, N_cols)``.
    """
    rows = torch.fft.fftfreq(grid_shape[0], device=spectrum.device)
    cols = torch.fft.rfftfreq(grid_shape[1], device=spectrum.device)
    radius = torch.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)
    rings = (radius * max(grid_shape)).round().to(torch.int64).flatten()
    n_rings = int(rings.max()) + 1
    power = (spectrum.abs() ** 2).flatten(1)
    total = torch.zeros((power.shape[0], n_rings), dtype=power.dtype, device=power.device)
    total.index_add_(1, rings, power)
    count = torch.bincount(rings, minlength=n_rings).to(power.dtype)
    return (total / count)[:, rings].view(spectrum.shape)


@no_grad
def run_wiener(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Wiener filter on ``(B, H, W)`` maps; see the module notes."""
    assert problem.psf is not None  # guaranteed by needs_psf
    data = problem.data - params["background"]
    spectral = spectral_problem(data, problem.psf, params["boundary"])
    otf, otf_power = spectral.otf, spectral.otf.abs() ** 2
    info: dict[str, Any] = {}
    if params["nsr"] is None:
        # Noise power per bin is N * sigma^2 (unnormalised FFT); the signal part of the data's
        # power is what exceeds it, and the object's is that over |h|^2.
        bins = spectral.grid_shape[0] * spectral.grid_shape[1]
        noise_power = (bins * noise_variance(data)).view(-1, 1, 1)
        # A noiseless map (constant, all zero) has no noise estimate: a tiny floor keeps the
        # ratio defined (the filter then inverts the blur as far as the OTF floor allows).
        noise_power = noise_power.clamp_min(torch.finfo(noise_power.dtype).tiny)
        data_power = radial_power(spectral.data_spectrum, spectral.grid_shape)
        signal_power = (data_power - noise_power).clamp_min(1e-3 * noise_power)
        # Where the blur has erased the object (|h|^2 small) its spectrum is not measurable;
        # the floor keeps the estimate finite there, and the filter then tends to zero.
        object_power = signal_power / otf_power.clamp_min(OTF_POWER_FLOOR)
        nsr = noise_power / object_power
        info["nsr_estimated"] = "radial signal spectrum"
    else:
        nsr = torch.as_tensor(params["nsr"], dtype=data.dtype, device=data.device)
    filtered = spectral.data_spectrum * otf.conj() / (otf_power + nsr).clamp_min(1e-12)
    image = spectral.to_image(filtered)
    if params["positivity"]:
        image = image.clamp_min(0.0)
    problem.progress(1.0)
    return MethodOutput(image, problem.psf, info)


def run_unsupervised_wiener(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Self-tuned Wiener-Hunt deconvolution (scikit-image's Gibbs sampler), image by image."""
    from skimage.restoration import unsupervised_wiener

    assert problem.psf is not None  # guaranteed by needs_psf
    data = problem.data - params["background"]
    extended = mirror_extend(data) if params["boundary"] == "reflect" else data
    host = to_numpy(extended).astype(np.float64)
    psf = to_numpy(problem.psf).astype(np.float64)
    rows, cols = data.shape[-2:]
    restored, noise_precision, prior_precision = [], [], []
    for index, image in enumerate(host):
        problem.check_cancel()
        # Work in a unit intensity scale: the sampler's priors are scale-free but its
        # convergence threshold is absolute.
        scale = float(np.abs(image).max()) or 1.0
        estimate, chains = unsupervised_wiener(
            image / scale,
            psf,
            user_params={"max_num_iter": params["max_samples"], "threshold": 1e-4},
            clip=False,
            # The same stream for every image: a map restores the same alone or in a stack.
            rng=np.random.default_rng(problem.seed),
        )
        restored.append(estimate[:rows, :cols] * scale)
        noise_precision.append(float(np.mean(chains["noise"])))
        prior_precision.append(float(np.mean(chains["prior"])))
        problem.progress((index + 1) / len(host))
    image = to_tensor(np.stack(restored), problem.device)
    if params["positivity"]:
        image = image.clamp_min(0.0)
    info = {
        "regularisation_weight_used": [
            p / n for n, p in zip(noise_precision, prior_precision, strict=True)
        ],
    }
    return MethodOutput(image, problem.psf, info)


SPEC = register_method(
    MethodSpec(
        name="wiener",
        family="non-blind",
        needs_psf=True,
        scale=1,
        summary="one-shot Fourier filter; NSR given or estimated from the noise",
        parameters=(
            Parameter(
                "nsr",
                float,
                None,
                "flat noise-to-signal power ratio (None = spectrum estimated from the data)",
                minimum=1e-8,
                maximum=1e4,
            ),
            POSITIVITY,
            BACKGROUND,
            DIRECT_BOUNDARY,
        ),
        run=run_wiener,
        cost_prior=CostPrior(passes=12.0),
    )
)

UNSUPERVISED_SPEC = register_method(
    MethodSpec(
        name="unsupervised_wiener",
        family="non-blind",
        needs_psf=True,
        scale=1,
        summary="self-tuned Wiener-Hunt (scikit-image Gibbs sampler); CPU, seeded",
        parameters=(
            Parameter(
                "max_samples", int, 200, "maximum Gibbs samples per image", minimum=5, maximum=5000
            ),
            POSITIVITY,
            BACKGROUND,
            DIRECT_BOUNDARY,
        ),
        run=run_unsupervised_wiener,
        selector_grid=SelectorGrid(thorough=({},), cheap=()),  # slow: left out of live updates
        cost_prior=CostPrior(passes=800.0),
    )
)


def wiener(
    image: ArrayLike,
    psf: ArrayLike,
    *,
    nsr: float | None = None,
    positivity: bool = True,
    background: float = 0.0,
    boundary: DirectBoundary = "reflect",
    device: Device = "auto",
) -> np.ndarray:
    """Wiener deconvolution, NSR given or spectrum estimated (see the module notes).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype; never modified.
    psf : array_like, shape (h, w)
        Point spread function: odd sides, non-negative, normalised to sum 1.
    nsr : float, optional
        Flat noise-to-signal power ratio (None = spectrum estimated from the data).
    positivity : bool
        Clip negative values of the estimate to zero.
    background : float
        Constant background in the data (counts per pixel).
    boundary : {"reflect", "periodic"}
        Edges: 'reflect' (mirror-extended map) or 'periodic'.
    device : str or torch.device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    numpy.ndarray of float32, shape of ``image``
        The restored map(s), counts.

    See Also
    --------
    asirp.restore : the same run, with metrics and provenance.
    """
    return restore(
        image,
        SPEC.name,
        psf=psf,
        device=device,
        nsr=nsr,
        positivity=positivity,
        background=background,
        boundary=boundary,
    ).image


def unsupervised_wiener(
    image: ArrayLike,
    psf: ArrayLike,
    *,
    max_samples: int = 200,
    positivity: bool = True,
    background: float = 0.0,
    boundary: DirectBoundary = "reflect",
    seed: int = 0,
    device: Device = "auto",
) -> np.ndarray:
    """Self-tuned Wiener-Hunt deconvolution (scikit-image's Gibbs sampler; CPU).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype; never modified.
    psf : array_like, shape (h, w)
        Point spread function: odd sides, non-negative, normalised to sum 1.
    max_samples : int
        Maximum Gibbs samples per image.
    positivity : bool
        Clip negative values of the estimate to zero.
    background : float
        Constant background in the data (counts per pixel).
    boundary : {"reflect", "periodic"}
        Edges: 'reflect' (mirror-extended map) or 'periodic'.
    seed : int
        Seed of the method's randomness (the same seed gives the same result).
    device : str or torch.device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    numpy.ndarray of float32, shape of ``image``
        The restored map(s), counts.

    See Also
    --------
    asirp.restore : the same run, with metrics and provenance.
    """
    return restore(
        image,
        UNSUPERVISED_SPEC.name,
        psf=psf,
        device=device,
        seed=seed,
        max_samples=max_samples,
        positivity=positivity,
        background=background,
        boundary=boundary,
    ).image

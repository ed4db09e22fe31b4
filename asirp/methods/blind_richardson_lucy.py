r"""Blind Richardson-Lucy: estimate the image and the PSF together from an initial guess.

Each iteration makes one Richardson-Lucy step for the image with the current PSF and one for the
PSF with the current image, both from the same prediction :math:`\mu = h * x + b` and ratio
:math:`r = y / \mu` (Fish, Brinicombe, Pike & Walker 1995; MATLAB's ``deconvblind``):

.. math:: x \leftarrow \frac{x}{h \star 1} \, (h \star r), \qquad
          h \leftarrow \frac{h}{\sum x} \, (x \star r)

(:math:`\star` is correlation). After each step the PSF is projected: negative values are
impossible (multiplicative update), values outside the support window are zero, and it is
normalised to sum 1. The support is the initial guess's size or ``psf_support_px``. Every image
of a stack gets its own PSF.

Known limitation: from a Gaussian guess narrower than the true beam, the PSF estimate hardly
moves (the image absorbs the missing blur; on a noisy mesh a 1.8 px guess of a 2.5 px beam stays
at about 1.8 px after 60 iterations). It keeps the PSF valid and improves the image for a
guess close to the beam, but it is not yet a beam-size estimator; the default is therefore a
short run of 10 iterations.

Each iteration costs seven FFTs (four for non-blind RL): the PSF's, the image's, the
prediction's, the ratio's, and three inverse transforms (image correction, PSF correction and
the image normaliser, which changes with the PSF).

References
----------
.. [1] D. A. Fish, A. M. Brinicombe, E. R. Pike and J. G. Walker, "Blind deconvolution by means
   of the Richardson-Lucy algorithm", JOSA A 12, 58-65 (1995).
.. [2] G. R. Ayers and J. C. Dainty, "Iterative blind deconvolution method and its
   applications", Opt. Lett. 13, 547-549 (1988).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from asirp.blur import BlurOperator
from asirp.iteration import IterationControl
from asirp.methods._common import non_negative, smooth_initial_estimate
from asirp.registry import (
    BACKGROUND,
    ITERATIVE_BOUNDARY,
    MethodOutput,
    MethodSpec,
    Parameter,
    Problem,
    iterations_parameter,
    no_grad,
    register_method,
    stopping_parameters,
)


def widen_support(psf: torch.Tensor, support: int | None, limit: tuple[int, int]) -> torch.Tensor:
    """Pad the initial PSF ``(h, w)`` to the estimation window, with a small positive floor.

    Multiplicative updates never leave zero, so the new pixels get 1e-4 of the peak.
    """
    if support is None:
        return psf
    rows = min(max(support, psf.shape[-2]), limit[0] - (1 - limit[0] % 2))
    cols = min(max(support, psf.shape[-1]), limit[1] - (1 - limit[1] % 2))
    pad_y, pad_x = (rows - psf.shape[-2]) // 2, (cols - psf.shape[-1]) // 2
    widened = F.pad(psf, (pad_x, pad_x, pad_y, pad_y))
    widened = torch.maximum(widened, 1e-4 * psf.max())
    return widened / widened.sum()


@no_grad
def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Blind Richardson-Lucy on ``(B, H, W)`` counts; see the module notes."""
    assert problem.psf is not None  # the initial guess, guaranteed by needs_psf
    data = non_negative(problem.data)
    batch = data.shape[0]
    support = params["psf_support_px"]
    if support is not None and support % 2 == 0:
        support += 1
    initial_psf = widen_support(problem.psf, support, tuple(data.shape[-2:]))
    psf = initial_psf.expand(batch, -1, -1).clone()
    operator = BlurOperator(psf, tuple(data.shape[-2:]), params["boundary"])
    background = params["background"]

    rows, cols = psf.shape[-2:]
    lag_rows = torch.arange(-(rows // 2), rows // 2 + 1, device=data.device) % operator.fft_shape[0]
    lag_cols = torch.arange(-(cols // 2), cols // 2 + 1, device=data.device) % operator.fft_shape[1]
    ones = torch.ones((1, *operator.data_shape), dtype=data.dtype, device=data.device)
    ones_spectrum = operator.data_spectrum(ones)
    normaliser = operator.adjoint_from_spectrum(ones_spectrum).clamp_min(1e-6)
    estimate = smooth_initial_estimate(operator, data, normaliser)

    control = IterationControl(problem, params)
    for _ in control:
        spectrum = operator.object_spectrum(estimate)
        prediction = operator.forward_from_spectrum(spectrum) + background
        ratio_spectrum = operator.data_spectrum(data / prediction.clamp_min(1e-12))
        correction = operator.adjoint_from_spectrum(ratio_spectrum)
        normaliser = operator.adjoint_from_spectrum(ones_spectrum).clamp_min(1e-6)
        updated = estimate * correction / normaliser

        lagged = torch.fft.irfft2(ratio_spectrum * spectrum.conj(), s=operator.fft_shape)
        psf_correction = lagged.index_select(-2, lag_rows).index_select(-1, lag_cols)
        flux = estimate.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
        new_psf = (psf * psf_correction / flux).clamp_min(0.0)
        new_psf = new_psf / new_psf.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)

        estimate = control.step(estimate, updated, data, prediction)
        psf = torch.where(control.accepted.view(-1, 1, 1), new_psf, psf)
        operator.set_psf(psf)
    info = control.info()
    return MethodOutput(operator.crop(estimate), psf, info)


SPEC = register_method(
    MethodSpec(
        name="blind_richardson_lucy",
        family="blind",
        needs_psf=True,
        scale=1,
        summary="alternating RL for image and PSF from an initial guess; returns the PSF",
        parameters=(
            iterations_parameter(10),
            *stopping_parameters("fixed"),
            Parameter(
                "psf_support_px",
                int,
                None,
                "side of the square PSF window estimated, px (None = the guess's size)",
                minimum=3,
                maximum=1025,
            ),
            BACKGROUND,
            ITERATIVE_BOUNDARY,
        ),
        run=run,
    )
)

"""A per-chunk restoration function for :func:`asirp.stacks.process_stack` (tests, bench)."""

from __future__ import annotations

import numpy as np


def restore_chunk(
    block: np.ndarray, *, method: str, psf_sigma_px: float, iterations: int
) -> np.ndarray:
    """Restore each image of a block with a fixed iteration count.

    Parameters
    ----------
    block : numpy.ndarray
        Projections ``(n, R, C)`` (counts, any real dtype).
    method : str
        An iterative method of :func:`asirp.restore` (e.g. ``"richardson_lucy"``).
    psf_sigma_px : float
        Gaussian PSF standard deviation, px.
    iterations : int
        Iterations run on every image (``stop="fixed"``: no data-dependent stop, so a chunk's
        result does not depend on its neighbours or on how the stack was cut).

    Returns
    -------
    numpy.ndarray
        The restored block ``(n, R, C)``, float32, counts.
    """
    from asirp.restore import restore

    images = np.asarray(block)
    result = np.empty(images.shape, dtype=np.float32)
    for row, image in enumerate(images):
        result[row] = restore(
            image,
            method=method,
            psf_sigma_px=psf_sigma_px,
            iterations=int(iterations),
            stop="fixed",
            device="cpu",
        ).image
    return result

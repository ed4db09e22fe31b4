r"""The super-resolution forward operator :math:`A = D_s G` and its exact adjoint, fast.

:func:`asirp.sr.degrade.degrade` defines what a measurement of a fine map is: the Gaussian beam
:math:`G` on the fine grid (``s * sigma`` fine px, pixel-integrated profile, mirror boundaries:
torch's ``"reflect"`` padding, ``c b | a b c d``) then area sampling :math:`D_s` (the mean of
each ``s x s`` block). :class:`SuperResolutionOperator` applies the same :math:`A` (to float32
rounding) and its transpose, for the Richardson-Lucy super-resolution of
:mod:`asirp.methods.rl_sr`:

- :math:`G = C P` with :math:`P` the mirror padding by the beam radius ``r`` and :math:`C` the
  valid separable correlation with the profile; so :math:`G^T = P^T C^T`, where :math:`C^T` is
  the full correlation with the reversed profile (onto the padded grid) and :math:`P^T` folds
  the ``r`` margin rows and columns back onto the pixels they mirror. Mirror padding without
  the edge pixel is not symmetric, so :math:`G^T \ne G` at the edges.
- the adjoint of the block mean is replicate-and-divide: :math:`D_s^T = U_s / s^2`, with
  :math:`U_s` the nearest (replicate) upsampling.

:meth:`SuperResolutionOperator.backproject` is :math:`s^2 A^T = G^T U_s`, whose image of a map of
ones is about 1 (exactly 1 away from the edges): the Richardson-Lucy update reads the same as on
one grid.

On the CPU (float32, contiguous) both 1-D passes of a blur run in the compiled separable kernel
of :mod:`asirp._kernels` (parallel over rows) and the passes between the blurs of a
Richardson-Lucy iteration (mirror padding; area sampling with the Poisson ratio; the
multiplicative update with its step; the total-variation denominator) in those of
:mod:`asirp.sr._physics_kernels`, on work arrays kept between iterations; elsewhere (CUDA,
float64) the same operator runs as torch operations (two one-dimensional ``conv2d`` per blur).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from asirp.separable import use_torch_threads
from asirp.sr.degrade import gaussian_profile


class WorkArrays(Protocol):
    """Where work arrays come from (:class:`asirp.methods._common.WorkArrays` is one)."""

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous array of ``shape``, with ``like``'s dtype and device."""
        ...

    def give(self, tensors: list[torch.Tensor], keep_out: list[torch.Tensor]) -> None:
        """Keep ``tensors`` for later calls, except those in ``keep_out`` (by identity)."""
        ...


def _margin_sources(size: int, radius: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source pixels of the ``radius`` padded pixels before and after an axis of ``size``.

    ``"reflect"``: padded pixel ``-k`` is pixel ``k`` and ``size - 1 + k`` is ``size - 1 - k``;
    ``"replicate"``: the edge pixels.
    """
    steps = torch.arange(1, radius + 1)
    if mode == "reflect":
        before = steps.flip(0)  # padded positions 0 .. r-1 hold pixels r .. 1
        after = size - 1 - steps  # positions r+size .. hold pixels size-2, size-3, ...
    else:
        before = torch.zeros(radius, dtype=torch.int64)
        after = torch.full((radius,), size - 1, dtype=torch.int64)
    return before, after


def axes_of(sigma_px: float | tuple[float, float] | list[float]) -> tuple[float, float]:
    """``(sigma_rows, sigma_cols)`` of a beam given as one sigma or as a pair, measured px."""
    if isinstance(sigma_px, (tuple, list)):
        if len(sigma_px) != 2:
            raise ValueError(f"a beam is one sigma or (sigma_rows, sigma_cols), got {sigma_px!r}")
        return float(sigma_px[0]), float(sigma_px[1])
    return float(sigma_px), float(sigma_px)


class SuperResolutionOperator:
    r"""Area-sampled Gaussian beam :math:`A = D_s G` between a fine and a measured grid.

    Parameters
    ----------
    sigma_px : float or (float, float)
        Beam standard deviation in **measured** pixels (> 0), or ``(sigma_rows, sigma_cols)``
        for an anisotropic beam; the fine-grid blur is ``scale * sigma_px`` fine pixels, as in
        :func:`asirp.sr.degrade.degrade`.
    scale : int
        Upscaling factor ``s`` (>= 1).
    data_shape : (int, int)
        ``(H, W)`` of a measured map; the fine grid is ``(s H, s W)``.
    device : torch.device or str
        Where the maps live.
    pool : WorkArrays, optional
        Where the iteration's work arrays come from (:func:`asirp.methods._common.work_arrays`:
        a fresh megapixel array costs its page faults on every allocation); :meth:`release`
        gives them back. Without one they are allocated once per operator.

    Notes
    -----
    All maps are float32 ``(B, H, W)`` (measured) or ``(B, s H, s W)`` (fine) tensors. The
    padding mode follows :func:`asirp.sr.degrade.gaussian_blur`: mirror while the beam radius
    is below the fine grid's sides, else the edge pixels repeated.
    """

    def __init__(
        self,
        sigma_px: float | tuple[float, float],
        scale: int,
        data_shape: tuple[int, int],
        device: torch.device | str,
        pool: WorkArrays | None = None,
    ):
        self.pool = pool
        self._scratch: dict[str, torch.Tensor] = {}
        self.axes = axes_of(sigma_px)
        self.sigma_px: float | tuple[float, float] = (
            self.axes[0] if self.axes[0] == self.axes[1] else self.axes
        )
        self.scale = int(scale)
        self.data_shape = (int(data_shape[0]), int(data_shape[1]))
        self.fine_shape = (self.scale * self.data_shape[0], self.scale * self.data_shape[1])
        # both axes at one radius (the narrower profile zero-padded): the margins, the padding
        # and the compiled kernels keep one radius
        own = [gaussian_profile(sigma * self.scale) for sigma in self.axes]
        self.radius = max(profile.size // 2 for profile in own)
        profiles = [gaussian_profile(sigma * self.scale, self.radius) for sigma in self.axes]
        self.device = torch.device(device)
        self.taps = tuple(np.ascontiguousarray(p, dtype=np.float32) for p in profiles)
        self.reversed = tuple(np.ascontiguousarray(p[::-1], dtype=np.float32) for p in profiles)
        self._taps = tuple(torch.from_numpy(t).to(self.device) for t in self.taps)
        self._reversed = tuple(torch.from_numpy(t).to(self.device) for t in self.reversed)
        self.mode = "reflect" if self.radius < min(self.fine_shape) else "replicate"
        self._margins = [
            tuple(t.to(self.device) for t in _margin_sources(size, self.radius, self.mode))
            for size in self.fine_shape
        ]
        self._ones_back: torch.Tensor | None = None

    @property
    def padded_shape(self) -> tuple[int, int]:
        """The fine grid with the beam radius added on every side."""
        return (self.fine_shape[0] + 2 * self.radius, self.fine_shape[1] + 2 * self.radius)

    def compiles(self, tensor: torch.Tensor) -> bool:
        """Whether the compiled CPU kernels take ``tensor`` (contiguous float32 on the CPU)."""
        return (
            tensor.device.type == "cpu" and tensor.dtype == torch.float32 and tensor.is_contiguous()
        )

    def _work(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The work array ``name`` of ``shape`` (kept between calls; contents undefined)."""
        found = self._scratch.get(name)
        if found is not None and tuple(found.shape) == tuple(shape) and found.dtype == like.dtype:
            return found
        if self.pool is not None:
            array = self.pool.take(tuple(shape), like)
        else:
            array = torch.empty(shape, dtype=like.dtype, device=like.device)
        self._scratch[name] = array
        return array

    def release(self) -> None:
        """Give the work arrays back to the pool (the operator can still be used)."""
        if self.pool is not None:
            self.pool.give(list(self._scratch.values()), keep_out=[])
        self._scratch = {}

    def _correlate(
        self,
        src: torch.Tensor,
        flipped: bool,
        shift: int,
        shape: tuple[int, int],
        work: str | None = None,
    ) -> torch.Tensor:
        """``out[b, i, j] = sum_ac rows[a] cols[c] src[b, i + a - shift, j + c - shift]``.

        ``rows, cols`` are the beam's taps along each axis, reversed when ``flipped``. ``src``
        continues as zero past its edges; ``out`` has ``shape`` per map (the work array
        ``work`` when given, on the compiled path).
        """
        along_rows, along_cols = self.reversed if flipped else self.taps
        batch = src.shape[0]
        if self.compiles(src):
            from asirp import _kernels  # lazy: numba, about 0.9 s to import (see asirp.metrics)

            use_torch_threads()
            if work is None:
                out = torch.empty((batch, *shape), dtype=src.dtype)
            else:
                out = self._work(work, (batch, *shape), src)
            array = out.numpy()
            _kernels.correlate_separable(
                src.numpy(), along_rows, along_cols, shift, shift, _kernels.EDGE_ZERO, array,
                _kernels.PLAIN, array, array, np.float32(0.0),
            )  # fmt: skip
            return out
        rows_weights, cols_weights = (
            weights.to(src.dtype) for weights in (self._reversed if flipped else self._taps)
        )
        size = rows_weights.numel()
        # zero-extend so that a valid correlation gives ``shape`` at the requested shift
        rows, cols = src.shape[-2:]
        pad_before = shift
        pad_rows_after = shape[0] + size - 1 - rows - shift
        pad_cols_after = shape[1] + size - 1 - cols - shift
        grid = F.pad(src[:, None], (pad_before, pad_cols_after, pad_before, pad_rows_after))
        grid = F.conv2d(grid, rows_weights.view(1, 1, size, 1))
        grid = F.conv2d(grid, cols_weights.view(1, 1, 1, size))
        return grid[:, 0]

    def blur(self, fine: torch.Tensor, work: bool = False) -> torch.Tensor:
        """:math:`G x`: the beam on the fine grid, mirror boundaries, ``(B, sH, sW)``.

        With ``work``, the result is a work array that the next such call overwrites.
        """
        if self.compiles(fine) and self.mode == "reflect":
            from asirp.sr import _physics_kernels

            use_torch_threads()
            shape = (fine.shape[0], *self.padded_shape)
            padded = self._work("padded", shape, fine) if work else torch.empty(shape)
            _physics_kernels.reflect_pad(fine.numpy(), self.radius, padded.numpy())
        else:
            padded = F.pad(fine[:, None], (self.radius,) * 4, mode=self.mode)[:, 0].contiguous()
        return self._correlate(padded, False, 0, self.fine_shape, "blurred" if work else None)

    def _folded(self, fine: torch.Tensor, work: bool = False) -> torch.Tensor:
        """:math:`C^T z` on the padded grid with the margins folded onto the inner part.

        The inner ``(sH, sW)`` part (offset by the radius) then holds :math:`G^T z`.
        """
        full = self._correlate(
            fine.contiguous(),
            True,
            2 * self.radius,
            self.padded_shape,
            "full" if work else None,
        )
        radius = self.radius
        rows, cols = self.fine_shape
        if radius == 0:
            return full
        # fold the margin rows onto the rows they mirror (the whole padded width), then columns
        (top, bottom), (left, right) = self._margins
        middle = full[:, radius : radius + rows, :]
        middle.index_add_(1, top, full[:, :radius, :])
        middle.index_add_(1, bottom, full[:, radius + rows :, :])
        inner = middle[:, :, radius : radius + cols]
        inner.index_add_(2, left, middle[:, :, :radius])
        inner.index_add_(2, right, middle[:, :, radius + cols :])
        return full

    def blur_adjoint(self, fine: torch.Tensor) -> torch.Tensor:
        """:math:`G^T z = P^T C^T z`, ``(B, sH, sW)``: the full correlation, margins folded in."""
        radius = self.radius
        rows, cols = self.fine_shape
        full = self._folded(fine)
        return full[:, radius : radius + rows, radius : radius + cols].contiguous()

    def forward(self, fine: torch.Tensor) -> torch.Tensor:
        """:math:`A x = D_s G x`: ``(B, sH, sW)`` fine maps to ``(B, H, W)`` measurements."""
        return F.avg_pool2d(self.blur(fine)[:, None], self.scale)[:, 0]

    def upsample(self, data: torch.Tensor) -> torch.Tensor:
        """:math:`U_s`: each measured pixel repeated over its ``s x s`` block, ``(B, sH, sW)``."""
        batch, rows, cols = data.shape
        s = self.scale
        return (
            data[:, :, None, :, None]
            .expand(batch, rows, s, cols, s)
            .reshape(batch, rows * s, cols * s)
        )

    def backproject(self, data: torch.Tensor) -> torch.Tensor:
        r""":math:`s^2 A^T y = G^T U_s y`, ``(B, H, W)`` to ``(B, sH, sW)``."""
        return self.blur_adjoint(self.upsample(data))

    def adjoint(self, data: torch.Tensor) -> torch.Tensor:
        """:math:`A^T y = G^T U_s y / s^2`, the exact transpose of :meth:`forward`."""
        return self.backproject(data) / float(self.scale**2)

    def backproject_ones(self) -> torch.Tensor:
        """:math:`s^2 A^T 1`, ``(1, sH, sW)`` (1 away from the edges), floored at 1e-6."""
        if self._ones_back is None:
            ones = torch.ones((1, *self.data_shape), dtype=torch.float32, device=self.device)
            self._ones_back = self.backproject(ones).clamp_min_(1e-6)
        return self._ones_back

    def prediction_and_ratio(
        self, estimate: torch.Tensor, data: torch.Tensor, background: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The prediction :math:`A x + b` and the Poisson ratio replicated onto the fine grid.

        Parameters
        ----------
        estimate : torch.Tensor
            ``(B, sH, sW)`` fine maps, non-negative.
        data : torch.Tensor
            ``(B, H, W)`` measured counts.
        background : float
            Constant background, counts per measured pixel.

        Returns
        -------
        prediction : torch.Tensor
            ``(B, H, W)``.
        ratio : torch.Tensor
            :math:`U_s (y / \max(A x + b, 10^{-12}))`, ``(B, sH, sW)``.

        On the compiled path both are work arrays: the next call overwrites them.
        """
        blurred = self.blur(estimate, work=True)
        if self.compiles(blurred) and self.compiles(data):
            from asirp.sr import _physics_kernels

            prediction = self._work("prediction", tuple(data.shape), data)
            ratio = self._work("ratio", tuple(blurred.shape), blurred)
            _physics_kernels.block_mean_ratio(
                blurred.numpy(), data.numpy(), np.float32(background), self.scale,
                prediction.numpy(), ratio.numpy(),
            )  # fmt: skip
            return prediction, ratio
        prediction = F.avg_pool2d(blurred[:, None], self.scale)[:, 0] + background
        return prediction, self.upsample(data / prediction.clamp_min(1e-12))

    def tv_denominator(self, estimate: torch.Tensor, weight: float, epsilon: float) -> torch.Tensor:
        r"""The Richardson-Lucy denominator with total variation, ``(B, sH, sW)``, compiled.

        :math:`\max(s^2 A^T 1 - \lambda\,\mathrm{div}(\nabla x / |\nabla x|),
        0.1\, s^2 A^T 1)` with the curvature of
        :func:`asirp.methods.richardson_lucy.total_variation_divergence` (``epsilon`` smooths
        :math:`|\nabla x|`, in the unit of ``estimate``), in one pass. A work array: the next
        call overwrites it. Only for :meth:`compiles` inputs (the caller computes the curvature
        with torch otherwise).

        Raises
        ------
        ValueError
            For an input the compiled kernels do not take.
        """
        if not self.compiles(estimate):
            raise ValueError("tv_denominator needs a contiguous float32 CPU tensor")
        from asirp.sr import _physics_kernels

        use_torch_threads()
        out = self._work("denominator", tuple(estimate.shape), estimate)
        _physics_kernels.tv_denominator(
            estimate.numpy(), self.backproject_ones().numpy(), np.float32(weight),
            np.float32(epsilon), out.numpy(),
        )  # fmt: skip
        return out

    def multiplicative_update(
        self,
        ratio: torch.Tensor,
        estimate: torch.Tensor,
        denominator: torch.Tensor,
        previous_step: torch.Tensor | None,
        out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Richardson-Lucy update, its step and the step's products.

        Parameters
        ----------
        ratio : torch.Tensor
            The replicated ratio of :meth:`prediction_and_ratio`, ``(B, sH, sW)``.
        estimate : torch.Tensor
            The point ``x`` the update starts from, ``(B, sH, sW)``.
        denominator : torch.Tensor
            ``(1 or B, sH, sW)``, positive: :meth:`backproject_ones`, or with a TV term.
        previous_step : torch.Tensor or None
            The last step, ``(B, sH, sW)``.
        out : (torch.Tensor, torch.Tensor), optional
            Contiguous arrays to write ``updated`` and ``step`` into (not the inputs).

        Returns
        -------
        updated : torch.Tensor
            ``x G^T ratio / denominator``, ``(B, sH, sW)``.
        step : torch.Tensor
            ``updated - x``.
        sums : torch.Tensor
            ``(B, 2)`` float64 on the CPU: ``sum(step * step)`` and ``sum(step * previous)``
            (0 without a previous step).
        """
        radius = self.radius
        rows = self.fine_shape[0]
        compiled = all(self.compiles(t) for t in (ratio, estimate, denominator)) and (
            previous_step is None or self.compiles(previous_step)
        )
        if compiled:
            from asirp.sr import _physics_kernels

            full = self._folded(ratio, work=True)
            if out is None:
                updated, step = torch.empty_like(estimate), torch.empty_like(estimate)
            else:
                updated, step = out
            row_sums = np.empty((estimate.shape[0] * rows, 2))
            before = estimate if previous_step is None else previous_step
            use_torch_threads()
            _physics_kernels.multiplicative_step(
                full.numpy(), radius, estimate.numpy(), denominator.numpy(), updated.numpy(),
                step.numpy(), before.numpy(), row_sums,
            )  # fmt: skip
            sums = torch.from_numpy(row_sums.reshape(estimate.shape[0], rows, 2).sum(axis=1))
        else:
            updated = self.blur_adjoint(ratio).mul_(estimate).div_(denominator)
            step = updated - estimate
            energy = (step * step).sum(dim=(-2, -1), dtype=torch.float64)
            overlap = torch.zeros_like(energy)
            if previous_step is not None:
                overlap = (step * previous_step).sum(dim=(-2, -1), dtype=torch.float64)
            sums = torch.stack([energy, overlap], dim=1).cpu()
        if previous_step is None:
            sums[:, 1] = 0.0
        return updated, step, sums


def equivalent_psf(operator: SuperResolutionOperator) -> torch.Tensor:
    r"""A measured-grid PSF ``h`` whose power transfer is that of :math:`s^2 A A^T`.

    About a flat object the Richardson-Lucy super-resolution step moves the prediction
    :math:`p = A x` by :math:`s^2 A A^T (y - p)`, as a one-grid step with PSF ``h`` moves it by
    :math:`H H^T (y - p)`. :math:`s^2 A A^T = D_s G G^T U_s` is shift invariant on the measured
    grid (a shift by one measured pixel is one by ``s`` fine pixels), symmetric and positive
    semi-definite, so ``h`` is the inverse transform of the square root of its transfer
    function. The discrepancy rule's degrees of freedom (:class:`asirp.iteration.LinearisedFit`)
    then describe this iteration.

    Parameters
    ----------
    operator : SuperResolutionOperator
        The operator (its beam and scale; its map size does not matter).

    Returns
    -------
    torch.Tensor
        ``(m, m)`` float32 on the operator's device, odd ``m``, sum 1, centred.
    """
    reach = -(-2 * operator.radius // operator.scale) + 2  # measured px the kernel can reach
    size = 2 * reach + 1
    # float64 on the CPU (the torch path): the kernel stays clear of the probe's edges
    probe = SuperResolutionOperator(operator.sigma_px, operator.scale, (size, size), "cpu")
    delta = torch.zeros((1, size, size), dtype=torch.float64)
    delta[0, reach, reach] = 1.0
    kernel = probe.forward(probe.backproject(delta))[0]
    transfer = torch.fft.fft2(torch.fft.ifftshift(kernel)).real.clamp_min(0.0)
    root = torch.fft.fftshift(torch.fft.ifft2(transfer.sqrt()).real)
    root = root / root.sum()
    return root.to(operator.device, torch.float32)

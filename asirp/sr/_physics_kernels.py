"""Compiled CPU passes (numba) of the Richardson-Lucy super-resolution (:mod:`asirp.sr.physics_sr`).

The blurs run in the separable kernel of :mod:`asirp._kernels`; these are the passes between
them, each one sweep over the fine grid instead of several torch operations (a 2048² fine grid
is 16 MB a map: every pass costs its memory traffic). All arrays are C-contiguous float32
``(B, rows, cols)`` stacks, parallel over rows (``prange``), cached like :mod:`asirp._kernels`
(which is imported first: it points numba's cache to a writable folder).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from asirp import _kernels

_JIT = {"cache": _kernels.CACHED, "fastmath": True, "nogil": True}


@njit(parallel=True, **_JIT)
def reflect_pad(src, radius, out):
    """``out`` = ``src`` padded by ``radius`` on every side, mirrored without the edge pixel.

    The padding of ``torch.nn.functional.pad(..., mode="reflect")`` (``c b | a b c d``);
    ``radius`` must be below both sides of ``src``. ``out`` is ``(B, H + 2r, W + 2r)``.
    """
    batch, height, width = src.shape
    padded_height = height + 2 * radius
    for task in prange(batch * padded_height):
        b = task // padded_height
        p = task - b * padded_height
        i = p - radius
        if i < 0:
            i = -i
        elif i >= height:
            i = 2 * (height - 1) - i
        row, target = src[b, i], out[b, p]
        for j in range(width):
            target[radius + j] = row[j]
        for k in range(1, radius + 1):
            target[radius - k] = row[k]
            target[radius + width - 1 + k] = row[width - 1 - k]


@njit(parallel=True, **_JIT)
def block_mean_ratio(blurred, data, background, scale, prediction, ratio):
    """Area sampling, the Poisson ratio and its replication back onto the fine grid, one pass.

    ``prediction[b, i, j]`` = mean of the ``scale x scale`` block of ``blurred`` plus
    ``background``; ``ratio`` (fine grid, ``blurred``'s shape) holds
    ``data / max(prediction, 1e-12)`` on every pixel of the block.
    """
    batch, height, width = data.shape
    weight = np.float32(1.0 / (scale * scale))
    for task in prange(batch * height):
        b = task // height
        i = task - b * height
        for j in range(width):
            total = np.float32(0.0)
            for u in range(scale):
                row = blurred[b, i * scale + u]
                for v in range(scale):
                    total += row[j * scale + v]
            value = total * weight + background
            prediction[b, i, j] = value
            quotient = data[b, i, j] / max(value, np.float32(1e-12))
            for u in range(scale):
                target = ratio[b, i * scale + u]
                for v in range(scale):
                    target[j * scale + v] = quotient


@njit(parallel=True, **_JIT)
def multiplicative_step(full, radius, point, denominator, out, step, previous, row_sums):
    """The update from the back-projection on the padded grid, its step and their products.

    ``out = point * full[:, r:r+H, r:r+W] / denominator``, ``step = out - point`` and, per
    output row, ``sum(step * step)`` and ``sum(step * previous)`` into ``row_sums``
    (``(B * H, 2)`` float64, rows of map ``b`` at ``b * H + i``: the caller adds them in a fixed
    order, so the totals do not depend on the thread count). ``denominator`` is ``(B or 1, H,
    W)``; ``previous`` any finite array of ``step``'s shape when there is no previous step.
    """
    batch, height, width = out.shape
    shared = denominator.shape[0] == 1
    for task in prange(batch * height):
        b = task // height
        i = task - b * height
        back = full[b, radius + i]
        below = denominator[0 if shared else b, i]
        current, result, change, before = point[b, i], out[b, i], step[b, i], previous[b, i]
        energy = 0.0
        overlap = 0.0
        for j in range(width):
            value = current[j] * back[radius + j] / below[j]
            result[j] = value
            difference = value - current[j]
            change[j] = difference
            energy += difference * difference
            overlap += difference * before[j]
        row_sums[task, 0] = energy
        row_sums[task, 1] = overlap


@njit(**_JIT)
def _unit_gradient(x, b, i, j, height, width, epsilon):
    """Forward-difference gradient of ``x[b]`` at ``(i, j)`` over its smoothed magnitude."""
    here = x[b, i, j]
    grad_y = x[b, i + 1, j] - here if i < height - 1 else np.float32(0.0)
    grad_x = x[b, i, j + 1] - here if j < width - 1 else np.float32(0.0)
    magnitude = np.sqrt(grad_y * grad_y + grad_x * grad_x + epsilon * epsilon)
    return grad_y / magnitude, grad_x / magnitude


@njit(parallel=True, **_JIT)
def tv_denominator(x, normaliser, weight, epsilon, out):
    """``out = max(n - weight * div(grad x / |grad x|), 0.1 n)``, ``n`` the normaliser.

    The curvature of :func:`asirp.methods.richardson_lucy.total_variation_divergence`
    (forward differences, backward divergence) in one pass; ``normaliser`` is ``(B or 1, H,
    W)``.
    """
    batch, height, width = x.shape
    shared = normaliser.shape[0] == 1
    for task in prange(batch * height):
        b = task // height
        i = task - b * height
        below = normaliser[0 if shared else b, i]
        result = out[b, i]
        left_x = np.float32(0.0)
        for j in range(width):
            unit_y, unit_x = _unit_gradient(x, b, i, j, height, width, epsilon)
            divergence = unit_y + unit_x - left_x
            if i > 0:
                above_y, _ = _unit_gradient(x, b, i - 1, j, height, width, epsilon)
                divergence -= above_y
            left_x = unit_x
            value = below[j] - weight * divergence
            result[j] = max(value, np.float32(0.1) * below[j])

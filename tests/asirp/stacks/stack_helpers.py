"""Chunk functions and a small stack for the stack-engine tests (importable by dask workers)."""

from __future__ import annotations

import time

import numpy as np

from asirp.stacks import restore_chunk

RESTORE_KWARGS = {"method": "richardson_lucy", "psf_sigma_px": 1.2, "iterations": 4}
"""A quick restoration: Richardson-Lucy, 4 fixed iterations."""

SLOW_KWARGS = {**RESTORE_KWARGS, "delay_s": 0.25}
""":func:`slow_restore_chunk`'s keywords: chunks slow enough for a test to kill something while
they run."""


def make_stack(n: int = 12, rows: int = 32, columns: int = 48, seed: int = 7) -> np.ndarray:
    """Poisson counts of a smooth positive pattern, ``(n, rows, columns)`` float32."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    images = [
        50 + 40 * np.sin(x / (4 + k % 3)) ** 2 + 30 * np.cos(y / (3 + k % 4)) ** 2 for k in range(n)
    ]
    return rng.poisson(np.stack(images)).astype(np.float32)


def scale_chunk(block: np.ndarray, *, factor: float) -> np.ndarray:
    """``block * factor`` as float32."""
    return (np.asarray(block, dtype=np.float32) * np.float32(factor)).astype(np.float32)


def slow_restore_chunk(block: np.ndarray, *, delay_s: float, **restore: object) -> np.ndarray:
    """:func:`restore_chunk` after a pause, so a test can act while chunks run."""
    time.sleep(delay_s)
    return restore_chunk(block, **restore)  # type: ignore[arg-type]


def nan_chunk(block: np.ndarray) -> np.ndarray:
    """A result with one NaN."""
    result = np.asarray(block, dtype=np.float32).copy()
    result[0, 0, 0] = np.nan
    return result


def cropped_chunk(block: np.ndarray) -> np.ndarray:
    """A result one column short."""
    return np.asarray(block, dtype=np.float32)[:, :, :-1]


def float64_chunk(block: np.ndarray) -> np.ndarray:
    """A float64 result (does not cast safely to a float32 store)."""
    return np.asarray(block, dtype=np.float64)


def gram_chunk(block: np.ndarray) -> np.ndarray:
    """Each image's column Gram matrix ``image.T @ image``: ``(k, R, C)`` into ``(k, C, C)``."""
    images = np.asarray(block, dtype=np.float32)
    return np.einsum("krc,krd->kcd", images, images).astype(np.float32)

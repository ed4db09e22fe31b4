"""Fixtures for the super-resolution tests: one torch thread, small measured maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asirp.sr.data import heldout_set


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny tensors run fastest on one thread, and a shared machine's cores stay free.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def heldout_x2():
    return {image.name: image for image in heldout_set(2)}


@pytest.fixture
def small_star(heldout_x2):
    """A 48 x 48 measured crop of the held-out Siemens star and its 96 x 96 truth."""
    image = heldout_x2["star"]
    return image.measured[40:88, 40:88].copy(), image.truth[80:176, 80:176].copy(), image.sigma_px


def bicubic(measured: np.ndarray, scale: int) -> np.ndarray:
    from asirp.sr.models import bicubic_upsample

    tensor = torch.from_numpy(np.ascontiguousarray(measured, dtype=np.float32))[None, None]
    return bicubic_upsample(tensor, scale)[0, 0].numpy()

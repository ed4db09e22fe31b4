"""Compute-device selection and array <-> tensor conversion.

Every method computes in float32 on a torch device: the CPU by default and a CUDA GPU when one is
present and ``device="auto"`` (the default of :func:`asirp.restore`).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a torch device.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    torch.device
        The device the computation will run on.

    Raises
    ------
    ValueError
        If the name is not a device, or CUDA is asked for but not available.
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', not {device!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but no CUDA GPU is available")
        return torch.device(name)
    raise ValueError(f"unknown device {device!r}; allowed: 'auto', 'cpu', 'cuda' or 'cuda:N'")


def to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Copy a numpy array to a contiguous float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Copy a tensor back to a float32 numpy array on the host."""
    return tensor.detach().to("cpu", torch.float32).numpy()


def fast_fft_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return the smallest sizes >= ``shape`` whose real FFTs are fast (5-smooth lengths)."""
    return tuple(int(scipy.fft.next_fast_len(int(n), real=True)) for n in shape)

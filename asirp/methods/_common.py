"""Pieces shared by the method modules: data preparation and initial estimates."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from asirp.blur import BlurOperator

OPERATOR_CACHE_SIZE = 4
"""Blur operators kept per thread by :func:`cached_operator` (most recently used first)."""

POOLED_BYTES = 256 << 20
"""Most bytes of work arrays :class:`WorkArrays` keeps per thread between calls."""

_cache = threading.local()


def non_negative(data: torch.Tensor) -> torch.Tensor:
    """Counts for the Poisson methods: negative values (from dark subtraction) are set to zero.

    Returns ``data`` itself when it has no negative value (one read instead of a copy), else a
    clamped copy; the caller must not modify the result in place.
    """
    if data.numel() and float(data.min()) >= 0.0:
        return data
    return data.clamp_min(0.0)


def smooth_initial_estimate(
    operator: BlurOperator,
    data: torch.Tensor,
    normaliser: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """A positive starting object: the data spread by the PSF's adjoint, on the object grid.

    Unlike the raw data it has no zero pixels (which multiplicative updates could never leave)
    and it continues smoothly past the edges of the map for ``boundary="extend"``.

    Parameters
    ----------
    operator : BlurOperator
        The blur between object and data grids.
    data : torch.Tensor
        Non-negative maps ``(B, H, W)``.
    normaliser : torch.Tensor
        ``H^T 1`` on the object grid (positive).
    out : torch.Tensor, optional
        Contiguous ``(B, *operator.object_shape)`` to write into (a pooled array).

    Returns
    -------
    torch.Tensor
        ``(B, *operator.object_shape)``, strictly positive: ``max(H^T y / H^T 1, floor)`` with
        the floor 1e-3 of each map's mean.
    """
    floor = 1e-3 * data.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    if out is None:
        out = torch.empty(
            (data.shape[0], *operator.object_shape), dtype=data.dtype, device=data.device
        )
    return operator.divided_adjoint(data, normaliser, floor, out)


def adjoint_of_ones(operator: BlurOperator, data: torch.Tensor) -> torch.Tensor:
    """``H^T 1`` on the object grid ``(1, *object_shape)``, floored to stay positive.

    Computed from the PSF's partial sums (:meth:`BlurOperator.adjoint_of_ones`), not by FFTs.
    """
    return operator.adjoint_of_ones().to(data.device, data.dtype).clamp_min_(1e-6)


def cached_operator(
    psf: torch.Tensor, data_shape: tuple[int, int], boundary: str
) -> tuple[BlurOperator, torch.Tensor]:
    """A blur operator and its floored ``H^T 1``, reused for the same PSF, shape and boundary.

    A beamline restores map after map of one size with one beam, so the operator's set-up (the
    separable factors or the PSF's transfer function, and ``H^T 1`` on the object grid: some 2 ms
    for a megapixel map) is made once. The cache is per thread, because an operator keeps work
    arrays that two simultaneous restorations must not share, and holds at most
    :data:`OPERATOR_CACHE_SIZE` entries. Only methods that never change the operator's PSF may
    use it (not blind deconvolution).

    Parameters
    ----------
    psf : torch.Tensor
        ``(h, w)`` or ``(B, h, w)`` PSF on the compute device.
    data_shape : (int, int)
        ``(H, W)`` of one map, px.
    boundary : str
        The operator's boundary (see :class:`asirp.blur.BlurOperator`).

    Returns
    -------
    operator : BlurOperator
    normaliser : torch.Tensor
        ``H^T 1``, ``(1 or B, *object_shape)``, floored at 1e-6 (read it, never write it).
    """
    entries: OrderedDict | None = getattr(_cache, "entries", None)
    if entries is None:
        entries = _cache.entries = OrderedDict()
    weights = psf.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    key = (str(psf.device), psf.dtype, tuple(psf.shape), weights, tuple(data_shape), boundary)
    found = entries.get(key)
    if found is not None:
        entries.move_to_end(key)
        return found
    operator = BlurOperator(psf, tuple(data_shape), boundary)
    normaliser = adjoint_of_ones(operator, psf)
    entries[key] = (operator, normaliser)
    while len(entries) > OPERATOR_CACHE_SIZE:
        entries.popitem(last=False)
    return operator, normaliser


class WorkArrays:
    """Work arrays kept between calls, per thread: map after map of one size reuses them.

    A fresh array costs a page fault per 4 KiB page the first time it is written (some 4 µs
    each on the virtual machines measured: 17 ms for the eight arrays of a 1024² Richardson-Lucy
    call, a quarter of its time), and the allocator hands large blocks back to the system when
    they are freed. Arrays given back here are handed out again for the same shape, dtype and
    device; at most :data:`POOLED_BYTES` are kept (the oldest shapes go first).
    """

    def __init__(self) -> None:
        self.free: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()
        self.bytes = 0

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous array of ``shape``, with ``like``'s dtype and device."""
        key = (tuple(shape), like.dtype, str(like.device))
        kept = self.free.get(key)
        if kept:
            tensor = kept.pop()
            self.bytes -= tensor.nbytes
            return tensor
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def give(self, tensors: list[torch.Tensor], keep_out: list[torch.Tensor]) -> None:
        """Keep ``tensors`` for later calls, except those in ``keep_out`` (by identity).

        The caller must hold no other reference to what it gives (its views included).
        """
        excluded = {id(tensor) for tensor in keep_out}
        for tensor in tensors:
            if id(tensor) in excluded or not tensor.is_contiguous() or tensor.requires_grad:
                continue
            excluded.add(id(tensor))  # each array once
            key = (tuple(tensor.shape), tensor.dtype, str(tensor.device))
            self.free.setdefault(key, []).append(tensor)
            self.free.move_to_end(key)
            self.bytes += tensor.nbytes
        while self.bytes > POOLED_BYTES and self.free:
            _, dropped = self.free.popitem(last=False)
            self.bytes -= sum(tensor.nbytes for tensor in dropped)


def work_arrays() -> WorkArrays:
    """The calling thread's :class:`WorkArrays`."""
    pool = getattr(_cache, "work_arrays", None)
    if pool is None:
        pool = _cache.work_arrays = WorkArrays()
    return pool

"""Running a super-resolution network on maps of any size: normalisation and overlap tiling.

Normalisation
    A network sees each map through a reversible affine normalisation: the 0.5th percentile is
    subtracted and the result divided by the 0.5-99.5 percentile range, so most values fall in
    [0, 1] (the range Real-ESRGAN's weights expect). The output is mapped back with the same two
    numbers, so intensities keep their physical scale (counts, transmission). Training uses the same
    function (:mod:`asirp.sr.train`).
Tiling
    Large maps and stacks are cut into overlapping tiles of at most ``tile`` measured pixels, all of
    one size per map (the tile count per axis is the smallest that respects ``tile``, and the
    tiles are spread evenly, so little is computed twice). Tiles run in batches. Where two tiles
    overlap, the outer quarter of each one's share is dropped (it saw the tile's edge) and the
    middle half is blended with linear weights, which hides the seams: networks whose receptive
    field is within a quarter of the overlap give the same result as untiled.
Self-ensemble
    With ``self_ensemble``, the network also runs on the seven other flips and quarter-turns of
    each map, each result is turned back, and the eight are averaged (the geometric
    self-ensemble of Lim et al. 2017). It costs eight times the inference and lowers the
    network's own orientation-dependent errors. The physics stays right under these turns: the
    blind networks are not told the beam (``fca_sr``, ``rrdb_sr``; ``zssr`` trains on all eight
    turns), and ``beam_sr`` is told the turned one (its two axes swapped on transposed turns).
Devices and precision
    The network runs on the problem's device; on CUDA, in float16 (autocast) when ``half`` is set
    and the network supports it. On the CPU the tensors use the channels-last layout, which
    oneDNN's convolutions run fastest.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asirp.registry import RestorationCancelled
from asirp.sr.models import beam_planes

LOW_QUANTILE, HIGH_QUANTILE = 0.005, 0.995
"""Percentiles (as fractions) that define the normalisation range."""

_QUANTILE_SAMPLES = 1 << 20
"""Larger maps are subsampled (a regular stride) for the percentiles (torch.quantile's limit)."""


@dataclass(frozen=True)
class Normalisation:
    """A reversible per-map affine normalisation ``(x - offset) / scale``.

    Attributes
    ----------
    offset, scale : torch.Tensor
        Shape ``(B, 1, 1)``; ``scale > 0``.
    """

    offset: torch.Tensor
    scale: torch.Tensor

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, H, W)`` maps."""
        return (images - self.offset) / self.scale

    def invert(self, images: torch.Tensor) -> torch.Tensor:
        """Return normalised ``(B, H', W')`` maps (any size) to the original intensity scale."""
        return images * self.scale + self.offset


def robust_normalisation(images: torch.Tensor) -> Normalisation:
    """The percentile normalisation of each map of a ``(B, H, W)`` stack (see module notes)."""
    flat = images.detach().flatten(1).float()
    if flat.shape[1] > _QUANTILE_SAMPLES:
        flat = flat[:, :: math.ceil(flat.shape[1] / _QUANTILE_SAMPLES)]
    levels = torch.tensor([LOW_QUANTILE, HIGH_QUANTILE], dtype=flat.dtype, device=flat.device)
    low, high = torch.quantile(flat, levels, dim=1)
    span = high - low
    # A flat map (or one with a few outliers) keeps a usable scale.
    floor = torch.maximum(flat.abs().amax(dim=1) * 1e-3, torch.full_like(span, 1e-12))
    span = torch.where(span > floor, span, floor)
    return Normalisation(low.view(-1, 1, 1), span.view(-1, 1, 1))


def tile_layout(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[list[int], int]:
    """Start positions and common size of overlapping tiles along one axis.

    Parameters
    ----------
    length : int
        Axis length (a multiple of ``multiple``).
    tile : int
        Largest tile size.
    overlap : int
        Smallest overlap between neighbouring tiles.
    multiple : int
        Tile sizes and starts are multiples of this (networks that fold the input).

    Returns
    -------
    starts : list of int
        Tile starts, the first 0 and the last ``length - size``.
    size : int
        Tile size (the whole axis when it fits in one tile).

    Raises
    ------
    ValueError
        For a length or tile below 1, a negative overlap or a multiple below 1.
    """
    if length < 1 or tile < 1 or overlap < 0 or multiple < 1:
        raise ValueError(
            f"tiling needs length >= 1, tile >= 1, overlap >= 0 and multiple >= 1 (input px), "
            f"got length={length}, tile={tile}, overlap={overlap}, multiple={multiple}"
        )
    if length <= tile:
        return [0], length
    tile = max(tile, 2 * overlap + multiple)
    if length <= tile:  # the overlap widened the tile to the whole axis
        return [0], length
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    size = min(length, math.ceil(size / multiple) * multiple)
    step = (length - size) / (count - 1)
    starts = [round(index * step / multiple) * multiple for index in range(count)]
    return starts, size


def _window(size: int, overlap: int, lead: bool, trail: bool, device: torch.device) -> torch.Tensor:
    """Blending weights along one axis of a tile: ``(size,)``.

    On a side shared with a neighbour, the outer quarter of the overlap gets weight 0 (pixels
    there see the tile's edge through the network's receptive field), the next half ramps to 1.
    Sides on the map's border keep weight 1.
    """
    position = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    weight = torch.ones(size, device=device)
    half = max(overlap / 2.0, 1e-6)

    def ramp(distance: torch.Tensor) -> torch.Tensor:
        return ((distance - overlap / 4.0) / half).clamp(0.0, 1.0)

    if lead:
        weight = weight * ramp(position)
    if trail:
        weight = weight * ramp(size - position)
    return weight


def tiled_apply(
    function: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scale: int,
    *,
    tile: int,
    overlap: int,
    batch: int = 4,
    multiple: int = 1,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> torch.Tensor:
    """Apply an upscaling function tile by tile and blend the tiles.

    Parameters
    ----------
    function : callable
        ``(N, C, h, w) -> (N, C', s h, s w)``.
    images : torch.Tensor
        ``(B, C, H, W)``; ``H`` and ``W`` must be multiples of ``multiple``.
    scale : int
        Upscaling factor ``s``.
    tile, overlap : int
        Largest tile side and smallest overlap, in input pixels.
    batch : int
        Tiles per call of ``function``.
    multiple : int
        Tile sides and positions are multiples of this.
    progress : callable, optional
        Called with the fraction of tiles done.
    cancel : threading.Event, optional
        Checked between batches; raises :class:`asirp.RestorationCancelled` when set.

    Returns
    -------
    torch.Tensor
        ``(B, C', s H, s W)`` float32.
    """
    count, _, rows, cols = images.shape
    row_starts, tile_rows = tile_layout(rows, tile, overlap, multiple)
    col_starts, tile_cols = tile_layout(cols, tile, overlap, multiple)
    boxes = [(b, y, x) for b in range(count) for y in row_starts for x in col_starts]

    def window(y: int, x: int) -> torch.Tensor:
        rows_weight = _window(
            tile_rows * scale, overlap * scale, y > 0, y + tile_rows < rows, images.device
        )
        cols_weight = _window(
            tile_cols * scale, overlap * scale, x > 0, x + tile_cols < cols, images.device
        )
        return torch.outer(rows_weight, cols_weight)

    output: torch.Tensor | None = None
    total = torch.zeros((count, 1, rows * scale, cols * scale), device=images.device)
    for first in range(0, len(boxes), batch):
        if cancel is not None and cancel.is_set():
            raise RestorationCancelled("restoration was cancelled")
        chunk = boxes[first : first + batch]
        tiles = torch.stack(
            [images[b, :, y : y + tile_rows, x : x + tile_cols] for b, y, x in chunk]
        )
        result = function(tiles).float()
        if output is None:
            output = torch.zeros(
                (count, result.shape[1], rows * scale, cols * scale), device=images.device
            )
        for (b, y, x), piece in zip(chunk, result, strict=True):
            box = (
                slice(y * scale, (y + tile_rows) * scale),
                slice(x * scale, (x + tile_cols) * scale),
            )
            weight = window(y, x)
            output[b, :, box[0], box[1]] += piece * weight
            total[b, :, box[0], box[1]] += weight
        if progress is not None:
            progress(min(1.0, (first + len(chunk)) / len(boxes)))
    assert output is not None  # at least one tile
    return output / total


DIHEDRAL_TURNS = 8
"""Flips and quarter-turns of a square grid (the dihedral group of order 8)."""


def dihedral(images: torch.Tensor, index: int) -> torch.Tensor:
    """Turn ``(..., H, W)`` maps by one of the eight flips/quarter-turns, ``index`` in 0-7.

    Bit 4 transposes, bit 1 flips the columns and bit 2 the rows (in that order).
    """
    if index & 4:
        images = images.transpose(-2, -1)
    if index & 1:
        images = images.flip(-1)
    if index & 2:
        images = images.flip(-2)
    return images


def undo_dihedral(images: torch.Tensor, index: int) -> torch.Tensor:
    """The inverse of :func:`dihedral`: ``undo_dihedral(dihedral(x, i), i) == x``."""
    if index & 2:
        images = images.flip(-2)
    if index & 1:
        images = images.flip(-1)
    if index & 4:
        images = images.transpose(-2, -1)
    return images


def upscale(
    network: nn.Module,
    images: torch.Tensor,
    scale: int,
    *,
    tile: int = 256,
    overlap: int = 16,
    batch: int = 4,
    half: bool = True,
    channels: int = 1,
    multiple: int = 1,
    self_ensemble: bool = False,
    beams: Sequence[tuple[float, float]] | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> torch.Tensor:
    """Super-resolve maps with a network, keeping their intensity scale.

    Parameters
    ----------
    network : torch.nn.Module
        Maps ``(N, channels, h, w)`` normalised to ``(N, channels, s h, s w)``; on the images'
        device.
    images : torch.Tensor
        ``(B, H, W)`` maps (any intensity scale).
    scale : int
        Upscaling factor ``s``.
    tile, overlap, batch : int
        Tiling (see :func:`tiled_apply`), in input pixels.
    half : bool
        Run in float16 on CUDA (ignored on the CPU).
    channels : int
        Channels the network takes; a single-channel map is repeated to them (RGB models) and
        the output channels are averaged back to one.
    multiple : int
        The network needs sides that are multiples of this (the map is mirror-padded, and the
        padding cropped from the result).
    self_ensemble : bool
        Average the network over the eight flips and quarter-turns of each map (see the
        module notes; eight times the work).
    beams : sequence of (float, float), optional
        For a beam-conditioned network (:class:`asirp.sr.models.BeamFCASRNet`): each map's
        beam sigma along its rows and columns, measured px, given to the network as two
        constant planes (swapped for the transposed turns of the self-ensemble).
    progress, cancel
        See :func:`tiled_apply`.

    Returns
    -------
    torch.Tensor
        ``(B, s H, s W)`` float32, same intensity scale as ``images``.
    """
    normalisation = robust_normalisation(images)
    normalised = normalisation.apply(images.float())[:, None]
    rows, cols = images.shape[-2:]
    pad_rows, pad_cols = (-rows) % multiple, (-cols) % multiple
    if pad_rows or pad_cols:
        mode = "reflect" if min(rows, cols) > max(pad_rows, pad_cols) else "replicate"
        normalised = F.pad(normalised, (0, pad_cols, 0, pad_rows), mode=mode)
    on_cuda = images.device.type == "cuda"
    channels_last = images.device.type == "cpu"
    if channels_last:
        network = network.to(memory_format=torch.channels_last)

    def run(tiles: torch.Tensor) -> torch.Tensor:
        if channels > 1:
            tiles = tiles.expand(-1, channels, -1, -1)
        if channels_last:
            tiles = tiles.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=on_cuda and half):
            result = network(tiles)
        return result.float().mean(dim=1, keepdim=True)

    turns = range(DIHEDRAL_TURNS) if self_ensemble else range(1)

    def turn_progress(index: int) -> Callable[[float], None] | None:
        if progress is None:
            return None
        return lambda done: progress((index + done) / len(turns))

    def turned_input(index: int) -> torch.Tensor:
        turned = dihedral(normalised, index)
        if beams is None:
            return turned
        # a transposed map has its rows' beam along its columns
        axes = [(cols, rows) if index & 4 else (rows, cols) for rows, cols in beams]
        return beam_planes(turned, axes)

    total: torch.Tensor | None = None
    with torch.inference_mode():
        for index in turns:
            fine = undo_dihedral(
                tiled_apply(
                    run,
                    turned_input(index),
                    scale,
                    tile=tile,
                    overlap=overlap,
                    batch=batch,
                    multiple=multiple,
                    progress=turn_progress(index),
                    cancel=cancel,
                ),
                index,
            )
            total = fine if total is None else total + fine
    assert total is not None
    fine = total / len(turns) if self_ensemble else total
    fine = fine[:, 0, : rows * scale, : cols * scale]
    return normalisation.invert(fine)

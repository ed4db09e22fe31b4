r"""Super-resolution networks: DFCAN-style ``fca_sr``, ESRGAN-style ``rrdb_sr`` and ZSSR's CNN.

All networks map a normalised single-channel map ``(N, 1, H, W)`` to ``(N, 1, s H, s W)``
(:class:`RRDBNet` takes any channel count, so that RGB Real-ESRGAN weights load too). They are
plain :class:`torch.nn.Module` s built from a JSON-serialisable configuration
(:func:`build_network`), which is stored in the metadata of every weight file that ASIRP writes.

``FCASRNet`` (after DFCAN, Qiao et al. 2021)
    A head convolution, residual groups of Fourier channel attention blocks (FCAB: two 3x3
    convolutions with GELU, then channel attention computed from each feature map's amplitude
    spectrum), a 3x3 convolution to ``s^2`` channels and a pixel shuffle. The output is added to
    the bicubic upsampling of the input (global residual). DFCAN's attention pools a
    convolution of ``|FFT(x)|^0.8`` (fft-shifted); here the spectrum is the orthonormal *real*
    FFT (half the bins, same information, and a magnitude that does not depend on the tile size,
    so tiled inference sees the statistics it was trained with), not shifted (cheaper; the
    pooled response hardly depends on it).
``BeamFCASRNet`` (``beam_sr``; conditioning after SRMD, Zhang et al. 2018)
    ``FCASRNet`` told the beam: two constant input planes beside the map hold the beam's sigma
    along the rows and along the columns, in measured pixels, so one network serves a family of
    beams, anisotropic ones included, instead of guessing the blur from the map.
``RRDBNet`` (ESRGAN, Wang et al. 2018; Real-ESRGAN, 2021)
    Residual-in-residual dense blocks with the parameter names and layout of Real-ESRGAN's /
    BasicSR's ``RRDBNet`` (``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``, ``conv_up1``,
    ``conv_up2``, ``conv_hr``, ``conv_last``; pixel-unshuffle at the input for x2 and x1, two
    nearest-neighbour x2 upsamplings), so that their published weights load unchanged.
``ZSSRNet`` (after ZSSR, Shocher et al. 2018)
    A plain stack of 3x3 convolutions with ReLU on the measured grid, a pixel shuffle, and the
    bicubic upsampling as global residual. ZSSR's original network works on the bicubic-upsampled
    grid; working on the measured grid costs ``s^2`` times less for the same depth.

References
----------
.. [1] C. Qiao et al., "Evaluation and development of deep neural networks for image
   super-resolution in optical microscopy", Nature Methods 18, 194-202 (2021).
.. [2] X. Wang et al., "ESRGAN: Enhanced super-resolution generative adversarial networks",
   ECCV Workshops (2018); X. Wang et al., "Real-ESRGAN", ICCV Workshops (2021).
.. [3] A. Shocher, N. Cohen and M. Irani, "'Zero-shot' super-resolution using deep internal
   learning", CVPR (2018).
.. [4] K. Zhang, W. Zuo and L. Zhang, "Learning a single convolutional super-resolution network
   for multiple degradations", CVPR 3262-3271 (2018).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("fca_sr", "beam_sr", "rrdb_sr", "zssr")
"""Names of the architectures :func:`build_network` knows (the methods that use them)."""


def bicubic_upsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic interpolation by ``scale`` with half-pixel centres (``align_corners=False``).

    This is the grid convention of area sampling: measured pixel ``i`` covers fine pixels
    ``s i`` to ``s i + s - 1``. Input and output are ``(N, C, H, W)`` and ``(N, C, s H, s W)``.
    """
    return F.interpolate(images, scale_factor=scale, mode="bicubic", align_corners=False)


class FourierChannelAttention(nn.Module):
    """Channel attention from the amplitude spectrum of each feature map (DFCAN's FCA layer).

    Parameters
    ----------
    channels : int
        Feature channels ``C``.
    reduction : int
        Channel reduction of the squeeze-excitation bottleneck.
    gamma : float
        Power applied to the amplitude spectrum (0.8 in DFCAN).
    """

    def __init__(self, channels: int, reduction: int = 4, gamma: float = 0.8) -> None:
        super().__init__()
        self.gamma = gamma
        self.spectrum_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.squeeze = nn.Conv2d(channels, max(1, channels // reduction), 1)
        self.excite = nn.Conv2d(max(1, channels // reduction), channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Weight the channels of ``(N, C, H, W)`` features; same shape out."""
        # |FFT|^gamma as (re^2 + im^2)^(gamma / 2), in float32 (half-precision FFTs need
        # power-of-two sizes). No fftshift: the pooled response hardly depends on where the
        # zero frequency sits, and the shift costs a pass over the spectrum.
        spectrum = torch.view_as_real(torch.fft.rfft2(features.float(), norm="ortho"))
        power = spectrum.square().sum(-1).add(1e-16).pow(self.gamma / 2).to(features.dtype)
        pooled = F.relu(self.spectrum_conv(power)).mean(dim=(-2, -1), keepdim=True)
        weights = torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))
        return features * weights


class FourierChannelAttentionBlock(nn.Module):
    """FCAB: conv-GELU-conv-GELU, Fourier channel attention, residual connection."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.attention = FourierChannelAttention(channels, reduction)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape."""
        out = F.gelu(self.conv2(F.gelu(self.conv1(features))))
        return features + self.attention(out)


class ResidualGroup(nn.Module):
    """A chain of FCABs with a skip connection around it."""

    def __init__(self, channels: int, blocks: int, reduction: int = 4) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(FourierChannelAttentionBlock(channels, reduction) for _ in range(blocks))
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape."""
        return features + self.blocks(features)


class FCASRNet(nn.Module):
    """DFCAN-style super-resolution network for single-channel maps.

    Parameters
    ----------
    scale : int
        Upscaling factor (2 or 4).
    channels : int
        Feature channels.
    groups : int
        Residual groups.
    blocks : int
        FCABs per group.
    reduction : int
        Channel reduction in the attention bottleneck.
    """

    def __init__(
        self,
        scale: int = 2,
        channels: int = 16,
        groups: int = 2,
        blocks: int = 2,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(1, channels, 3, padding=1)
        self.groups = nn.Sequential(
            *(ResidualGroup(channels, blocks, reduction) for _ in range(groups))
        )
        self.tail = nn.Conv2d(channels, scale * scale, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` normalised maps -> ``(N, 1, s H, s W)``.

        Further input planes (:class:`BeamFCASRNet`'s beam) feed the head only: the global
        residual is the bicubic upsampling of the map, plane 0.
        """
        features = F.gelu(self.head(images))
        features = self.groups(features)
        detail = F.pixel_shuffle(self.tail(features), self.scale)
        return bicubic_upsample(images[:, :1], self.scale) + detail


BEAM_PLANES = 2
"""Input planes of a beam-conditioned network beside the map: sigma along rows, along columns."""


class BeamFCASRNet(FCASRNet):
    """:class:`FCASRNet` conditioned on the beam (``beam_sr``).

    Takes ``(N, 1 + 2, H, W)``: the normalised map, then two constant planes holding the beam's
    sigma along the rows and along the columns (measured px); returns ``(N, 1, s H, s W)``. The
    global residual is the bicubic upsampling of the map plane. Parameters as
    :class:`FCASRNet`.
    """

    def __init__(self, scale: int = 2, **config: int) -> None:
        super().__init__(scale, **config)
        # a second head after the first: the random draws the shipped weights were trained from
        self.head = nn.Conv2d(1 + BEAM_PLANES, self.head.out_channels, 3, padding=1)


def beam_planes(
    images: torch.Tensor, beams: list[tuple[float, float]] | torch.Tensor
) -> torch.Tensor:
    """Append a beam-conditioned network's beam planes to maps.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 1, H, W)`` normalised maps.
    beams : list of (float, float) or torch.Tensor
        ``(sigma_rows, sigma_cols)`` of each map's beam, measured px (``(B, 2)``).

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)``: the maps, then the rows' and the columns' sigma as constant planes.
    """
    sigmas = torch.as_tensor(beams, dtype=images.dtype).to(images.device).view(-1, 2, 1, 1)
    rows, cols = images.shape[-2:]
    return torch.cat([images, sigmas.expand(-1, -1, rows, cols)], dim=1)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a scaled residual (ESRGAN's RDB)."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            # Small initial residuals, as in ESRGAN: deep dense stacks train stably.
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_feat, H, W)`` -> same shape."""
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three RDBs with a scaled residual."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_feat, H, W)`` -> same shape."""
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator with Real-ESRGAN's layout and parameter names.

    Parameters
    ----------
    num_in_ch, num_out_ch : int
        Image channels in and out (1 for ASIRP's own weights, 3 for Real-ESRGAN's).
    scale : int
        1, 2 or 4. The trunk always upsamples by 4; x2 and x1 first fold the input with a pixel
        unshuffle (by 2 and 4), so ``conv_first`` takes ``4 num_in_ch`` or ``16 num_in_ch``.
    num_feat : int
        Trunk channels (64 in Real-ESRGAN).
    num_block : int
        RRDBs in the trunk (23 in Real-ESRGAN).
    num_grow_ch : int
        Growth channels of each dense block (32 in Real-ESRGAN).
    """

    def __init__(
        self,
        num_in_ch: int = 1,
        num_out_ch: int = 1,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.fold = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.fold**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, num_in_ch, H, W)`` -> ``(N, num_out_ch, s H, s W)``; H, W divisible by the fold."""
        features = F.pixel_unshuffle(images, self.fold) if self.fold > 1 else images
        features = self.conv_first(features)
        features = features + self.conv_body(self.body(features))
        features = F.interpolate(features, scale_factor=2, mode="nearest")
        features = F.leaky_relu(self.conv_up1(features), 0.2)
        features = F.interpolate(features, scale_factor=2, mode="nearest")
        features = F.leaky_relu(self.conv_up2(features), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(features), 0.2))


class ZSSRNet(nn.Module):
    """ZSSR's image-specific CNN, on the measured grid with a pixel-shuffle output.

    Parameters
    ----------
    scale : int
        Upscaling factor.
    channels : int
        Feature channels.
    depth : int
        Number of 3x3 convolutions (at least 2).
    """

    def __init__(self, scale: int = 2, channels: int = 32, depth: int = 6) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, scale * scale, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` normalised maps -> ``(N, 1, s H, s W)``."""
        detail = F.pixel_shuffle(self.layers(images), self.scale)
        return bicubic_upsample(images, self.scale) + detail


DEFAULT_CONFIGS: dict[str, dict[str, Any]] = {
    "fca_sr": {"channels": 16, "groups": 2, "blocks": 2, "reduction": 4},
    "beam_sr": {"channels": 16, "groups": 2, "blocks": 2, "reduction": 4},
    "rrdb_sr": {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 24, "num_block": 2, "num_grow_ch": 12},
    "zssr": {"channels": 32, "depth": 6},
}
"""Configurations of ASIRP's own networks (the shipped weights use these)."""


def build_network(arch: str, scale: int, config: dict[str, Any] | None = None) -> nn.Module:
    """Build an untrained network.

    Parameters
    ----------
    arch : {"fca_sr", "beam_sr", "rrdb_sr", "zssr"}
        Architecture.
    scale : int
        Upscaling factor.
    config : dict, optional
        Keyword arguments of the network's class; defaults to :data:`DEFAULT_CONFIGS`.

    Returns
    -------
    torch.nn.Module
        The network, in training mode, float32, on the CPU.

    Raises
    ------
    ValueError
        For an unknown architecture or configuration key.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    settings = dict(DEFAULT_CONFIGS[arch] if config is None else config)
    classes = {"fca_sr": FCASRNet, "beam_sr": BeamFCASRNet, "rrdb_sr": RRDBNet, "zssr": ZSSRNet}
    try:
        return classes[arch](scale=scale, **settings)
    except TypeError as error:
        raise ValueError(
            f"bad configuration {settings} for architecture {arch!r}: {error}"
        ) from None


def count_parameters(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)

"""User-provided ESRGAN / Real-ESRGAN weights for ``rrdb_sr``, and other architectures via spandrel.

Three naming schemes of the same RRDBNet generator are recognised and mapped onto ASIRP's
:class:`asirp.sr.models.RRDBNet` (whose names are Real-ESRGAN's / BasicSR's):

- Real-ESRGAN / BasicSR: ``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``, ``conv_up1``,
  ``conv_up2``, ``conv_hr``, ``conv_last`` (``RealESRGAN_x4plus.pth``, ``RealESRGAN_x2plus.pth``;
  the checkpoint's ``params_ema`` entry is used);
- ESRGAN (2018, "new architecture"): ``RRDB_trunk.N.RDBK.convJ``, ``trunk_conv``, ``upconv1``,
  ``upconv2``, ``HRconv``;
- ESRGAN's first release ("old architecture"): ``model.0``, ``model.1.sub.N.RDBK.convJ.0``,
  ``model.1.sub.<blocks>``, ``model.3``, ``model.6``, ``model.8``, ``model.10``.

The network's size (features, blocks, growth channels, channels in and out) and its scale are read
from the tensor shapes: ``conv_first`` takes ``channels x 1``, ``x 4`` or ``x 16`` inputs for x4,
x2 and x1 models.

Other architectures (SwinIR, HAT, DAT, OmniSR, SRVGGNet, ...) load through the optional
`spandrel <https://github.com/chaiNNer-org/spandrel>`_ package when it is installed
(:func:`load_with_spandrel`): ASIRP reads the state dict itself (safely, see
:mod:`asirp.sr.weights`) and only hands spandrel the tensors. spandrel imports torchvision, for
which no CPU build exists for the torch pinned here, so it is never required: not by the tests, not
by the README's commands.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from asirp.sr.models import RRDBNet
from asirp.sr.weights import (
    CONFIG_LIMITS,
    WeightsArchitectureError,
    WeightsTooLargeError,
    check_state_fits,
    expected_shapes,
    load_state_strict,
)

_NEW_ESRGAN = (
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.(conv\d)\.(weight|bias)$"), r"body.\1.rdb\2.\3.\4"),
    (re.compile(r"^trunk_conv\.(weight|bias)$"), r"conv_body.\1"),
    (re.compile(r"^upconv1\.(weight|bias)$"), r"conv_up1.\1"),
    (re.compile(r"^upconv2\.(weight|bias)$"), r"conv_up2.\1"),
    (re.compile(r"^HRconv\.(weight|bias)$"), r"conv_hr.\1"),
)


def _rename_old_esrgan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    trunk = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.(conv\d)\.0\.(weight|bias)$")
    blocks = [int(m.group(1)) for key in state if (m := trunk.match(key))]
    num_block = max(blocks) + 1 if blocks else 0
    fixed = {
        "model.0": "conv_first",
        f"model.1.sub.{num_block}": "conv_body",
        "model.3": "conv_up1",
        "model.6": "conv_up2",
        "model.8": "conv_hr",
        "model.10": "conv_last",
    }
    renamed = {}
    for key, value in state.items():
        match = trunk.match(key)
        if match:
            block, rdb, conv, kind = match.groups()
            renamed[f"body.{block}.rdb{rdb}.{conv}.{kind}"] = value
            continue
        stem, _, kind = key.rpartition(".")
        renamed[f"{fixed.get(stem, stem)}.{kind}"] = value
    return renamed


def to_basicsr_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ESRGAN state dict (any of the three schemes) to Real-ESRGAN's names."""
    if "model.0.weight" in state:
        return _rename_old_esrgan(state)
    if any(key.startswith("RRDB_trunk.") for key in state):
        renamed = {}
        for key, value in state.items():
            for pattern, replacement in _NEW_ESRGAN:
                if pattern.match(key):
                    key = pattern.sub(replacement, key)
                    break
            renamed[key] = value
        return renamed
    return dict(state)


def rrdb_config(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], int]:
    """Network size and scale of an RRDBNet state dict with Real-ESRGAN's names.

    Returns
    -------
    config : dict
        ``num_in_ch``, ``num_out_ch``, ``num_feat``, ``num_block``, ``num_grow_ch``.
    scale : int
        1, 2 or 4.

    Raises
    ------
    WeightsArchitectureError
        If the tensors are not those of an RRDBNet.
    """
    needed = ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")
    absent = [key for key in needed if key not in state]
    if absent:
        sample = ", ".join(sorted(state)[:4])
        raise WeightsArchitectureError(
            f"these weights are not an ESRGAN/Real-ESRGAN RRDBNet: no {', '.join(absent)} "
            f"(the file has {len(state)} tensors, e.g. {sample}). Other architectures load only "
            "with the optional spandrel package (see asirp.sr.esrgan)"
        )
    body = {key.split(".")[1] for key in state if key.startswith("body.")}
    if not all(index.isdigit() and len(index) < 7 for index in body):
        raise WeightsArchitectureError(
            "these weights are not an ESRGAN/Real-ESRGAN RRDBNet: body entries must be numbered "
            f"(body.0, body.1, ...), got body.{sorted(body)[-1][:20]}"
        )
    blocks = {int(index) for index in body}
    if max(blocks) + 1 > CONFIG_LIMITS["num_block"]:
        raise WeightsTooLargeError(
            f"these weights name RRDB block body.{max(blocks)}: at most "
            f"{CONFIG_LIMITS['num_block']} blocks are accepted (ESRGAN models have 23)"
        )
    first, last = state["conv_first.weight"], state["conv_last.weight"]
    num_out_ch = int(last.shape[0])
    folded = int(first.shape[1])
    fold_squared, remainder = divmod(folded, num_out_ch)
    if remainder or fold_squared not in (1, 4, 16):
        raise WeightsArchitectureError(
            f"conv_first takes {folded} channels for {num_out_ch} output channels: not an x1, x2 "
            "or x4 RRDBNet"
        )
    scale = {1: 4, 4: 2, 16: 1}[fold_squared]
    config = {
        "num_in_ch": num_out_ch,
        "num_out_ch": num_out_ch,
        "num_feat": int(first.shape[0]),
        "num_block": max(blocks) + 1,
        "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0]),
    }
    return config, scale


def rrdb_from_state(state: dict[str, torch.Tensor], scale: int, what: str) -> RRDBNet:
    """Build the RRDBNet that a (Real-)ESRGAN state dict describes and load it.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        The weights, with any of the three naming schemes.
    scale : int
        The scale asked for; it must be the model's.
    what : str
        How to name the weights in error messages (the file).

    Raises
    ------
    WeightsArchitectureError
        Not an RRDBNet, another scale, or tensors that do not fit (checked on the ``meta``
        device, before the network is built).
    WeightsTooLargeError
        More RRDB blocks than :data:`asirp.sr.weights.CONFIG_LIMITS` allows.
    """
    renamed = to_basicsr_names(state)
    config, native = rrdb_config(renamed)
    if native != scale:
        raise WeightsArchitectureError(
            f"{what} is an x{native} RRDBNet, but scale={scale} was asked for"
        )
    name, shapes = expected_shapes(lambda: RRDBNet(scale=scale, **config))
    check_state_fits(shapes, renamed, what, name)
    network = RRDBNet(scale=scale, **config)
    load_state_strict(network, renamed, what)
    return network.eval()


def load_with_spandrel(
    state: dict[str, torch.Tensor], scale: int, what: str
) -> tuple[nn.Module, int]:
    """Build any architecture spandrel recognises from an already loaded state dict (optional).

    Returns
    -------
    network : torch.nn.Module
        The model, in evaluation mode.
    channels : int
        The number of image channels it takes (1 or 3).

    Raises
    ------
    WeightsArchitectureError
        If spandrel is not installed, does not recognise the weights, or their scale differs.
    """
    try:
        import spandrel  # optional dependency (it imports torchvision)
    except ImportError:
        raise WeightsArchitectureError(
            "the optional spandrel package, which recognises many other super-resolution "
            "architectures, is not installed"
        ) from None
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except Exception as error:  # spandrel raises its own types for unknown architectures
        raise WeightsArchitectureError(f"spandrel does not recognise {what}: {error}") from None
    if int(descriptor.scale) != scale:
        raise WeightsArchitectureError(
            f"{what} is an x{descriptor.scale} model, but scale={scale} was asked for"
        )
    return descriptor.model.eval(), int(descriptor.input_channels)

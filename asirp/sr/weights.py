"""Loading and saving network weights without executing code from the file.

Weights are read only from

- ``.safetensors`` files (preferred: a flat table of tensors and string metadata, nothing to
  execute), through :mod:`safetensors`;
- ``.pth`` / ``.pt`` files, through ``torch.load(..., weights_only=True)``, whose unpickler only
  rebuilds tensors and plain containers. A file whose pickle names anything else (a function to
  call, such as ``os.system``) is refused with :class:`UnsafeWeightsError` before anything from it
  runs.

Any other file type is refused. ASIRP writes ``.safetensors`` with JSON metadata
(:func:`save_weights`): ``format`` (``"asirp-sr"``), ``arch``, ``scale``, ``config`` (the network's
constructor arguments) and ``training`` (how they were made). Checkpoints of other programs are
unwrapped (``params_ema``, ``params``, ``state_dict``, ``model`` entries; a ``module.`` prefix) and
checked against the architecture that is asked for: wrong ones give a
:class:`WeightsArchitectureError` naming what is missing or unexpected.

The weights shipped with ASIRP lie in ``asirp/models/`` (:func:`shipped_weights_path`) next to
their model card, ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asirp.sr.models import build_network

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt")
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g")
"""Checkpoint entries that hold the state dict (Real-ESRGAN/BasicSR use ``params_ema``)."""

FORMAT = "asirp-sr"


class UnsafeWeightsError(ValueError):
    """A weight file that would execute code (or is not a weight file) when loaded."""


class WeightsArchitectureError(ValueError):
    """Weights that do not fit the network they are loaded into."""


@dataclass
class LoadedWeights:
    """A state dict and what its file says about it.

    Attributes
    ----------
    state : dict of str to torch.Tensor
        Parameter name -> tensor (on the CPU).
    metadata : dict
        Parsed metadata (``arch``, ``scale``, ``config``, ``training``) for ASIRP's own files;
        empty for other programs' files.
    path : pathlib.Path
        The file read.
    """

    state: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path = Path()


def shipped_weights_path(arch: str, scale: int) -> Path:
    """Path of the weights shipped with ASIRP for an architecture and scale.

    Raises
    ------
    ValueError
        If ASIRP ships no such file.
    """
    path = Path(str(resources.files("asirp") / "models" / f"{arch}_x{scale}.safetensors"))
    if not path.is_file():
        raise ValueError(
            f"no shipped weights for {arch!r} at scale {scale} ({path} is missing); "
            f"train them with 'asirp train {arch} --scale {scale}' or pass weights=FILE"
        )
    return path


def _unwrap(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint and strip a DataParallel ``module.`` prefix."""
    state = checkpoint
    for _ in range(3):
        if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[key] for key in WRAPPER_KEYS if key in state), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not state:
        raise WeightsArchitectureError(f"{path} holds no state dict (a name -> tensor table)")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        others = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
        raise WeightsArchitectureError(
            f"{path} is not a plain state dict: entries {', '.join(others[:5])} are not tensors "
            f"(expected the tensors themselves, or one of the wrappers {', '.join(WRAPPER_KEYS)})"
        )
    if all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module.") :]: value for key, value in tensors.items()}
    return tensors


def load_weights(path: str | os.PathLike[str]) -> LoadedWeights:
    """Read a weight file without executing anything it contains.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.safetensors`` file, or a ``.pth``/``.pt`` file readable with
        ``torch.load(weights_only=True)``.

    Returns
    -------
    LoadedWeights
        The state dict (CPU tensors) and the metadata.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    UnsafeWeightsError
        If the file type is not allowed, or a pickle would run code or build objects other than
        tensors and containers.
    WeightsArchitectureError
        If the file holds no state dict.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"weights file {file} not found")
    suffix = file.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                raw = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except SafetensorError as error:
            raise UnsafeWeightsError(f"{file} is not a valid safetensors file: {error}") from None
        metadata: dict[str, Any] = dict(raw)
        for key in ("config", "training"):
            if key in metadata:
                metadata[key] = json.loads(metadata[key])
        if "scale" in metadata:
            metadata["scale"] = int(metadata["scale"])
        return LoadedWeights(_unwrap(state, file), metadata, file)
    if suffix in PICKLE_SUFFIXES:
        try:
            with warnings.catch_warnings():
                # Raw pickles (protocol > 2) are read the same way; torch only notes the protocol.
                warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
                checkpoint = torch.load(file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as error:
            reason = " ".join(str(error).split())[:300]
            raise UnsafeWeightsError(
                f"refusing to load {file}: it is not a plain weights file that torch can read "
                f"safely (weights_only=True), and unpickling it could execute code ({reason}). "
                "Convert it to .safetensors in a trusted environment, or obtain a safe copy"
            ) from None
        return LoadedWeights(_unwrap(checkpoint, file), {}, file)
    raise UnsafeWeightsError(
        f"refusing to load {file}: weights are read only from .safetensors (preferred) or "
        f".pth/.pt files (through torch.load with weights_only=True), not {suffix or 'no suffix'!r}"
    )


def save_weights(
    network: nn.Module,
    path: str | os.PathLike[str],
    *,
    arch: str,
    scale: int,
    config: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a network's weights as ``.safetensors`` with ASIRP's metadata.

    Parameters
    ----------
    network : torch.nn.Module
        The trained network.
    path : str or os.PathLike
        Output file; its suffix must be ``.safetensors``.
    arch : str
        Architecture name (see :data:`asirp.sr.models.ARCHITECTURES`).
    scale : int
        Upscaling factor.
    config : dict
        Constructor arguments of the network (JSON-serialisable).
    training : dict, optional
        How the weights were made (command, data, loss, steps, wall time...).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from safetensors.torch import save_file

    file = Path(path)
    if file.suffix.lower() != ".safetensors":
        raise ValueError(f"weights are written as .safetensors, got {file}")
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in network.state_dict().items()
    }
    metadata = {
        "format": FORMAT,
        "arch": arch,
        "scale": str(int(scale)),
        "config": json.dumps(config, sort_keys=True),
        "training": json.dumps(training or {}, sort_keys=True),
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(file), metadata=metadata)
    return file


def load_state_strict(network: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load a state dict, turning any mismatch into a :class:`WeightsArchitectureError`."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{key} {tuple(state[key].shape)} (expected {tuple(expected[key].shape)})"
        for key in set(expected) & set(state)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong_shape:
            details.append(f"wrong shapes: {'; '.join(wrong_shape[:3])}")
        raise WeightsArchitectureError(
            f"{what} do not fit the {type(network).__name__} network: {', '.join(details)}"
        )
    network.load_state_dict({key: value.to(torch.float32) for key, value in state.items()})


def build_from_weights(loaded: LoadedWeights, arch: str, scale: int) -> nn.Module:
    """Build ASIRP's network described by a weight file of ours and load the weights into it.

    Raises
    ------
    WeightsArchitectureError
        If the file is for another architecture or scale, or its tensors do not fit.
    """
    meta = loaded.metadata
    if meta.get("format") != FORMAT:
        raise WeightsArchitectureError(
            f"{loaded.path} has no ASIRP metadata (format {FORMAT!r}); for {arch!r} use weights "
            "written by 'asirp train'"
        )
    if meta.get("arch") != arch:
        raise WeightsArchitectureError(
            f"{loaded.path} holds {meta.get('arch')!r} weights, not {arch!r}"
        )
    if int(meta.get("scale", -1)) != scale:
        raise WeightsArchitectureError(
            f"{loaded.path} holds x{meta.get('scale')} weights, but scale={scale} was asked for"
        )
    network = build_network(arch, scale, meta.get("config"))
    load_state_strict(network, loaded.state, f"weights in {loaded.path}")
    return network.eval()

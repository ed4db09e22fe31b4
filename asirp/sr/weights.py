"""Loading and saving network weights without executing code from the file.

Weights are read only from

- ``.safetensors`` files (preferred: a flat table of tensors and string metadata, nothing to
  execute), through :mod:`safetensors`;
- ``.pth`` / ``.pt`` files, through ``torch.load(..., weights_only=True)``, whose unpickler only
  rebuilds tensors and plain containers. A file whose pickle names anything else (a function to
  call, such as ``os.system``) is refused with :class:`UnsafeWeightsError` before anything from it
  runs.

Any other file type is refused.

Size limits (checked before anything is allocated): a ``.safetensors`` header (its first 8 bytes
give the length of the JSON table that follows) may be at most :data:`MAX_HEADER_BYTES`, the
tensors it declares at most :data:`MAX_WEIGHTS_BYTES` in all, and the file must be exactly as long
as the table says; a ``.pth``/``.pt`` file may be at most :data:`MAX_WEIGHTS_BYTES` (the members of
a zip checkpoint too, uncompressed). The network a file describes is checked against the tensors it
holds on PyTorch's ``meta`` device (shapes only, no memory) before the real network is built, and
its configuration must stay within :data:`CONFIG_LIMITS`: a tiny file whose metadata asks for a
network of thousands of channels is refused instead of costing gigabytes. Oversized files give
:class:`WeightsTooLargeError`.

ASIRP writes ``.safetensors`` with JSON metadata
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
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asirp.sr.models import DEFAULT_CONFIGS, build_network

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt")
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g")
"""Checkpoint entries that hold the state dict (Real-ESRGAN/BasicSR use ``params_ema``)."""

FORMAT = "asirp-sr"

MAX_WEIGHTS_BYTES = 256 << 20
"""Largest weight data accepted, bytes (256 MiB; Real-ESRGAN's x4 model is 64 MiB): the total of the
tensors a ``.safetensors`` file declares, or the size of a ``.pth``/``.pt`` file."""
MAX_HEADER_BYTES = 16 << 20
"""Largest ``.safetensors`` header (the JSON table of tensors and metadata), bytes."""
CONFIG_LIMITS: dict[str, int] = {
    "channels": 1024,
    "groups": 32,
    "blocks": 32,
    "reduction": 1024,
    "depth": 256,
    "num_in_ch": 16,
    "num_out_ch": 16,
    "num_feat": 1024,
    "num_block": 64,
    "num_grow_ch": 1024,
}
"""Largest value of each configuration entry of ASIRP's networks (all are integers >= 1)."""
MAX_RRDB_BLOCKS = CONFIG_LIMITS["num_block"]
"""Most RRDB blocks accepted in an ESRGAN/Real-ESRGAN file (those models have 23)."""


class UnsafeWeightsError(ValueError):
    """A weight file that would execute code (or is not a weight file) when loaded."""


class WeightsArchitectureError(ValueError):
    """Weights that do not fit the network they are loaded into."""


class WeightsTooLargeError(ValueError):
    """A weight file (or the network it describes) beyond ASIRP's size limits."""


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


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def check_safetensors_header(file: Path) -> dict[str, Any]:
    """Read and check a ``.safetensors`` file's header without reading any tensor.

    Parameters
    ----------
    file : pathlib.Path
        The file.

    Returns
    -------
    dict
        The header: tensor name -> ``{"dtype", "shape", "data_offsets"}``, and
        ``"__metadata__"`` (str -> str) when present.

    Raises
    ------
    WeightsTooLargeError
        A header longer than :data:`MAX_HEADER_BYTES` or tensors of more than
        :data:`MAX_WEIGHTS_BYTES` in all.
    UnsafeWeightsError
        A file too short, a header that is not a JSON table of tensors, offsets outside the
        file, or a file longer or shorter than its header says.
    """
    size = file.stat().st_size
    with file.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise UnsafeWeightsError(
                f"{file} is not a valid safetensors file: {size} bytes, shorter than the 8-byte "
                "header length"
            )
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise WeightsTooLargeError(
                f"{file} declares a {_mib(length)} safetensors header; at most "
                f"{_mib(MAX_HEADER_BYTES)} is accepted"
            )
        if length > size - 8:
            raise UnsafeWeightsError(
                f"{file} is not a valid safetensors file: its header would be {length} bytes, "
                f"but the file has only {size - 8} after the length"
            )
        text = handle.read(length)
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)[:200]
        raise UnsafeWeightsError(
            f"{file} is not a valid safetensors file: its header is not JSON ({reason})"
        ) from None
    if not isinstance(header, dict):
        raise UnsafeWeightsError(f"{file} is not a valid safetensors file: header not a table")
    total = end_of_data = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in offsets)
            or not 0 <= offsets[0] <= offsets[1]
            or not isinstance(shape, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)
        ):
            raise UnsafeWeightsError(
                f"{file} is not a valid safetensors file: tensor {str(name)[:80]!r} has no valid "
                "shape and data offsets"
            )
        total += offsets[1] - offsets[0]
        end_of_data = max(end_of_data, offsets[1])
    if total > MAX_WEIGHTS_BYTES:
        raise WeightsTooLargeError(
            f"{file} declares {_mib(total)} of tensors; at most {_mib(MAX_WEIGHTS_BYTES)} of "
            "weights is accepted"
        )
    if 8 + length + end_of_data != size:
        raise UnsafeWeightsError(
            f"{file} is not a valid safetensors file: its header describes "
            f"{8 + length + end_of_data} bytes, but the file has {size}"
        )
    return header


def check_pickle_size(file: Path) -> None:
    """Refuse a ``.pth``/``.pt`` file (or the members of its zip) above the size limit.

    Raises
    ------
    WeightsTooLargeError
        A file, or a zip checkpoint's uncompressed members in all, above
        :data:`MAX_WEIGHTS_BYTES`.
    """
    size = file.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise WeightsTooLargeError(
            f"{file} is {_mib(size)}; weight files of at most {_mib(MAX_WEIGHTS_BYTES)} are "
            "accepted"
        )
    if zipfile.is_zipfile(file):
        try:
            with zipfile.ZipFile(file) as archive:
                unpacked = sum(member.file_size for member in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise UnsafeWeightsError(f"{file} is not a readable checkpoint: {error}") from None
        if unpacked > MAX_WEIGHTS_BYTES:
            raise WeightsTooLargeError(
                f"{file} unpacks to {_mib(unpacked)}; weight files of at most "
                f"{_mib(MAX_WEIGHTS_BYTES)} are accepted"
            )


def _parse_metadata(raw: dict[str, str], file: Path) -> dict[str, Any]:
    """ASIRP's metadata strings, parsed (``config`` and ``training`` JSON, ``scale`` int)."""
    metadata: dict[str, Any] = dict(raw)
    for key in ("config", "training"):
        if key in metadata:
            try:
                metadata[key] = json.loads(metadata[key])
            except (ValueError, RecursionError):
                raise WeightsArchitectureError(
                    f"{file}: metadata entry {key!r} is not valid JSON (or is nested too deeply)"
                ) from None
    if "scale" in metadata:
        try:
            metadata["scale"] = int(metadata["scale"])
        except ValueError:
            raise WeightsArchitectureError(
                f"{file}: metadata 'scale' is {str(metadata['scale'])[:40]!r}, not an integer"
            ) from None
    return metadata


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
        tensors and containers, or a safetensors header is malformed.
    WeightsTooLargeError
        If the file (or the tensors its header declares) exceeds :data:`MAX_WEIGHTS_BYTES`.
    WeightsArchitectureError
        If the file holds no state dict, or its metadata is malformed.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"weights file {file} not found")
    suffix = file.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        from safetensors import SafetensorError, safe_open

        check_safetensors_header(file)
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                raw = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except SafetensorError as error:
            raise UnsafeWeightsError(f"{file} is not a valid safetensors file: {error}") from None
        return LoadedWeights(_unwrap(state, file), _parse_metadata(raw, file), file)
    if suffix in PICKLE_SUFFIXES:
        check_pickle_size(file)
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


def expected_shapes(build: Callable[[], nn.Module]) -> tuple[str, dict[str, torch.Size]]:
    """Build a network on PyTorch's ``meta`` device (no memory) and return its tensor shapes.

    Parameters
    ----------
    build : callable
        Makes the network (called under ``torch.device("meta")``).

    Returns
    -------
    name : str
        The network's class name.
    shapes : dict of str to torch.Size
        Its state dict's shapes.
    """
    with torch.device("meta"):
        network = build()
    return type(network).__name__, {key: value.shape for key, value in network.state_dict().items()}


def check_state_fits(
    expected: dict[str, torch.Size], state: dict[str, torch.Tensor], what: str, network: str
) -> None:
    """Compare a state dict with a network's tensor names and shapes.

    Raises
    ------
    WeightsArchitectureError
        Naming what is missing, unexpected or of the wrong shape.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{key} {tuple(state[key].shape)} (expected {tuple(expected[key])})"
        for key in set(expected) & set(state)
        if state[key].shape != expected[key]
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
            f"{what} do not fit the {network} network: {', '.join(details)}"
        )


def check_config(arch: str, config: Any, what: str) -> dict[str, int]:
    """Check a network configuration from a weight file's metadata before building anything.

    Parameters
    ----------
    arch : str
        Architecture (a key of :data:`asirp.sr.models.DEFAULT_CONFIGS`).
    config : Any
        The ``config`` metadata entry (None: the architecture's defaults).
    what : str
        How to name the weights in error messages.

    Returns
    -------
    dict of str to int
        The configuration.

    Raises
    ------
    WeightsArchitectureError
        Not a table of the architecture's entries, or values that are not integers >= 1.
    WeightsTooLargeError
        Values above :data:`CONFIG_LIMITS`.
    """
    if config is None:
        return dict(DEFAULT_CONFIGS[arch])
    known = DEFAULT_CONFIGS[arch]
    if not isinstance(config, dict) or set(config) - set(known):
        extra = sorted(set(config) - set(known)) if isinstance(config, dict) else []
        raise WeightsArchitectureError(
            f"{what}: configuration {str(config)[:120]} is not one of {arch!r} (entries "
            f"{', '.join(known)}{'; unknown: ' + ', '.join(map(str, extra[:5])) if extra else ''})"
        )
    for key, value in config.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise WeightsArchitectureError(
                f"{what}: configuration entry {key!r} must be an integer >= 1, got {value!r:.40}"
            )
        if value > CONFIG_LIMITS[key]:
            raise WeightsTooLargeError(
                f"{what}: configuration entry {key!r} is {value}; at most {CONFIG_LIMITS[key]} "
                "is accepted"
            )
    return dict(config)


def load_state_strict(network: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load a state dict, turning any mismatch into a :class:`WeightsArchitectureError`."""
    shapes = {key: value.shape for key, value in network.state_dict().items()}
    check_state_fits(shapes, state, what, type(network).__name__)
    network.load_state_dict({key: value.to(torch.float32) for key, value in state.items()})


def build_from_weights(loaded: LoadedWeights, arch: str, scale: int) -> nn.Module:
    """Build ASIRP's network described by a weight file of ours and load the weights into it.

    Raises
    ------
    WeightsArchitectureError
        If the file is for another architecture or scale, or its tensors do not fit (checked
        before the network is built).
    WeightsTooLargeError
        If its configuration exceeds :data:`CONFIG_LIMITS`.
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
    what = f"weights in {loaded.path}"
    config = check_config(arch, meta.get("config"), what)
    # Shapes first, on the meta device: the real network is built only for weights that fill it.
    name, shapes = expected_shapes(lambda: build_network(arch, scale, config))
    check_state_fits(shapes, loaded.state, what, name)
    network = build_network(arch, scale, config)
    load_state_strict(network, loaded.state, what)
    return network.eval()

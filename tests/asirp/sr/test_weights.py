"""Weights load only through safetensors or torch.load(weights_only=True); wrong ones are named."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import asirp
from asirp.sr import ConsistencyWarning, UnsafeWeightsError, WeightsArchitectureError
from asirp.sr.esrgan import rrdb_config, rrdb_from_state
from asirp.sr.models import DEFAULT_CONFIGS, RRDBNet, build_network
from asirp.sr.weights import build_from_weights, load_weights, save_weights


class _RunsCode:
    """Unpickling this calls os.system: what a malicious model file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_model_file_that_would_run_code_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pth"
    payload = {"params_ema": {"conv_first.weight": _RunsCode(marker)}}
    if writer == "pickle":
        with evil.open("wb") as handle:
            pickle.dump(payload, handle)
    else:
        torch.save(payload, evil)
    with pytest.raises(UnsafeWeightsError, match="refusing to load"):
        load_weights(evil)
    # Through the public entry point too, as a ValueError (exit status 2 on the command line).
    with pytest.raises(ValueError, match="refusing to load"):
        asirp.restore(np.ones((16, 16)), "rrdb_sr", weights=str(evil), device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pkl", ".onnx", ".bin", ""])
def test_other_file_types_are_refused(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(UnsafeWeightsError, match=r"\.safetensors"):
        load_weights(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_weights(tmp_path / "none.safetensors")


def test_asirp_weights_round_trip_with_metadata(tmp_path):
    network = build_network("fca_sr", 2)
    path = save_weights(
        network,
        tmp_path / "w.safetensors",
        arch="fca_sr",
        scale=2,
        config=DEFAULT_CONFIGS["fca_sr"],
        training={"steps": 3},
    )
    loaded = load_weights(path)
    assert loaded.metadata["arch"] == "fca_sr"
    assert loaded.metadata["scale"] == 2
    assert loaded.metadata["training"] == {"steps": 3}
    rebuilt = build_from_weights(loaded, "fca_sr", 2)
    for key, value in network.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value)


def test_wrong_architecture_or_scale_gives_a_clear_error(tmp_path):
    fca = tmp_path / "fca.safetensors"
    save_weights(
        build_network("fca_sr", 2), fca, arch="fca_sr", scale=2, config=DEFAULT_CONFIGS["fca_sr"]
    )
    with pytest.raises(WeightsArchitectureError, match="holds 'fca_sr' weights, not 'rrdb_sr'"):
        build_from_weights(load_weights(fca), "rrdb_sr", 2)
    with pytest.raises(WeightsArchitectureError, match="x2 weights, but scale=4"):
        build_from_weights(load_weights(fca), "fca_sr", 4)
    with pytest.raises(ValueError, match="x2 weights, but scale=4"):
        asirp.restore(np.ones((16, 16)), "fca_sr", weights=str(fca), scale=4, device="cpu")
    # A file of another program that is not an RRDBNet (an SRVGG-like compact network).
    other = tmp_path / "compact.pth"
    torch.save({"params": {"body.0.weight": torch.zeros(64, 3, 3, 3)}}, other)
    with pytest.raises(WeightsArchitectureError, match="not an ESRGAN/Real-ESRGAN RRDBNet"):
        asirp.restore(np.ones((16, 16)), "rrdb_sr", weights=str(other), device="cpu")
    # Right names, wrong shapes.
    state = RRDBNet(1, 1, scale=2, num_feat=8, num_block=1, num_grow_ch=4).state_dict()
    state["conv_up1.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(WeightsArchitectureError, match=r"wrong shapes: conv_up1\.weight"):
        rrdb_from_state(state, 2, "test weights")
    # fca_sr weights are not accepted by fca_sr without ASIRP's metadata.
    plain = tmp_path / "plain.pth"
    torch.save(build_network("fca_sr", 2).state_dict(), plain)
    with pytest.raises(WeightsArchitectureError, match="no ASIRP metadata"):
        build_from_weights(load_weights(plain), "fca_sr", 2)


def _full_real_esrgan_state(scale: int, num_block: int = 23) -> dict[str, torch.Tensor]:
    """Random weights with Real-ESRGAN's RRDBNet layout (RGB, 64 features, growth 32)."""
    generator = torch.Generator().manual_seed(scale)
    network = RRDBNet(3, 3, scale=scale, num_feat=64, num_block=num_block, num_grow_ch=32)
    return {
        key: torch.randn(value.shape, generator=generator) * 0.01
        for key, value in network.state_dict().items()
    }


def test_real_esrgan_x4_pth_and_x2_safetensors_load_and_run(tmp_path):
    from safetensors.torch import save_file

    state_x4 = _full_real_esrgan_state(4)
    assert rrdb_config(state_x4) == (
        {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32},
        4,
    )
    pth = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": state_x4}, pth)
    state_x2 = _full_real_esrgan_state(2, num_block=2)
    assert state_x2["conv_first.weight"].shape[1] == 12  # pixel-unshuffled RGB
    safetensors = tmp_path / "RealESRGAN_x2.safetensors"
    save_file(state_x2, str(safetensors))

    image = np.random.default_rng(0).poisson(50.0, (12, 14)).astype(np.float32)
    for path, scale in ((pth, 4), (safetensors, 2)):
        with pytest.warns(ConsistencyWarning):  # random weights reproduce nothing
            result = asirp.restore(image, "rrdb_sr", weights=str(path), scale=scale, device="cpu")
        assert result.image.shape == (12 * scale, 14 * scale)
        assert np.isfinite(result.image).all()
        assert result.metrics["consistent"] is False
        assert "3 channel(s)" in result.params["network"]
    with pytest.raises(ValueError, match="x4 RRDBNet, but scale=2"):
        asirp.restore(image, "rrdb_sr", weights=str(pth), scale=2, device="cpu")


def test_esrgan_2018_names_map_onto_real_esrgan_names():
    network = RRDBNet(3, 3, scale=4, num_feat=8, num_block=2, num_grow_ch=4)
    state = network.state_dict()
    renames = {  # in this order: "conv_body" before "body."
        "conv_body": "trunk_conv",
        "body.": "RRDB_trunk.",
        "rdb": "RDB",
        "conv_up1": "upconv1",
        "conv_up2": "upconv2",
        "conv_hr": "HRconv",
    }
    new_arch = {}
    for key, value in state.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        new_arch[key] = value
    old_arch = {}
    for key, value in state.items():
        stem, _, kind = key.rpartition(".")
        if stem.startswith("body."):
            _, block, rdb, conv = stem.split(".")
            old_arch[f"model.1.sub.{block}.{rdb.upper()}.{conv}.0.{kind}"] = value
        else:
            index = {
                "conv_first": 0,
                "conv_body": "1.sub.2",
                "conv_up1": 3,
                "conv_up2": 6,
                "conv_hr": 8,
                "conv_last": 10,
            }[stem]
            old_arch[f"model.{index}.{kind}"] = value
    probe = torch.rand(1, 3, 6, 6)
    expected = network(probe)
    for variant in (new_arch, old_arch):
        loaded = rrdb_from_state(variant, 4, "test")
        torch.testing.assert_close(loaded(probe), expected)

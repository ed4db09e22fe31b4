"""The super-resolution methods through asirp.restore: shapes, metrics, stacks, seeds, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import asirp
from asirp.cli import main
from asirp.metrics import psnr
from asirp.results_io import read_restoration
from asirp.sr.models import build_network
from asirp.sr.weights import save_weights
from tests.asirp.sr.conftest import bicubic

TINY = {
    "fca_sr": {"channels": 4, "groups": 1, "blocks": 1, "reduction": 2},
    "beam_sr": {"channels": 4, "groups": 1, "blocks": 1, "reduction": 2},
    "rrdb_sr": {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 4, "num_block": 1, "num_grow_ch": 2},
}
LENIENT = {"consistency_tolerance": 1000.0}  # random weights: do not warn


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Untrained tiny networks of both trained architectures, x2 and x4."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for arch, config in TINY.items():
        for scale in (2, 4):
            network = build_network(arch, scale, config)
            path = folder / f"{arch}_x{scale}.safetensors"
            save_weights(network, path, arch=arch, scale=scale, config=config)
            paths[arch, scale] = str(path)
    return paths


def _params(method, scale, tiny_weights):
    if method == "zssr":
        return {"iterations": 3, "crop": 16, "batch": 2, **LENIENT}
    return {"weights": tiny_weights[method, scale], **LENIENT}


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("method", ["fca_sr", "beam_sr", "rrdb_sr", "zssr"])
def test_output_is_upscaled_with_consistency_metrics(method, scale, tiny_weights):
    image = np.random.default_rng(0).poisson(80.0, (20, 24))
    params = _params(method, scale, tiny_weights)
    result = asirp.restore(image, method, psf_sigma_px=0.8, scale=scale, device="cpu", **params)
    assert result.image.shape == (20 * scale, 24 * scale)
    assert result.image.dtype == np.float32
    assert np.isfinite(result.image).all()
    assert result.metrics["consistency_residual"] > 0
    assert isinstance(result.metrics["consistent"], bool)
    assert "residual" not in result.metrics  # no same-shape data residual for an upscaled map
    assert result.params["scale"] == scale
    assert result.params["beam_source"] == "given"
    assert result.params["beam_sigma_px"] == pytest.approx(0.8, rel=1e-3)
    assert result.psf.shape[0] % 2 == 1  # the fine-grid beam of the forward model
    needs_psf = asirp.get_method(method).needs_psf  # beam_sr: told the beam, never guesses it
    beam = {"psf_sigma_px": 0.8} if needs_psf else {}
    stack = asirp.restore(
        np.stack([image, image[::-1]]), method, scale=scale, device="cpu", **beam, **params
    )
    assert stack.image.shape == (2, 20 * scale, 24 * scale)
    assert stack.params["beam_source"] == ("given" if needs_psf else "estimated")
    assert len(stack.params["beam_sigma_px"]) == 2


@pytest.mark.parametrize("scale", [1, 3])
def test_scale_must_be_2_or_4(scale, tiny_weights):
    with pytest.raises(ValueError, match="scale"):
        asirp.restore(np.ones((16, 16)), "fca_sr", scale=scale, device="cpu")


def test_reference_is_compared_at_the_fine_shape(tiny_weights):
    image = np.random.default_rng(1).poisson(80.0, (16, 16)).astype(float)
    params = {"weights": tiny_weights["fca_sr", 2], **LENIENT}
    result = asirp.restore(image, "fca_sr", reference=np.kron(image, np.ones((2, 2))), **params)
    assert np.isfinite(result.metrics["psnr"])
    with pytest.raises(ValueError, match=r"result will have shape \(32, 32\)"):
        asirp.restore(image, "fca_sr", reference=image, **params)


@pytest.mark.parametrize("method", ["fca_sr", "zssr"])
def test_stack_matches_maps_restored_one_by_one(method, tiny_weights):
    rng = np.random.default_rng(2)
    stack = rng.poisson(60.0, (3, 18, 20)).astype(np.float32)
    params = {**_params(method, 2, tiny_weights), "seed": 4, "psf_sigma_px": 0.7}
    together = asirp.restore(stack, method, **params)
    for index in range(3):
        alone = asirp.restore(stack[index], method, **params)
        np.testing.assert_allclose(together.image[index], alone.image, rtol=1e-4, atol=1e-3)


def test_zssr_is_reproducible_for_a_seed_and_reports_its_training():
    image = np.random.default_rng(3).poisson(100.0, (24, 24))
    params = {"iterations": 12, "crop": 16, "batch": 2, "eval_every": 4, "psf_sigma_px": 0.8}
    first = asirp.restore(image, "zssr", seed=1, **params, **LENIENT)
    again = asirp.restore(image, "zssr", seed=1, **params, **LENIENT)
    other = asirp.restore(image, "zssr", seed=2, **params, **LENIENT)
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)
    assert first.params["iterations_run"] <= 12
    assert first.params["stopped_by"] in ("iterations", "early_stopping")
    assert first.params["validation_l1"] <= first.params["bicubic_validation_l1"]


def test_zssr_beats_bicubic_on_a_blurred_star(small_star):
    measured, truth, sigma = small_star
    result = asirp.restore(
        measured,
        "zssr",
        psf_sigma_px=sigma,
        iterations=100,
        seed=0,
        **LENIENT,
    )
    assert result.params["stopped_by"] in ("iterations", "early_stopping", "consistency_guard")
    gain = psnr(truth, result.image) - psnr(truth, bicubic(measured, 2))
    assert gain > 0.5
    assert result.metrics["consistency_residual"] < 1.5


def test_zssr_cancel_stops_it():
    image = np.random.default_rng(4).poisson(100.0, (32, 32))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(asirp.RestorationCancelled):
        asirp.restore(image, "zssr", cancel=cancel, **LENIENT)


def test_command_line_restores_with_a_super_resolution_method(tmp_path, tiny_weights):
    source = tmp_path / "map.npy"
    np.save(source, np.random.default_rng(5).poisson(50.0, (16, 20)).astype(np.float32))
    output = tmp_path / "sr.h5"
    status = main(
        [
            "restore",
            str(source),
            "-o",
            str(output),
            "-m",
            "fca_sr",
            "--psf-sigma-px",
            "0.8",
            "--param",
            "scale=4",
            "--param",
            f"weights={tiny_weights['fca_sr', 4]}",
            "--param",
            "consistency_tolerance=1000",
            "--device",
            "cpu",
        ]
    )
    assert status == 0
    stored = read_restoration(output)
    assert stored["image"].shape == (64, 80)
    assert stored["metrics"]["consistent"] is True
    again = ["restore", str(source), "-o", str(output), "--overwrite", "-m", "fca_sr"]
    assert main([*again, "--param", "scale=3"]) == 2

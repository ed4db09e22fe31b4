"""asirp train: a tiny run writes weights the methods load; bad settings exit with status 2."""

from __future__ import annotations

import numpy as np
import pytest

import asirp
from asirp.cli import main
from asirp.sr.train import TrainSettings, train
from asirp.sr.weights import load_weights

TINY = {
    "fca_sr": {"channels": 4, "groups": 1, "blocks": 1, "reduction": 2},
    "beam_sr": {"channels": 4, "groups": 1, "blocks": 1, "reduction": 2},
    "rrdb_sr": {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 4, "num_block": 1, "num_grow_ch": 2},
}


@pytest.mark.parametrize("arch", ["fca_sr", "beam_sr", "rrdb_sr"])
def test_a_tiny_training_run_writes_weights_the_method_uses(tmp_path, arch):
    output = tmp_path / f"{arch}.safetensors"
    settings = TrainSettings(
        arch,
        2,
        str(output),
        steps=4,
        batch=2,
        patch=32,
        pool=3,
        config=TINY[arch],
        device="cpu",
        log_every=2,
    )
    lines = []
    result = train(settings, log=lines.append)
    assert result.steps_run == 4
    assert np.isfinite(result.final_loss)
    assert set(result.heldout) == {"mesh", "seed", "star", "projection"}
    metadata = load_weights(output).metadata
    assert metadata["arch"] == arch
    assert metadata["training"]["command"].startswith(f"asirp train {arch} --scale 2 -o ")
    assert metadata["training"]["steps_run"] == 4
    assert any(line.startswith("step 4/4") for line in lines)
    image = np.random.default_rng(0).poisson(40.0, (16, 16))
    restored = asirp.restore(
        image,
        arch,
        weights=str(output),
        psf_sigma_px=0.8,  # beam_sr is told the beam; the others take it as the forward model's
        consistency_tolerance=1000.0,
        device="cpu",
    )
    assert restored.image.shape == (32, 32)


def test_training_is_reproducible_for_a_seed(tmp_path):
    def run(name, seed):
        settings = TrainSettings(
            "fca_sr",
            2,
            str(tmp_path / name),
            steps=3,
            batch=2,
            patch=16,
            pool=2,
            config=TINY["fca_sr"],
            device="cpu",
            seed=seed,
        )
        train(settings, log=lambda line: None)
        return load_weights(tmp_path / name).state

    first, again, other = run("a.safetensors", 1), run("b.safetensors", 1), run("c.safetensors", 2)
    assert all(np.array_equal(first[k].numpy(), again[k].numpy()) for k in first)
    assert not all(np.array_equal(first[k].numpy(), other[k].numpy()) for k in first)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "fca_sr", "-o", "w.pth"], ".safetensors"),
        (["train", "fca_sr", "-o", "w.safetensors", "--steps", "0"], "--steps must be >= 1"),
        (["train", "fca_sr", "-o", "w.safetensors", "--patch", "30"], "multiple of 4"),
        (["train", "zssr", "-o", "w.safetensors"], "invalid choice"),
        (["train", "fca_sr", "-o", "w.safetensors", "--scale", "3"], "invalid choice"),
    ],
)
def test_bad_training_settings_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("asirp: error:")
    assert message in error
    assert error.count("\n") == 1

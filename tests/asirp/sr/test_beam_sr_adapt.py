"""``beam_sr``'s test-time adaptation, and ``auto`` giving way when its choice learned nothing."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import asirp
import asirp.auto as auto_module
import asirp.sr.zssr as zssr_module
from asirp import threads
from asirp.methods.beam_sr import ADAPTED_IN_AUTO, load_network
from asirp.metrics import psnr
from asirp.selection.candidates import fitting_candidates
from asirp.sr.consistency import ConsistencyWarning
from asirp.sr.evalset import evaluation_set
from asirp.sr.runner import network_for
from asirp.sr.weights import shipped_weights_path

ADAPT = {"adapt_iterations": 50, "split_guard": False, "device": "cpu"}


@pytest.fixture(scope="module")
def text_crop():
    """48 x 48 measured px of the held-out text case (x2, sigma 1.4 px), its 96 x 96 truth."""
    case = evaluation_set(2, names=["text"])[0]
    return case.measured[10:58, 40:88].copy(), case.truth[20:116, 80:176].copy(), case.sigma_px


def shipped_state() -> dict[str, torch.Tensor]:
    path = shipped_weights_path("beam_sr", 2)
    loaded = network_for(load_network, path, 2, torch.device("cpu"))
    return {key: value.clone() for key, value in loaded.network.state_dict().items()}


def test_adapting_to_text_beats_the_shipped_network_and_leaves_it_unchanged(text_crop):
    measured, truth, sigma = text_crop
    before = shipped_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)
        shipped = asirp.restore(
            measured, "beam_sr", psf_sigma_px=sigma, **{**ADAPT, "adapt_iterations": 0}
        )
        adapted = asirp.restore(measured, "beam_sr", psf_sigma_px=sigma, seed=0, **ADAPT)
    # content the training family never drew (strokes of text): the map's own pairs help
    assert psnr(truth, adapted.image) > psnr(truth, shipped.image) + 0.15
    assert adapted.params["adapted_to_the_map"] is True
    assert adapted.params["adapt_iterations_run"] == 50
    assert adapted.params["adapt_stopped_by"] == "iterations"
    assert "adapted_to_the_map" not in shipped.params
    after = shipped_state()  # each map trains its own copy
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_adaptation_gives_the_same_result_twice_and_follows_its_seed(text_crop):
    measured, _, sigma = text_crop
    with threads.fixed_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)
        first, again, other = (
            asirp.restore(measured, "beam_sr", psf_sigma_px=sigma, seed=seed, **ADAPT).image
            for seed in (3, 3, 4)
        )
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_adaptation_trains_under_no_grad_inside_auto(text_crop):
    measured, _, sigma = text_crop
    # the caller's adapt_iterations narrows auto to beam_sr and shortens its training
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)
        result = asirp.restore(
            measured, "auto", scale=2, psf_sigma_px=sigma, adapt_iterations=10, mode="thorough"
        )
    entries = {c["method"]: c for c in result.params["selection"]["candidates"]}
    assert entries["beam_sr"]["score"] is not None, entries["beam_sr"]["note"]
    assert result.method == "beam_sr"
    assert result.params["adapt_iterations_run"] == 10


def test_auto_adapts_beam_sr_at_x2_in_its_thorough_mode_only():
    def adapted(mode, scale):
        grid = asirp.get_method("beam_sr").selector_grid
        return [setting.get("adapt_iterations", 0) for setting in grid.settings(mode, scale)]

    assert adapted("thorough", 2) == [ADAPTED_IN_AUTO]
    assert adapted("thorough", 4) == [0]  # measured to lose at x4 (64 x 64 px maps)
    assert adapted("cheap", 2) == adapted("cheap", 4) == [0]
    for scale, expected in ((2, ADAPTED_IN_AUTO), (4, None)):
        candidates, _ = fitting_candidates(
            scale=scale, has_psf=True, psf_known=True, mode="thorough", fixed={}, names=("beam_sr",)
        )
        (entry,) = [c for c in candidates if c.method == "beam_sr"]
        assert dict(entry.params).get("adapt_iterations") == expected


def test_an_adaptation_longer_than_the_limit_is_refused_before_work(text_crop):
    measured, _, sigma = text_crop
    with pytest.raises(ValueError, match="adapt_iterations"):
        asirp.restore(measured, "beam_sr", psf_sigma_px=sigma, adapt_iterations=10**6)
    with pytest.raises(ValueError, match="adapt_learning_rate"):
        asirp.restore(measured, "beam_sr", psf_sigma_px=sigma, adapt_learning_rate=0.5)


def test_auto_runs_the_runner_up_when_its_choice_learned_nothing_on_the_full_data(monkeypatch):
    cols = np.mgrid[:32, :32][1]
    counts = np.random.default_rng(0).poisson(70 + 40 * np.sin(cols / 2.5)).astype(np.float32)
    real_select = auto_module.select_stack

    def zssr_chosen(*args, **kwargs):
        selection = real_select(*args, **kwargs)
        (zssr,) = [c for c in selection.candidates if c.method == "zssr"]
        return dataclasses.replace(selection, method="zssr", params=dict(zssr.params))

    real_train = zssr_module.train_internal

    def nothing_on_the_full_map(network, image, beam, scale, settings, problem, seed):
        # a short training on the split parts; none at all on the full data
        full = tuple(image.shape) == counts.shape
        settings = {**settings, "iterations": 0 if full else 30, "eval_every": 10}
        return real_train(network, image, beam, scale, settings, problem, seed)

    monkeypatch.setattr(auto_module, "select_stack", zssr_chosen)
    monkeypatch.setattr(zssr_module, "train_internal", nothing_on_the_full_map)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)
        result = asirp.restore(
            counts,
            "auto",
            scale=2,
            psf_sigma_px=0.8,
            candidates=["zssr", "rl_sr"],
        )
    assert result.method == "rl_sr"
    assert "zssr_fell_back_to_bicubic" not in result.params
    assert result.params["auto_fallback"].startswith("zssr, chosen by the score, fell back")
    assert f"auto: {result.params['auto_fallback']}" in result.cautions()
    assert result.image.shape == (64, 64)

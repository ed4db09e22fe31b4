"""The measured selector: splits, score, ranking, records, budget, context checks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.stats

import asirp
from asirp.metrics import blur, psnr
from asirp.psf import gaussian_psf
from asirp.selection import COSTS, CostModel, Selection, select
from asirp.selection import candidates as candidates_module
from asirp.selection.splitting import binomial_split, fission_split, measurement_split
from tests.conftest import make_noisy_map

FEW = ["richardson_lucy", "tikhonov", "van_cittert"]


def test_binomial_halves_are_independent_poisson_that_sum_to_the_data():
    rng = np.random.default_rng(1)
    data = rng.poisson(20.0, size=(2, 128, 128)).astype(np.float32)
    split = binomial_split(data, np.random.default_rng(2))
    np.testing.assert_allclose(split.first + split.second, data, atol=1e-4)
    for part in (split.first, split.second):
        assert part.mean() == pytest.approx(10.0, rel=0.02)
        assert part.var() == pytest.approx(10.0, rel=0.05)  # Poisson: variance = mean
    correlation = np.corrcoef(split.first.ravel(), split.second.ravel())[0, 1]
    assert abs(correlation) < 0.02  # a plain half of the counts would correlate at +1


def test_binomial_split_of_normalised_maps_thins_in_count_units():
    rng = np.random.default_rng(3)
    counts = rng.poisson(40.0, size=(1, 96, 96))
    normalised = (counts / 37.0).astype(np.float32)
    gain = asirp.iteration.estimate_counts_gain(normalised)
    split = binomial_split(normalised, np.random.default_rng(4), gain)
    assert split.gain == pytest.approx(1 / 37.0, rel=0.3)
    assert split.first.var() == pytest.approx(20.0 / 37.0**2, rel=0.3)
    np.testing.assert_allclose(split.first + split.second, normalised, atol=1e-5)


def test_a_given_counts_gain_is_the_splits_count_size():
    # an I0-normalised map (400 monitor counts per unit) whose gain the caller knows
    sample = make_noisy_map("mesh", peak=80.0, shape=(48, 48), sigma_px=1.5)
    normalised = (sample.measured / 400.0).astype(np.float32)
    estimated = asirp.iteration.estimate_counts_gain(normalised)
    assert abs(estimated - 1 / 400.0) > 1e-5  # the estimate is not the truth ...
    given = asirp.restore(
        normalised, psf_sigma_px=1.5, candidates=FEW, seed=2, counts_gain=1 / 400.0
    )
    guessed = asirp.restore(normalised, psf_sigma_px=1.5, candidates=FEW, seed=2)
    # ... so what the split says it used tells them apart
    assert "(gain 0.0025 per count)" in given.params["auto_reason"]
    assert "(gain 0.0025 per count)" not in guessed.params["auto_reason"]
    assert given.params["selection"]["context"]["counts_gain"] == pytest.approx(0.0025)
    assert "counts_gain" not in guessed.params["selection"]["context"]
    with pytest.raises(ValueError, match="counts_gain"):
        select(normalised, psf_sigma_px=1.5, candidates=FEW, counts_gain=-1.0)
    chosen = select(normalised, psf_sigma_px=1.5, candidates=FEW, seed=2, counts_gain=0.0025)
    assert chosen.method == given.method


def test_fission_parts_have_uncorrelated_noise_and_the_full_mean():
    rng = np.random.default_rng(5)
    mean = np.tile(np.linspace(0.2, 0.9, 128, dtype=np.float32), (128, 1))[None]
    data = mean + rng.normal(0.0, 0.02, size=mean.shape).astype(np.float32)
    split = fission_split(data, np.random.default_rng(6))
    noise = (split.first - mean).ravel(), (split.second - mean).ravel()
    assert abs(np.corrcoef(*noise)[0, 1]) < 0.03
    assert split.first.mean() == pytest.approx(mean.mean(), abs=1e-3)
    assert noise[0].std() == pytest.approx(0.02 * np.sqrt(2), rel=0.1)


def test_measurement_split_finds_the_efficiency_ratio():
    sample = make_noisy_map("mesh", peak=100.0, shape=(48, 48))
    second = np.random.default_rng(7).poisson(0.5 * blur(sample.truth, sample.psf))
    split = measurement_split(sample.measured[None], second[None].astype(np.float32))
    assert split.ratio[0] == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError, match="differ in shape"):
        measurement_split(sample.measured[None], second[None, :40].astype(np.float32))


def test_selection_ranks_explains_and_records_every_candidate():
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5, seed=3)
    selection = select(sample.measured, psf_sigma_px=1.5, candidates=FEW, seed=4)
    assert isinstance(selection, Selection)
    scores = [c.score for c in selection.ranking]
    assert scores == sorted(scores)
    assert [c.rank for c in selection.ranking] == list(range(1, len(scores) + 1))
    assert {c.method for c in selection.candidates} == {"identity", *FEW}
    assert selection.chosen is not None
    assert selection.chosen.method == selection.method
    assert selection.chosen.cost_ms is not None
    assert selection.source == "scored"
    assert selection.seed == 4
    assert "binomial" in selection.reason
    assert selection.method in selection.reason
    assert selection.elapsed_s > 0
    assert selection.context["split"] == "binomial"
    json.dumps(selection.to_dict(), allow_nan=False)


def test_selection_is_reproducible_with_its_seed():
    sample = make_noisy_map("tissue", peak=30.0, shape=(48, 48), sigma_px=1.5)
    runs = [
        select(sample.measured, psf_sigma_px=1.5, candidates=FEW, seed=seed) for seed in (9, 9, 10)
    ]
    first, again, other = ([c.score for c in run.candidates] for run in runs)
    assert first == again
    assert first != other  # another seed, another split
    assert runs[0].method == runs[1].method


def test_the_score_tracks_the_true_error_across_candidates():
    sample = make_noisy_map("tissue", peak=100.0, shape=(64, 64), sigma_px=2.0, seed=2)
    selection = select(sample.measured, psf_sigma_px=2.0, mode="thorough", seed=1)
    truth = {}
    for entry in selection.ranking:
        if entry.method == "identity":
            image = sample.measured
        else:
            image = asirp.restore(
                sample.measured, entry.method, psf_sigma_px=2.0, **entry.params
            ).image
        truth[entry.label] = psnr(sample.truth, image)
    labels = list(truth)
    rho = scipy.stats.spearmanr(
        [-next(c.score for c in selection.ranking if c.label == x) for x in labels],
        [truth[x] for x in labels],
    ).statistic
    assert rho > 0.6
    best = max(truth.values())
    assert truth[selection.chosen.label] > best - 1.0
    assert truth[selection.chosen.label] > truth["identity"] + 3.0


def test_auto_restoration_records_the_selection_and_is_reproducible():
    sample = make_noisy_map("mesh", peak=80.0, shape=(48, 48), sigma_px=1.5)
    runs = [
        asirp.restore(
            sample.measured, psf_sigma_px=1.5, reference=sample.truth, candidates=FEW, seed=2
        )
        for _ in range(2)
    ]
    result = runs[0]
    record = result.params["selection"]
    assert record["method"] == result.method
    assert record["seed"] == result.params["seed"] == 2
    assert result.params["auto_reason"] == record["reason"]
    assert result.metrics["selection_s"] > 0
    assert "selection_score" in result.metrics
    assert result.metrics["psnr"] > result.metrics["psnr_input"] + 1.0
    json.dumps(result.params, allow_nan=False)
    np.testing.assert_array_equal(result.image, runs[1].image)


def test_second_measurement_replaces_the_random_split():
    sample = make_noisy_map("mesh", peak=60.0, shape=(48, 48), sigma_px=1.5)
    second = np.random.default_rng(8).poisson(0.7 * blur(sample.truth, sample.psf))
    result = asirp.restore(
        sample.measured,
        psf_sigma_px=1.5,
        second=second.astype(np.float32),
        reference=sample.truth,
        candidates=FEW,
    )
    record = result.params["selection"]
    assert record["context"]["split"] == "measurements"
    assert "second" in result.params["auto_reason"]
    assert result.metrics["psnr"] > result.metrics["psnr_input"] + 1.0


def test_tomography_projections_use_data_fission():
    rng = np.random.default_rng(4)
    sample = make_noisy_map("star", peak=1.0, shape=(48, 48), sigma_px=1.5)
    transmission = 0.4 + 0.5 * sample.truth / sample.truth.max()
    measured = blur(transmission, gaussian_psf(1.5)) + rng.normal(0.0, 0.01, transmission.shape)
    result = asirp.restore(
        measured,
        psf_sigma_px=1.5,
        modality="tomo_projection",
        reference=transmission,
        candidates=FEW,
        mode="cheap",
    )
    assert result.params["selection"]["context"]["split"] == "fission"
    assert result.metrics["psnr"] > result.metrics["psnr_input"]


def test_negative_data_are_not_thinned_as_counts():
    sample = make_noisy_map("mesh", peak=100.0, shape=(48, 48), sigma_px=1.5)
    selection = select(sample.measured - 40.0, psf_sigma_px=1.5, candidates=FEW, mode="cheap")
    assert selection.context["split"] == "fission"
    assert "negative" in selection.reason


def test_the_input_is_a_candidate_and_can_be_returned_unchanged():
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5)
    result = asirp.restore(sample.measured, psf_sigma_px=1.5, candidates=[])
    assert result.method == "identity"
    np.testing.assert_array_equal(result.image, sample.measured)
    upsampled = asirp.restore(sample.measured, psf_sigma_px=1.5, candidates=[], scale=2)
    assert upsampled.image.shape == (96, 96)
    assert upsampled.image.mean() == pytest.approx(sample.measured.mean(), rel=0.01)


@pytest.fixture
def costs(monkeypatch) -> CostModel:
    """The process-wide cost cache, empty for this test (its measurements come back after)."""
    monkeypatch.setattr(COSTS, "_measured", {})
    monkeypatch.setattr(COSTS, "_fft_ms", {})
    return COSTS


def test_candidates_that_do_not_fit_the_budget_are_skipped(costs):
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5)
    slow = candidates_module.Candidate.make("tikhonov")
    costs.record(slow, 48 * 48, 10_000.0, "cpu")  # 10 s per map: cannot fit 5 s
    selection = select(
        sample.measured,
        psf_sigma_px=1.5,
        candidates=["tikhonov", "van_cittert"],
        budget_ms=5000,
        device="cpu",
    )
    assert selection.mode == "cheap"
    entry = next(c for c in selection.candidates if c.method == "tikhonov")
    assert entry.status == "skipped"
    assert entry.score is None
    assert "budget" in entry.note
    assert "budget" in selection.reason
    assert selection.method != "tikhonov"
    assert costs.estimate(candidates_module.Candidate.make("van_cittert"), 48 * 48, "cpu")[1] in (
        "measured",
        "scaled",
    )


def test_cheap_mode_tries_fewer_settings_on_a_smaller_region():
    sample = make_noisy_map("mesh", peak=50.0, shape=(128, 128), sigma_px=1.5)
    cheap = select(sample.measured, psf_sigma_px=1.5, mode="cheap", candidates=["richardson_lucy"])
    grid = asirp.get_method("richardson_lucy").selector_grid
    thorough_grid = grid.settings("thorough")
    assert len(cheap.candidates) == 1 + len(grid.settings("cheap"))
    assert len(cheap.candidates) < 1 + len(thorough_grid)
    region = cheap.context["region"]
    assert region[2:] == [96, 96]
    assert cheap.context["splits"] == 1


def test_a_method_can_bring_its_own_forward_model(monkeypatch):
    calls = []

    def wrong(estimate, psf, scale):
        calls.append(scale)
        return 0.0 * estimate

    spec = dataclasses.replace(asirp.get_method("van_cittert"), forward_model=wrong)
    monkeypatch.setitem(asirp.registry._REGISTRY, "van_cittert", spec)
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5)
    selection = select(
        sample.measured, psf_sigma_px=1.5, candidates=["van_cittert", "tikhonov"], mode="cheap"
    )
    assert calls == [1, 1]  # one split: each restoration predicts the other part
    ranking = [c.method for c in selection.ranking]
    assert ranking.index("van_cittert") == len(ranking) - 1  # predicting zeros is worst


@pytest.mark.parametrize(
    ("context", "error", "words"),
    [
        ({"beam_fwhm_um": -50.0, "pixel_um": 10.0}, ValueError, "beam_fwhm_um must be finite"),
        ({"modality": "ptychography"}, ValueError, "unknown modality 'ptychography'; allowed"),
        ({"second": np.ones((20, 20))}, ValueError, "second measurement has shape"),
        ({"budget_ms": 0}, ValueError, "budget_ms must be finite and > 0"),
        ({"budget_ms": "fast"}, TypeError, "budget_ms must be a number"),
        ({"mode": "quick"}, ValueError, "unknown mode 'quick'"),
        ({"scale": 0}, ValueError, "scale must be an integer >= 1"),
        ({"psf_known": "yes"}, TypeError, "psf_known must be true or false"),
        ({"candidates": ["magic"]}, ValueError, "unknown method 'magic'"),
        ({"iterations": -3}, ValueError, "must be >= 1"),
        ({"policy": 3}, TypeError, "policy must be"),
    ],
)
def test_bad_context_is_named(context, error, words):
    image = make_noisy_map("mesh", shape=(32, 32)).measured
    psf = {} if "beam_fwhm_um" in context else {"psf_sigma_px": 1.5}
    with pytest.raises(error, match=words):
        select(image, **psf, **context)
    with pytest.raises(error, match=words):
        asirp.restore(image, "auto", **psf, **context)


def test_auto_without_a_psf_is_refused():
    with pytest.raises(ValueError, match="auto' needs the PSF"):
        select(make_noisy_map("mesh", shape=(32, 32)).measured)


def test_a_first_budgeted_auto_call_measures_the_costs_outside_its_budget(costs):
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5)
    options = {"psf_sigma_px": 1.5, "budget_ms": 5000, "seed": 0, "device": "cpu"}
    first = asirp.restore(sample.measured, "auto", **options)
    assert first.metrics["cost_measurement_s"] > 0
    entries = first.params["selection"]["candidates"]
    assert entries
    assert all(entry["cost_source"] == "measured" for entry in entries), entries
    again = asirp.restore(sample.measured, "auto", **options)
    assert "cost_measurement_s" not in again.metrics  # cached for this size
    unbudgeted = asirp.restore(sample.measured[:40], "auto", psf_sigma_px=1.5, device="cpu")
    assert "cost_measurement_s" not in unbudgeted.metrics

"""zssr inside ``auto``, never a silent bicubic, and ``auto`` at scale 2 saying why (issue 20)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import asirp
from asirp import threads
from asirp.methods.beam_sr import ADAPTED_IN_AUTO
from asirp.selection import prior, selector
from asirp.selection.candidates import Candidate
from asirp.selection.report import CandidateScore, explain_choice
from asirp.sr.consistency import ConsistencyWarning
from asirp.sr.data import heldout_set
from asirp.sr.guard import INVENTED_NOTE
from tests.asirp.sr.conftest import bicubic

FAST = {"iterations": 30, "crop": 32, "eval_every": 10}
"""A short zssr training (the defaults train up to 2000 iterations)."""


@pytest.fixture(scope="module")
def counts():
    """32 x 32 Poisson counts of a periodic pattern, means 30 to 110."""
    rows, cols = np.mgrid[:32, :32]
    mean = 70.0 + 40.0 * np.sin(cols / 2.5) * np.cos(rows / 3.0)
    return np.random.default_rng(0).poisson(mean).astype(np.float32)


def test_zssr_is_scored_inside_auto_and_gives_the_same_result_twice(counts):
    # no clock in an unbudgeted choice: zssr's one split comes from its SelectorGrid; the
    # engine adapts its thread count to the load (last bits), so it is pinned here
    with threads.fixed_threads(1):
        runs = [
            asirp.restore(
                counts, "auto", scale=2, candidates=["zssr"], psf_sigma_px=0.8, seed=0, **FAST
            )
            for _ in range(2)
        ]
    for result in runs:
        entries = {c["method"]: c for c in result.params["selection"]["candidates"]}
        assert entries["zssr"]["status"] in ("chosen", "scored"), entries["zssr"]["note"]
        assert "does not require grad" not in entries["zssr"]["note"]
        assert entries["zssr"]["score"] is not None
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    assert runs[0].params["auto_reason"] == runs[1].params["auto_reason"]


def test_zssr_trains_under_a_callers_no_grad(counts):
    with torch.no_grad():
        result = asirp.restore(counts, "zssr", scale=2, seed=0, split_guard=False, **FAST)
    assert result.params["iterations_run"] == FAST["iterations"]
    assert result.params["zssr_fell_back_to_bicubic"] is False


def test_zssr_says_when_it_fell_back_to_bicubic():
    flat = 100.0 + np.random.default_rng(1).normal(0.0, 1e-3, (32, 32)).astype(np.float32)
    result = asirp.restore(flat, "zssr", scale=2, seed=0, **FAST)
    assert result.params["zssr_fell_back_to_bicubic"] is True
    assert result.params["validation_l1"] == result.params["bicubic_validation_l1"]
    # the kept network is the untrained one: bicubic interpolation, up to float32 rounding
    np.testing.assert_allclose(result.image, bicubic(flat, 2), rtol=0, atol=1e-3)
    (note,) = [n for n in result.cautions() if "fell back to bicubic" in n]
    assert note.startswith("zssr fell back to bicubic interpolation: its training never improved")


def test_zssr_that_learned_something_has_no_fallback_caution(counts):
    result = asirp.restore(counts, "zssr", scale=2, seed=0, split_guard=False, **FAST)
    assert result.params["zssr_fell_back_to_bicubic"] is False
    assert result.params["validation_l1"] < result.params["bicubic_validation_l1"]
    assert not [n for n in result.cautions() if "fell back to bicubic" in n]


def test_auto_at_scale_2_scores_every_super_resolution_method_and_says_why(counts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)
        selection = asirp.select(counts, psf_sigma_px=0.8, scale=2, seed=0)
    by_method: dict[str, list] = {}
    for entry in selection.candidates:
        by_method.setdefault(entry.method, []).append(entry)
    for method in ("fca_sr", "rrdb_sr", "zssr"):
        statuses = {entry.status for entry in by_method[method]}
        assert statuses <= {"chosen", "scored"}, (method, [e.note for e in by_method[method]])
        # final maps: the networks run with their self-ensemble
        assert [entry.params.get("self_ensemble") for entry in by_method[method]] == [True]
    winner = selection.chosen
    assert winner is not None
    assert f"{winner.label} predicted best (score {winner.score:.4g}" in selection.reason
    if winner.method != "identity":
        assert f"{winner.gain_db:.1f} dB below the input's" in selection.reason


def _entries(notes: dict[str, str]) -> dict[Candidate, CandidateScore]:
    entries = {}
    for rank, (method, note) in enumerate(notes.items(), start=1):
        candidate = Candidate.make(method, {"scale": 2})
        entry = CandidateScore(method, {"scale": 2}, candidate.label, "scored", 100.0 + rank)
        entry.rank, entry.gain_db, entry.note = rank, 1.0 / rank, note
        entries[candidate] = entry
    return entries


def test_the_reason_cautions_when_the_winner_was_flagged():
    flagged = f"{INVENTED_NOTE}: its restorations of the two parts agree down to 1 px"
    entries = _entries({"fca_sr": flagged, "rl_sr": "", "rrdb_sr": flagged})
    scored = list(entries)
    fca, rl, rrdb = scored
    entries[fca].status = "chosen"
    split = ("binomial thinning", "the data are counts")
    reason = explain_choice(
        entries, fca, scored, [], *split, (32, 32), None, 0, 1, invented=[fca, rrdb]
    )
    assert "fca_sr(scale=2) predicted best (score 101" in reason
    assert "Caution: the split-data guard found fca_sr(scale=2)'s detail prior-driven" in reason
    assert "Best-scored without that flag: rl_sr(scale=2)." in reason
    quiet = explain_choice(entries, rl, scored, [], *split, (32, 32), None, 0, 1, invented=[fca])
    assert "Caution" not in quiet


def test_a_flagged_candidate_is_chosen_with_a_caution_not_vetoed(counts, monkeypatch):
    plain = asirp.select(counts, scale=2, candidates=["rl_sr"], psf_sigma_px=0.8)
    assert plain.method == "rl_sr"  # it beats bicubic here
    monkeypatch.setattr(selector, "INVENTED_NOTE", "")  # every note "contains" it: all flagged
    selection = asirp.select(counts, scale=2, candidates=["rl_sr"], psf_sigma_px=0.8)
    assert selection.method == "rl_sr"
    assert "detail prior-driven" in selection.reason
    assert "Best-scored without that flag: identity." in selection.reason


def test_auto_flags_a_network_that_invents_detail_on_the_tooth():
    from asirp.tomo.exchange import read_scan
    from asirp.tomo.normalise import flat_dark_correct
    from tests.conftest import TOOTH_H5

    scan = read_scan(TOOTH_H5)
    sinogram = flat_dark_correct(scan.projections, scan.flats, scan.darks).values[:, 0, :]
    crop = np.ascontiguousarray(sinogram[20:84, 200:264])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)
        selection = asirp.select(
            crop, scale=2, candidates=["fca_sr"], modality="tomo_projection", seed=0
        )
    (entry,) = [e for e in selection.candidates if e.method == "fca_sr"]
    assert entry.status in ("chosen", "scored")
    assert INVENTED_NOTE in entry.note
    flagged = "detail prior-driven" in selection.reason
    assert flagged == (entry.status == "chosen")  # said of the winner only


@pytest.mark.parametrize(
    ("prior_gain", "best_gain", "kept"),
    [(2.0, 2.4, True), (2.0, 2.5, True), (2.0, 2.6, False), (0.0, 0.3, False), (None, 1.0, False)],
)
def test_the_super_resolution_prior_needs_a_clear_margin_to_be_displaced(
    prior_gain, best_gain, kept
):
    assert prior.keeps_sr_prior(prior_gain, best_gain) is kept
    assert prior.SR_PRIOR_MARGIN_DB == 0.5


def test_the_reason_says_when_the_prior_was_kept_over_a_better_score():
    entries = _entries({"fca_sr": "", "beam_sr": "", "rl_sr": ""})
    scored = list(entries)
    beam = scored[1]
    entries[beam].status = "chosen"
    split = ("binomial thinning", "the data are counts")
    reason = explain_choice(
        entries, beam, scored, [], *split, (32, 32), None, 0, 1, kept_prior=beam
    )
    assert "beam_sr(scale=2), the super-resolution prior" in reason
    assert "the best-scored fca_sr(scale=2) estimated only 0.50 dB more" in reason
    assert "predicted best" not in reason


def test_auto_keeps_the_beam_conditioned_prior_unless_another_is_clearly_better():
    star = next(image for image in heldout_set(2) if image.name == "star")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)
        selection = asirp.select(
            star.measured[32:96, 32:96],  # the centre: beam_sr adapts to each split part
            psf_sigma_px=star.sigma_px,
            scale=2,
            seed=0,
            candidates=["beam_sr", "fca_sr", "rl_sr"],
        )
    entries = [e for e in selection.candidates if e.score is not None]
    best = min(entries, key=lambda e: e.score)
    (beam,) = [e for e in entries if e.method == "beam_sr"]
    assert beam.params == {"scale": 2, "self_ensemble": True, "adapt_iterations": ADAPTED_IN_AUTO}
    if best.method != "identity" and prior.keeps_sr_prior(beam.gain_db, best.gain_db):
        assert selection.method == "beam_sr"
        if best is not beam:
            assert "the super-resolution prior" in selection.reason
    else:
        assert selection.method == best.method
    assert selection.method != "identity"  # the held-out star gains 4-5 dB over bicubic

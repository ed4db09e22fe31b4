"""The policy file: pinned methods per modality, remembered choices per kind of scan."""

from __future__ import annotations

import json

import pytest

import asirp
from asirp.policy import Policy, default_policy_path
from asirp.selection import select
from tests.conftest import make_noisy_map

FEW = ["tikhonov", "van_cittert"]


def test_a_pinned_method_is_used_without_scoring(tmp_path):
    policy = Policy(tmp_path / "policy.json")
    policy.pin("xrf_map", "richardson_lucy", note="mesh scans", iterations=7, stop="fixed")
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5)
    result = asirp.restore(sample.measured, psf_sigma_px=1.5, modality="xrf_map", policy=policy)
    assert result.method == "richardson_lucy"
    assert result.params["iterations_run"] == 7
    record = result.params["selection"]
    assert record["source"] == "pinned"
    assert record["candidates"] == []
    assert "pinned by the operator for xrf_map" in result.params["auto_reason"]
    assert "mesh scans" in result.params["auto_reason"]
    other = select(
        sample.measured,
        psf_sigma_px=1.5,
        modality="image",
        policy=policy,
        candidates=FEW,
        remember=False,
    )
    assert other.source == "scored"  # the pin is for µ-XRF maps only


def test_the_selector_remembers_its_choice_for_scans_of_the_same_kind(tmp_path):
    path = tmp_path / "policy.json"
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5, seed=1)
    first = select(sample.measured, psf_sigma_px=1.5, candidates=FEW, policy=path)
    assert first.source == "scored"
    saved = json.loads(path.read_text())
    (kind,) = saved["remembered"]
    assert kind.startswith("image|scale=1|psf=1.5px|")
    assert saved["remembered"][kind]["method"] == first.method
    assert saved["costs"]  # measured costs travel with the policy

    repeat = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5, seed=2)
    second = select(repeat.measured, psf_sigma_px=1.5, candidates=FEW, policy=path)
    assert second.source == "remembered"
    assert (second.method, second.params) == (first.method, first.params)
    assert second.candidates == []

    brighter = make_noisy_map("mesh", peak=5000.0, shape=(48, 48), sigma_px=1.5, seed=2)
    third = select(brighter.measured, psf_sigma_px=1.5, candidates=FEW, policy=path)
    assert third.source == "scored"  # another count level is another kind of scan


def test_policy_file_round_trip_and_clear_errors(tmp_path):
    path = tmp_path / "nested" / "policy.json"
    policy = Policy(path)
    policy.pin("tomo_projection", "tikhonov", regulariser="identity")
    loaded = Policy.load(path)
    assert loaded.pinned("tomo_projection").params == {"regulariser": "identity"}
    assert loaded.pinned("xrf_map") is None
    loaded.unpin("tomo_projection")
    assert Policy.load(path).pinned("tomo_projection") is None

    with pytest.raises(ValueError, match="unknown modality 'sem'"):
        policy.pin("sem", "tikhonov")
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        policy.pin("xrf_map", "magic")
    with pytest.raises(ValueError, match="has no parameter 'colour'"):
        policy.pin("xrf_map", "tikhonov", colour="red")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the policy file"):
        Policy.load(path)
    path.write_text(json.dumps({"version": 1, "pinned": {"xrf_map": {"params": {}}}}))
    with pytest.raises(ValueError, match="'method' string"):
        Policy.load(path)


def test_default_policy_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ASIRP_POLICY", str(tmp_path / "mine.json"))
    assert default_policy_path() == tmp_path / "mine.json"
    monkeypatch.delenv("ASIRP_POLICY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_policy_path() == tmp_path / "asirp" / "policy.json"
    assert Policy.load().pinned("xrf_map") is None  # a missing file is an empty policy

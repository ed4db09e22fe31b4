"""The recipe of ``CONTRIBUTING.md``: a method added in one file is seen everywhere.

``toy_method.py`` (next to this file) registers a toy method with its own selector grid, cost
prior and forward model; loading it must be enough for the registry, the ``asirp methods``
command, the measured ``auto`` and its own public function. The built-in methods' public
functions must match their specs (names and defaults).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import asirp
import asirp.cli
import asirp.registry
from asirp.psf import gaussian_psf
from asirp.selection.candidates import Candidate, fitting_candidates
from asirp.selection.costs import prior_passes
from tests.conftest import make_noisy_map

TOY = Path(__file__).with_name("toy_method.py")
BUILT_IN = sorted(
    spec.name for spec in asirp.method_specs() if spec.run.__module__.startswith("asirp.")
)
"""The methods ASIRP ships (a test's temporary method runs code from ``tests``)."""


@pytest.fixture
def toy() -> Iterator[ModuleType]:
    """The toy method's module, loaded from its file (registering it), unregistered after."""
    spec = importlib.util.spec_from_file_location("asirp_recipe_toy_method", TOY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        if "toy_unsharp" in asirp.available_methods():
            asirp.unregister_method("toy_unsharp")


def test_a_method_in_one_file_is_registered_and_listed(toy, capsys):
    assert "toy_unsharp" in asirp.available_methods()
    assert "toy_unsharp" in asirp.available_methods("non-blind")
    assert asirp.cli.main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert "toy_unsharp  [non-blind, needs PSF, scale 1]" in listing
    assert "amount=0.5" in listing


def test_its_grid_and_cost_prior_come_from_its_spec(toy):
    thorough, _ = fitting_candidates(
        scale=1, has_psf=True, psf_known=True, mode="thorough", fixed={}
    )
    cheap, _ = fitting_candidates(scale=1, has_psf=True, psf_known=True, mode="cheap", fixed={})
    assert [c.label for c in thorough if c.method == "toy_unsharp"] == [
        "toy_unsharp",
        "toy_unsharp(amount=1.0)",
    ]
    assert [c.label for c in cheap if c.method == "toy_unsharp"] == ["toy_unsharp"]
    assert prior_passes(Candidate.make("toy_unsharp")) == 2.0


def test_auto_scores_it_with_its_own_forward_model(toy, monkeypatch):
    calls = []

    def spy(estimate, psf, scale):
        calls.append(scale)
        return toy.forward(estimate, psf, scale)

    spec = dataclasses.replace(toy.SPEC, forward_model=spy)
    monkeypatch.setitem(asirp.registry._REGISTRY, "toy_unsharp", spec)
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5)
    selection = asirp.select(
        sample.measured, psf_sigma_px=1.5, candidates=["toy_unsharp"], mode="thorough"
    )
    scored = {c.label: c.status for c in selection.candidates if c.method == "toy_unsharp"}
    assert set(scored) == {"toy_unsharp", "toy_unsharp(amount=1.0)"}
    assert calls
    assert set(calls) == {1}
    assert selection.method in ("toy_unsharp", "identity")


def test_its_public_function_is_restore(toy):
    counts = np.random.default_rng(0).poisson(40.0, size=(32, 32))
    psf = gaussian_psf(1.2)
    image = toy.toy_unsharp(counts, psf, amount=1.0, device="cpu")
    expected = asirp.restore(counts, "toy_unsharp", psf=psf, amount=1.0, device="cpu").image
    assert image.dtype == np.float32
    assert image.shape == (32, 32)
    np.testing.assert_array_equal(image, expected)


def test_unregistering_removes_it(toy):
    asirp.unregister_method("toy_unsharp")
    assert "toy_unsharp" not in asirp.available_methods()
    with pytest.raises(ValueError, match="unknown method 'toy_unsharp'"):
        asirp.unregister_method("toy_unsharp")


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_method_has_a_public_function_matching_its_spec(name):
    spec = asirp.get_method(name)
    function = getattr(asirp, name)
    assert name in asirp.__all__
    signature = inspect.signature(function)
    positional = [
        p.name for p in signature.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    assert positional == (["image", "psf"] if spec.needs_psf else ["image"])
    keywords = {
        p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY
    }
    assert keywords.pop("device") == "auto"
    keywords.pop("seed", None)
    assert keywords == {parameter.name: parameter.default for parameter in spec.parameters}
    assert function.__doc__
    assert "Parameters\n    ----------" in function.__doc__


def test_the_built_in_methods_are_found():
    assert {"richardson_lucy", "blind_richardson_lucy", "fca_sr", "zssr"} <= set(BUILT_IN)


@pytest.mark.parametrize("name", ["richardson_lucy", "wiener", "van_cittert"])
def test_a_public_function_gives_what_restore_gives(name):
    counts = np.random.default_rng(1).poisson(60.0, size=(40, 40)).astype(np.float32)
    psf = gaussian_psf(1.5)
    image = getattr(asirp, name)(counts, psf, device="cpu")
    expected = asirp.restore(counts, name, psf=psf, device="cpu").image
    assert image.dtype == np.float32
    assert image.shape == counts.shape
    np.testing.assert_array_equal(image, expected)

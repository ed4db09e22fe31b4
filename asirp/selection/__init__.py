"""Measured automatic method selection: the ``method="auto"`` of :func:`asirp.restore`.

This docstring is the one full account of ``auto``; the README summarises it with the measured
figures, and :mod:`asirp.auto` and :mod:`asirp.selection.selector` point here.

Why measure
-----------
No single method wins on every kind of data, and at a beamline nobody has the ground truth. The
selector therefore *measures*: it splits the data into two parts with independent noise,
restores each with every candidate that fits, predicts the other part through the forward
model, and keeps the candidate whose predictions are best. The same score picks iteration
counts and regularisers, and the input itself is a candidate, so the choice is never worse than
doing nothing, by the score's own judgement.

How to call it
--------------
``asirp.select(image, **context)`` chooses and reports (:class:`Selection`);
``asirp.restore(image, "auto", **context)`` chooses through :func:`select_stack` and runs the
choice (:mod:`asirp.auto`). The context keywords (:data:`asirp.auto.CONTEXT_KEYS`) are:

- ``modality``: ``"xrf_map"`` (counts), ``"tomo_projection"`` (flat-fielded, not counts) or
  ``"image"`` (decided from the data);
- the PSF, as for :func:`asirp.restore` (beam FWHM and scan step in µm, sigma in px, an array
  or a file), and ``psf_known`` (default: true when a PSF is described; ``False`` makes it a
  guess and adds the blind methods);
- ``second``: an independent second measurement (another detector element), used instead of a
  random split;
- ``budget_ms``: a latency budget for selection plus restoration;
- ``mode``: ``"cheap"`` or ``"thorough"``. **The default is ``"cheap"`` when ``budget_ms`` is
  given and ``"thorough"`` otherwise** (:func:`~asirp.selection.context.make_context`). The
  live callback asks for ``"cheap"`` on partial maps and ``"thorough"`` on the final map;
- ``scale`` (1, or a super-resolution factor), ``candidates`` (restrict to these methods),
  ``policy`` and ``remember`` (the policy file, below), ``seed``;
- any other keyword is a method parameter fixed for every candidate (candidates that do not
  take it are left out: ``iterations=50`` keeps only iterative methods).

The steps
---------
1. **Policy.** A method pinned for the modality, or a choice remembered for this kind of scan
   (:mod:`asirp.selection.policy`, a small JSON file), is used at once, without scoring.
2. **Candidates.** Every registered method that fits (its output scale, a PSF when it needs
   one, blind methods only when ``psf_known=False``, the caller's fixed parameters), each with
   the small grid of settings its spec brings (``MethodSpec.selector_grid``, one per mode), and
   the input itself, ``identity`` (:mod:`asirp.selection.candidates`).
3. **Split.** Binomial thinning for Poisson counts, Gaussian data fission for data that are not
   counts, or the caller's second measurement (:mod:`asirp.selection.splitting`), on a region of
   the map and on up to three maps of a stack.
4. **Score.** Each candidate restores both parts; each restoration predicts the other part
   through the forward model (blur with the returned PSF; blur and area sampling for
   super-resolution; or the method's own, ``MethodSpec.forward_model``), and a band-weighted
   prediction error plus the out-of-band variance estimates the object-domain error; the
   Poisson deviance and the Fourier ring correlation are recorded too (assumptions in
   :mod:`asirp.selection.score`).
5. **Choose.** The lowest score wins among the candidates whose full-size restoration still
   fits the budget. For super-resolution (``scale > 1``) the score cannot see detail finer than
   the data, so the SR prior (``beam_sr``, :data:`asirp.selection.prior.SR_PRIOR_METHOD`) is
   kept unless another candidate's estimated gain is 0.5 dB higher, or it does not beat the
   input (:func:`asirp.selection.prior.keeps_sr_prior`).

Maps too small to score (less than :data:`~asirp.selection.selector.MIN_INTERIOR_PX` pixels per
side once a PSF radius is left out at each edge) get the rule prior
(:func:`asirp.selection.prior.choose_method`, what ``auto`` did before it measured), which also
orders the candidates in the cheap mode. The reason then says which check failed and what ran
instead, and lists the context the choice does not honour (a ``scale`` or ``psf_known=False`` it
cannot follow, candidates it is not among, an unused second measurement;
:func:`~asirp.selection.shortcuts.ignored_context`, also for pinned and remembered choices);
``asirp.restore`` records them (``params["auto_unscored"]``, ``params["ignored_parameters"]``)
and its result's ``cautions()`` says so.

The modes
---------
``"thorough"`` (final maps): every grid setting, two independent splits, the whole map up to
256 x 256. ``"cheap"`` (live updates): the short cheap grid (slow methods left out), one split,
the most structured 96 x 96 window. Both are seeded: the same data, context and seed give the
same choice, except that with a budget the set of candidates scored depends on measured times
(the selection records which were).

The budget and the costs
------------------------
Candidates whose estimated cost does not fit ``budget_ms`` are skipped
(:mod:`asirp.selection.costs`). Every run is timed and cached per method, setting, map size and
device; a candidate never timed is priced by its spec's cost prior (``MethodSpec.cost_prior``,
in FFT passes) times a measured FFT. A budgeted call at a map size not cached yet times the
candidates first, outside the budget (``metrics["cost_measurement_s"]``);
:func:`measure_costs` does it ahead of a live scan.

What the result says
--------------------
:class:`Selection` (``restore``: ``params["selection"]``) lists every candidate with its score,
cost and status, the split and the seed; ``params["auto_reason"]`` says why in plain words;
``metrics["selection_s"]``, ``metrics["selection_score"]`` and ``metrics["selection_gain_db"]``
record the time, the winning score and its gain over the input.

Modules
-------
:mod:`~asirp.selection.selector`
    :func:`select`: the steps and the budgeted loop.
:mod:`~asirp.selection.context`
    What the caller says about the data; the modes; the kind of scan.
:mod:`~asirp.selection.report`
    :class:`Selection`, every candidate's entry, the reasons in plain words.
:mod:`~asirp.selection.trials`
    A candidate restores the parts of a split and predicts the other part.
:mod:`~asirp.selection.shortcuts`
    Choices without scoring: pinned or remembered, or the rule prior.
:mod:`~asirp.selection.measure`
    Timing every candidate once (a warm-up for live use).
:mod:`~asirp.selection.prior`
    The rule prior (what ``auto`` did before it measured).
:mod:`~asirp.selection.policy`
    The policy file: pinned and remembered choices.
:mod:`~asirp.selection.splitting`
    Binomial thinning, data fission, two measurements.
:mod:`~asirp.selection.score`
    The score and its assumptions.
:mod:`~asirp.selection.candidates`
    Which methods and settings are tried.
:mod:`~asirp.selection.costs`
    Measured and estimated run times.
"""

from asirp.selection.candidates import IDENTITY, Candidate
from asirp.selection.context import SelectionContext, make_context, scan_kind
from asirp.selection.costs import COSTS, CostModel
from asirp.selection.measure import measure_costs
from asirp.selection.report import CandidateScore, Selection
from asirp.selection.selector import select, select_stack

__all__ = [
    "COSTS",
    "IDENTITY",
    "Candidate",
    "CandidateScore",
    "CostModel",
    "Selection",
    "SelectionContext",
    "make_context",
    "measure_costs",
    "scan_kind",
    "select",
    "select_stack",
]

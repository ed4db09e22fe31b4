"""The engine's entry point: :func:`restore` and its :class:`Restoration` result."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from asirp._version import __version__
from asirp.auto import resolve_auto
from asirp.backend import resolve_device, to_numpy, to_tensor
from asirp.iteration import check_counts_gain, estimate_counts_gain, is_integer_counts
from asirp.metrics import summary
from asirp.provenance import record_run
from asirp.psf import FWHM_PER_SIGMA, psf_sigma_px, resolve_psf
from asirp.registry import MethodOutput, MethodSpec, Problem, get_method
from asirp.separable import use_torch_threads
from asirp.threads import blas_threads, compute_threads
from asirp.validation import as_image_stack, check_cancel, check_progress, check_seed

CHUNK_PIXELS = 1 << 23
"""A stack is restored on a GPU in chunks of at most this many pixels (about 8 M) to bound
memory."""

UNCHANGED_FRACTION = 0.01
"""A restoration "changed nothing" when its RMS difference from the input is below this fraction
of the input's contrast (the standard deviation of its pixels): no one could tell the two maps
apart (:meth:`Restoration.cautions`)."""

EARLY_STOP_ITERATIONS = 1
"""A discrepancy rule whose counts gain was estimated from the map (not integer counts, none
given) and that stops after at most this many iterations gets a caution: the estimate may have
stopped it, not the data (:meth:`Restoration.cautions`)."""

SUBPIXEL_SIGMA_PX = 0.3
"""A known PSF with sigma below this on both axes (FWHM under about 0.7 px) is narrower than a
pixel: its blur moves less than 2 % of a pixel's counts to the neighbours, so there is nothing
to deblur (:meth:`Restoration.cautions`)."""

CPU_CHUNK_PIXELS = 1 << 19
"""On the CPU, chunks of at most this many pixels (512 K, two 512 x 512 maps): an iterative
method's dozen float32 arrays then stay in the last-level cache (measured in
``bench/bench_deconvolution.py``: larger chunks are slower per map, not faster)."""


@dataclass
class Restoration:
    """The result of :func:`restore`.

    Attributes
    ----------
    image : numpy.ndarray
        Restored map ``(H * s, W * s)`` or stack ``(B, H * s, W * s)``, float32, same units
        (counts) as the input; ``s`` is the method's scale (1 for deconvolution).
    method : str
        The method that actually ran (never ``"auto"``).
    params : dict
        JSON-serialisable parameters, including the defaults that applied and what the run
        found (``iterations_run``, chosen weights, ``device``, ``threads`` (CPU threads of the
        computation, see :mod:`asirp.threads`), ``auto_reason`` for "auto").
    psf : numpy.ndarray or None
        The PSF used ``(h, w)``, or estimated by a blind method (``(B, h, w)`` for a stack).
    metrics : dict of str to float
        Figures that apply (see :func:`asirp.metrics.summary`); averaged over a stack.
    elapsed_s : float
        Wall time of the restoration, s.
    psf_description : dict
        Where the PSF came from (beam FWHM and step in µm, sigma in px, file, array).
    version : str
        ASIRP version that produced the result.
    run_record : dict
        What a replay needs (:func:`asirp.provenance.record_run`): the input's sha256, shape
        and dtype, the method and keywords asked for, the resolved parameters, library
        versions, device, thread counts, seed, and an array or file PSF as given. Empty for
        a result not made by :func:`restore`.
    """

    image: np.ndarray
    method: str
    params: dict[str, Any]
    psf: np.ndarray | None
    metrics: dict[str, float]
    elapsed_s: float
    psf_description: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    run_record: dict[str, Any] = field(default_factory=dict)

    def cautions(self) -> list[str]:
        """What the engine's own checks say not to trust in this result, in plain sentences.

        Read from the result's figures, so it is the same wherever the result goes (the Tango
        device's status, derived runs), and needs no capture of Python warnings (process-wide,
        not thread-safe): a restoration that changed nothing (``metrics["changed"]``, see
        :data:`UNCHANGED_FRACTION`), a discrepancy rule on an estimated counts gain that stopped
        after :data:`EARLY_STOP_ITERATIONS` iteration(s) or fewer (``params["stopped_by"]``,
        ``params["counts_gain_source"]``, ``params["iterations_run"]``), a super-resolved map
        that does not reproduce its input within the noise (``metrics["consistent"]``), a beam
        width that blind deconvolution could not determine (``params["sigma_search_report"]``),
        a known PSF narrower than a pixel (``params["psf_narrower_than_pixel"]``, see
        :data:`SUBPIXEL_SIGMA_PX`), an ``auto`` choice that was not scored
        (``params["auto_unscored"]``), parameters that the method which ran did not honour
        (``params["ignored_parameters"]``), a super-resolved map whose structure is not above
        its noise (``metrics["structure_above_noise"]``), and what the method itself found
        (``params["method_cautions"]``: one sentence or a list, such as super-resolution's
        split-data guard, :mod:`asirp.sr.guard`).

        Returns
        -------
        list of str
            One sentence per caution; empty when there is none.
        """
        notes = []
        iteration = self._iteration_cautions()
        narrow = self._narrow_psf_caution()
        if narrow is not None:  # one sentence: the narrow beam is why nothing changed
            notes.append("; ".join([*iteration, narrow]))
        else:
            notes.extend(iteration)
        notes.extend(self._auto_cautions())
        # the split-data guard's noise verdict says the same, from the data's halves: one note
        guard_says_noise = self.metrics.get("noise_dominated") is True
        if self.metrics.get("structure_above_noise") is False and not guard_says_noise:
            ratio = self.metrics.get("structure_to_noise")
            figure = (
                f" (structure variance {ratio:.2g} times the noise variance)"
                if isinstance(ratio, float)
                else ""
            )
            notes.append(
                f"super-resolution of a map whose structure is not above the noise{figure}: "
                "the finer map shows noise, not detail"
            )
        if self.metrics.get("consistent") is False:
            residual = self.metrics.get("consistency_residual")
            figure = f" ({residual:.2f} noise sigmas)" if isinstance(residual, float) else ""
            notes.append(
                "the super-resolved map does not reproduce the input within the noise"
                f"{figure}: the model may have invented or lost detail"
            )
        reports = self.params.get("sigma_search_report")
        if isinstance(reports, dict):
            reports = [reports]
        if isinstance(reports, list) and any(
            isinstance(report, dict) and report.get("identified") is False for report in reports
        ):
            notes.append(
                "the data did not determine the beam width (blind search): the estimated PSF "
                "may be far off; give a measured beam size"
            )
        own = self.params.get("method_cautions")  # the method's own sentences, once each
        for note in [own] if isinstance(own, str) else own if isinstance(own, list) else []:
            if isinstance(note, str) and note not in notes:
                notes.append(note)
        return notes

    def _narrow_psf_caution(self) -> str | None:
        """Nothing to deblur: the known PSF is narrower than a pixel (facts made in restore)."""
        facts = self.params.get("psf_narrower_than_pixel")
        if not isinstance(facts, dict):
            return None

        def pair(values: Any, unit: str) -> str:
            numbers = [f"{float(v):.3g}" for v in values]
            return f"{numbers[0] if len(set(numbers)) == 1 else ' x '.join(numbers)} {unit}"

        if "beam_fwhm_um" in facts and "pixel_um" in facts:
            note = (
                f"nothing to restore: the beam (FWHM {pair(facts['beam_fwhm_um'], 'µm')}) is "
                f"narrower than the scan step ({pair(facts['pixel_um'], 'µm')})"
            )
        else:
            note = (
                f"nothing to restore: the PSF (FWHM {pair(facts.get('fwhm_px', [0.0]), 'px')}) "
                "is narrower than a pixel"
            )
        if self.metrics.get("changed") is True:
            note += "; what the method changed is not deblurring"
        return note

    def _auto_cautions(self) -> list[str]:
        """An ``auto`` choice made without scoring, context it did not honour, a runner-up run."""
        notes = []
        unscored = self.params.get("auto_unscored")
        if isinstance(unscored, str):
            notes.append(
                f"auto did not score its choice ({unscored}): it ran {self.method}, the rule "
                "prior's choice, instead"
            )
        ignored = self.params.get("ignored_parameters")
        if isinstance(ignored, dict) and ignored:
            parts = [
                f"{name}={entry.get('given')!r} ({entry.get('why')})"
                if isinstance(entry, dict)
                else f"{name} ({entry})"
                for name, entry in ignored.items()
            ]
            notes.append(f"auto ignored {', '.join(parts)}")
        fallback = self.params.get("auto_fallback")
        if isinstance(fallback, str):  # what ran is not what the score chose
            notes.append(f"auto: {fallback}")
        return notes

    def _iteration_cautions(self) -> list[str]:
        """A restoration that changed nothing, or a discrepancy stop at once on a guessed gain."""
        runs = self.params.get("iterations_run")
        counts = [runs] if isinstance(runs, int) else runs if isinstance(runs, list) else []
        counts = [count for count in counts if isinstance(count, int)]
        rule = self.params.get("stopped_by")
        after = ""
        if counts:
            low, high = min(counts), max(counts)
            number = f"{low}" if low == high else f"{low} to {high}"
            after = f" after {number} iteration{'' if high == 1 else 's'}"
        gain = self.params.get("counts_gain")
        guessed = rule == "discrepancy" and self.params.get("counts_gain_source") == "estimated"
        gain_note = (
            f"; the discrepancy rule's counts gain ({gain:.3g}) was estimated from the map's "
            "noise, which structure finer than the beam inflates: give counts_gain when the map "
            "is scaled counts"
            if guessed and isinstance(gain, float)
            else ""
        )
        if self.metrics.get("changed") is False:
            change = self.metrics.get("relative_change")
            if (isinstance(runs, list) and len(runs) > 1) or not isinstance(change, float):
                figure = (
                    f" on at least one map (RMS difference under {UNCHANGED_FRACTION:.0%} of its "
                    "contrast)"
                )
            else:
                figure = f" (RMS difference {100 * change:.2g}% of the input's contrast)"
            if self.method == "identity":  # auto's own choice: no candidate beat the input
                return [
                    "restoration changed nothing: auto kept the input, which no candidate "
                    "restoration predicted better (see auto_reason)"
                ]
            how = f"{after} (stop rule: {rule})" if rule and after else after
            return [f"restoration changed nothing{figure}{how}: the result is the input{gain_note}"]
        if gain_note and counts and min(counts) <= EARLY_STOP_ITERATIONS:
            # With a known gain (integer counts, or given) such a stop is the rule's verdict: the
            # data hold nothing sharper than the noise allows. With a guessed one it may be the
            # guess's doing (issue 14: one iteration on coarse maps normalised by I0).
            return [
                f"the discrepancy rule stopped the restoration{after}, so the map is barely "
                f"restored{gain_note}"
            ]
        return []

    def provenance(self) -> dict[str, Any]:
        """Everything needed to reproduce the result, as a JSON-serialisable dict.

        ``software``, ``version``, ``method``, ``params`` (with what the run found),
        ``psf`` (``psf_description``), ``metrics``, ``elapsed_s``, and the replay record
        (:attr:`run_record`: ``input_sha256``, ``input_shape``, ``input_dtype``,
        ``method_requested``, ``params_requested``, ``params_resolved``,
        ``counts_gain_given``, ``versions``, ``device``, ``device_name``, ``threads``,
        ``blas_threads``, ``seed``, ``replay_seed``, ``psf_given``); ``asirp replay``
        re-runs it (:mod:`asirp.replay`).
        """
        return {
            "software": "asirp",
            "version": self.version,
            "method": self.method,
            "params": self.params,
            "psf": self.psf_description,
            "metrics": self.metrics,
            "elapsed_s": self.elapsed_s,
            **self.run_record,
        }


def _merge_info(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Join per-chunk method facts: lists are concatenated, other values taken from the first."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged.setdefault(key, value)
    return merged


WARNING_FLAGS = frozenset({"invented_detail", "noise_dominated"})
"""Per-map flags that warn: a stack carries one when any of its maps does."""


def _mean_metrics(per_image: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(figures) for figures in per_image))

    def flag(key: str) -> bool:
        values = [bool(f[key]) for f in per_image]
        # a warning holds for the stack if it holds for one map; a good sign (such as
        # super-resolution's "consistent") only if it holds for every map
        return any(values) if key in WARNING_FLAGS else all(values)

    return {
        key: flag(key)
        if isinstance(per_image[0][key], bool)
        else float(np.mean([f[key] for f in per_image]))
        for key in sorted(keys)
    }


FELL_BACK_FACTS = ("zssr_fell_back_to_bicubic",)
"""Facts by which a method says its result on a map is plain interpolation (nothing learned)."""


def _fell_back(outputs: list[MethodOutput]) -> bool:
    """Whether the method's result is plain interpolation on every map."""
    flags = [
        flag
        for output in outputs
        for key in FELL_BACK_FACTS
        for flag in (output.info.get(key) or [])
    ]
    return bool(flags) and all(flags)


def restore(
    image: Any,
    method: str = "auto",
    *,
    psf: Any = None,
    beam_fwhm_um: float | Sequence[float] | None = None,
    pixel_um: float | Sequence[float] | None = None,
    psf_sigma_px: float | Sequence[float] | None = None,
    device: str | torch.device = "auto",
    counts_gain: float | None = None,
    reference: Any = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    **params: Any,
) -> Restoration:
    """Restore a blurred map or a stack of them.

    Parameters
    ----------
    image : array_like
        Measured map ``(H, W)`` or stack ``(B, H, W)`` (counts; any real dtype, computed in
        float32). It is never modified.
    method : str
        A name from :func:`available_methods` or ``"auto"`` (see :mod:`asirp.auto`).
    psf : array_like or path, optional
        The PSF ``(h, w)`` (odd sizes, non-negative; normalised to sum 1), or a file holding it.
    beam_fwhm_um, pixel_um : float or (float, float), optional
        Beam FWHM and scan step in µm (per axis as (rows, columns) when they differ): a
        Gaussian PSF. Give these, or ``psf_sigma_px``, or ``psf``.
    psf_sigma_px : float or (float, float), optional
        Gaussian PSF standard deviation in pixels.
    device : str
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    counts_gain : float, optional
        Detector counts per Poisson event in the data (> 0): 1 for raw counts, the flux factor
        ``mean(i0) / i0`` for counts normalised to the mean flux, ``1 / i0`` for counts divided
        by a monitor. It sets the noise level of the discrepancy rule (``stop="discrepancy"``;
        see :mod:`asirp.iteration`). Default: 1 for non-negative integer data, else estimated
        from the noise (:func:`asirp.iteration.estimate_counts_gain`), which is rough on small
        maps with structure finer than the beam: give it when it is known.
    reference : array_like, optional
        Ground truth of the same shape as the result, for PSNR and SSIM.
    seed : int
        Seed for methods that use randomness.
    progress : callable, optional
        Called with the fraction done (0 to 1) as the work advances.
    cancel : threading.Event, optional
        Set it from another thread to stop; :class:`asirp.RestorationCancelled` is raised.
    **params
        The method's parameters (``asirp methods`` lists them with defaults and ranges). With
        ``method="auto"``, also the selection context (``modality``, ``budget_ms``, ``mode``,
        ``second``, ``psf_known``, ``scale``, ``candidates``, ``policy``; see :mod:`asirp.auto`).

    Returns
    -------
    Restoration
        The restored image with its method, parameters, PSF, metrics and timing.

    Raises
    ------
    ValueError
        Bad shapes, NaN/Inf, an unknown method or parameter, a value out of range, a missing PSF,
        a ``counts_gain`` that is not finite and > 0.
    TypeError
        Non-numeric or complex data, parameters of the wrong type, a ``cancel`` without
        ``is_set()``, a ``progress`` that cannot be called.
    """
    started = time.perf_counter()
    stack, was_2d = as_image_stack(image)
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {method!r}")
    check_seed(seed)
    check_cancel(cancel)
    check_progress(progress)
    given_gain = check_counts_gain(counts_gain)
    resolved_psf = resolve_psf(
        stack.shape,
        psf=psf,
        beam_fwhm_um=beam_fwhm_um,
        pixel_um=pixel_um,
        psf_sigma_px=psf_sigma_px,
    )
    requested_method, requested_params = method, dict(params)  # for the replay record
    auto = None
    if method == "auto":  # the measured selector (asirp.selection); see asirp.auto
        kwargs = {"seed": int(seed), "device": device, "cancel": cancel, "started": started}
        auto = resolve_auto(stack, resolved_psf, params, counts_gain=given_gain, **kwargs)
        method, params = auto.method, auto.params
    spec = auto.spec if auto is not None and auto.spec is not None else get_method(method)
    resolved = spec.resolve_params(params)
    if spec.needs_psf and resolved_psf is None:
        raise ValueError(
            f"method {method!r} needs a PSF: give beam_fwhm_um and pixel_um (µm), "
            "psf_sigma_px, or psf (an array or a file)"
        )
    truth = None
    if reference is not None:
        truth, _ = as_image_stack(reference, "reference")
        scale = int(resolved.get("scale", spec.scale))
        expected = (stack.shape[0], stack.shape[1] * scale, stack.shape[2] * scale)
        if truth.shape != expected:
            raise ValueError(
                f"reference has shape {np.shape(reference)}, but the result will have shape "
                f"{expected[1:] if was_2d else expected}"
            )
    compute_device = resolve_device(device)

    def gain_for(resolved: dict[str, Any]) -> tuple[float, str]:
        """Values per detected count for the method's parameters, and where it came from."""
        if given_gain is not None:
            return given_gain, "given"
        if resolved.get("stop") == "discrepancy":
            integer = is_integer_counts(stack)
            gain = 1.0 if integer else estimate_counts_gain(stack)
            return gain, "integer counts" if integer else "estimated"
        return 1.0, "given"

    counts_gain, gain_source = gain_for(resolved)

    psf_tensor = to_tensor(resolved_psf.array, compute_device) if resolved_psf is not None else None
    batch = stack.shape[0]
    chunk = batch
    if spec.batchable:
        limit = CPU_CHUNK_PIXELS if compute_device.type == "cpu" else CHUNK_PIXELS
        chunk = max(1, min(batch, limit // (stack.shape[1] * stack.shape[2])))
    # the budget's threads, less the cores other work holds now (asirp.threads)
    threads = compute_threads() if compute_device.type == "cpu" else contextlib.nullcontext()

    def run_chunks(method_spec: MethodSpec, values: dict[str, Any]) -> list[MethodOutput]:
        outputs: list[MethodOutput] = []
        for start in range(0, batch, chunk):
            part = stack[start : start + chunk]

            def report(fraction: float, done: int = start, size: int = len(part)) -> None:
                if progress is not None:
                    progress(min(1.0, (done + fraction * size) / batch))

            problem = Problem(
                data=to_tensor(part, compute_device),
                psf=psf_tensor,
                device=compute_device,
                counts_gain=counts_gain,
                seed=int(seed),
                progress=report,
                cancel=cancel,
            )
            outputs.append(method_spec.run(problem, values))
        return outputs

    with threads as thread_count:
        run_started = time.perf_counter()
        outputs = run_chunks(spec, resolved)
        if auto is not None and auto.runner_up is not None and _fell_back(outputs):
            # the choice scored best on the split parts but learned nothing on the full data:
            # its result is an interpolation, so the runner-up runs instead (and says so)
            failed = method
            method, params = auto.runner_up
            spec = get_method(method)
            resolved = spec.resolve_params(params)
            counts_gain, gain_source = gain_for(resolved)
            outputs = run_chunks(spec, resolved)
            auto.record["auto_fallback"] = (
                f"{failed}, chosen by the score, fell back to interpolation on the full data "
                f"(its training improved on nothing); the runner-up {method} ran instead"
            )
        run_ms = 1e3 * (time.perf_counter() - run_started)

        restored = np.concatenate([to_numpy(output.image) for output in outputs])
        used_psf = _collect_psf(outputs, batch)
        info = _merge_info([output.info for output in outputs])
        if was_2d:
            info = {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in info.items()}

        per_image = [
            summary(
                stack[index],
                restored[index],
                used_psf[index] if used_psf is not None and used_psf.ndim == 3 else used_psf,
                reference=truth[index] if truth is not None else None,
                background=float(resolved.get("background", 0.0)),
            )
            for index in range(batch)
        ]
        if restored.shape == stack.shape:  # did the restoration change anything? (scale 1)
            for index, figures in enumerate(per_image):
                change = _relative_change(stack[index], restored[index], figures)
                figures["relative_change"] = change
                figures["changed"] = change >= UNCHANGED_FRACTION
    for key in outputs[0].metrics:  # figures the method computed itself, one per map
        values = [value for output in outputs for value in output.metrics[key]]
        for figures, value in zip(per_image, values, strict=True):
            figures[key] = value
    record = {**resolved, **info, "device": str(compute_device), "seed": int(seed)}
    if thread_count is not None:  # CPU threads of the computation (asirp.threads)
        record["threads"] = int(thread_count)
    if "counts_gain" in info:  # the discrepancy rule ran: say where its noise level came from
        record["counts_gain_source"] = gain_source
    narrow = _narrow_psf_facts(resolved_psf, spec.family, spec.scale)
    if narrow is not None:  # a known beam narrower than a pixel: nothing to deblur (cautions)
        record["psf_narrower_than_pixel"] = narrow
    if auto is not None:
        record.update(auto.record)
    if used_psf is not None and used_psf.ndim == 3 and was_2d:
        used_psf = used_psf[0]
    if auto is not None and "auto_fallback" not in auto.record:
        # run time and the work around it, for the selector's cost cache (not when two
        # methods ran: the time is neither's)
        auto.observe(run_ms, 1e3 * (time.perf_counter() - run_started) - run_ms)
    return Restoration(
        image=restored[0] if was_2d else restored,
        method=method,
        params=record,
        psf=used_psf,
        metrics={**_mean_metrics(per_image), **(auto.metrics if auto is not None else {})},
        elapsed_s=time.perf_counter() - started,
        psf_description=resolved_psf.description if resolved_psf is not None else {},
        run_record=record_run(
            image,
            method_requested=requested_method,
            params_requested=requested_params,
            counts_gain_given=given_gain,
            method=method,
            params_resolved=resolved,
            seed=int(seed),
            device=str(compute_device),
            threads=None if thread_count is None else int(thread_count),
            blas_threads=blas_threads(),
            psf_given=_psf_as_given(psf, resolved_psf),
        ),
    )


def _psf_as_given(psf: Any, resolved_psf: Any) -> np.ndarray | None:
    """An array or file PSF as given (float64, before normalisation), for the replay record.

    A replay passes these values again, so that the PSF is normalised exactly as the first
    time (see :mod:`asirp.provenance`); a file is read again (a PSF is small). ``None`` for a
    beam or Gaussian, which ``psf_description`` describes exactly.
    """
    if resolved_psf is None or resolved_psf.description.get("source") not in ("array", "file"):
        return None
    if resolved_psf.description["source"] == "file":
        from asirp.io import read_array  # lazy: h5py, as in asirp.psf

        psf = read_array(psf)
    return np.asarray(psf).astype(np.float64)


def _narrow_psf_facts(resolved_psf: Any, family: str, scale: int) -> dict[str, Any] | None:
    """The widths of a known PSF narrower than a pixel on both axes, or ``None``.

    Only a deconvolution (scale 1) with the PSF taken as known is concerned: a blind method's
    PSF is a guess it re-estimates. The widths are the description's (``sigma_px``, and the
    beam FWHM and scan step in µm), else the kernel's second moments. Methods still run: with
    a background or a regulariser they change the map (denoise, subtract), and the caution
    (:meth:`Restoration.cautions`) says that this is not deblurring.
    """
    if resolved_psf is None or family == "blind" or scale != 1:
        return None
    description = resolved_psf.description
    sigma = description.get("sigma_px")
    if sigma is None:
        sigma = list(psf_sigma_px(resolved_psf.array))
    sigma = [float(value) for value in sigma]
    if max(sigma) >= SUBPIXEL_SIGMA_PX:
        return None
    facts: dict[str, Any] = {
        "sigma_px": [round(value, 4) for value in sigma],
        "fwhm_px": [round(FWHM_PER_SIGMA * value, 4) for value in sigma],
        "limit_sigma_px": SUBPIXEL_SIGMA_PX,
    }
    if "beam_fwhm_um" in description and "pixel_um" in description:
        facts["beam_fwhm_um"] = description["beam_fwhm_um"]
        facts["pixel_um"] = description["pixel_um"]
    return facts


def _relative_change(data: np.ndarray, restored: np.ndarray, figures: dict[str, Any]) -> float:
    """RMS of ``restored - data`` over the input's contrast (dimensionless), one map ``(H, W)``.

    The contrast is ``figures["contrast_std_input"]`` (from :func:`asirp.metrics.summary`),
    floored at 0.1 % of the mean level, so that a flat input that comes back flat reads 0 and not
    a ratio of rounding errors. One pass of a compiled kernel over both maps.
    """
    from asirp import _kernels  # lazy: numba (loaded by the metrics already)

    use_torch_threads()
    square, level = _kernels.change_sums(
        np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(restored, np.float32)
    )
    count = data.size
    rms = float(np.sqrt(square / count))
    scale = max(float(figures.get("contrast_std_input", 0.0)), 1e-3 * level / count, 1e-30)
    return rms / scale


def _collect_psf(outputs: list[MethodOutput], batch: int) -> np.ndarray | None:
    """The PSF of the result: the shared one, or the stacked per-image estimates."""
    psfs = [output.psf for output in outputs]
    if psfs[0] is None:
        return None
    if psfs[0].ndim == 2:
        return to_numpy(psfs[0])
    stacked = np.concatenate([to_numpy(p) for p in psfs])
    if stacked.shape[0] != batch:
        raise RuntimeError("a method returned a PSF stack that does not match the image stack")
    return stacked

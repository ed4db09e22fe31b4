"""Detector elements that see no signal or an anomalous dead time, found before they are summed.

A multi-element detector sums its elements into one map. An element that looks past the sample
(shadowed, misaligned, or off) adds only its noise and continuum; one whose dead time is far
above the others' saturates or misbehaves. At APS 2-ID-E (``2xfm_0010.mda``) two of the four
elements see Ar and the scatter but almost none of the sample's Ca, Fe or Cu.

:func:`check_detector_elements` measures, per element and over all points:

- its **signal** in the map's ROI: the net counts (ROI minus the continuum of the side windows,
  :mod:`asirp.xrf.background`) when the side windows are at hand, else the gross ROI counts;
- its **dead-time fraction** ``1 - sum(live) / sum(real)``.

An element is *weak* when its signal is below :data:`WEAK_FRACTION` (5 %) of the typical
element's; the typical element is the median of the stronger half of the elements, so that up to
half of them can be dead without hiding it (a plain median of four elements, two of them dead,
would sit halfway between). The comparison is made only when the typical signal stands clear of
its Poisson noise (:data:`MIN_SIGNIFICANCE` sigma): mapping an element the sample does not hold
gives net counts near zero on every element and flags none. An element's dead time is
*anomalous* when it exceeds the typical element's by :data:`DEAD_TIME_EXCESS` (20 percentage
points) or reaches :data:`DEAD_TIME_LIMIT` (80 %).

:func:`choose_detectors` leaves flagged elements out of the sum unless the user named the
elements (then they are kept as asked), and writes a caution sentence naming each and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WEAK_FRACTION = 0.05
"""An element whose signal is below this fraction of the typical element's is weak."""

MIN_SIGNIFICANCE = 5.0
"""The typical element's signal must exceed this many Poisson sigmas for the weak test to run."""

DEAD_TIME_EXCESS = 0.2
"""Dead-time fraction above the typical element's by this much (absolute) is anomalous."""

DEAD_TIME_LIMIT = 0.8
"""A dead-time fraction of this or more is anomalous whatever the other elements do."""


def _percent(value: float) -> str:
    return f"{100.0 * value:.2g} %" if abs(value) < 0.1 else f"{100.0 * value:.0f} %"


@dataclass(frozen=True)
class ElementCheck:
    """What :func:`check_detector_elements` found.

    Attributes
    ----------
    roi_name : str
        The ROI the signal was measured in (``"Cu Ka"``).
    signal : numpy.ndarray
        ``(n_detectors,)`` float64 signal per element, counts (net or gross, see ``net``).
    net : bool
        Whether ``signal`` is net of the side windows' continuum.
    typical_signal : float
        The typical element's signal, counts.
    significant : bool
        Whether the typical signal is clear of its noise (else no element is called weak).
    dead_time_fraction : numpy.ndarray
        ``(n_detectors,)`` float64, NaN for an element with no real time recorded.
    typical_dead_time : float
        Median dead-time fraction (NaN when none recorded).
    weak : tuple of int
        Elements with too little signal.
    anomalous_dead_time : tuple of int
        Elements with an anomalous dead time.
    """

    roi_name: str
    signal: np.ndarray
    net: bool
    typical_signal: float
    significant: bool
    dead_time_fraction: np.ndarray
    typical_dead_time: float
    weak: tuple[int, ...]
    anomalous_dead_time: tuple[int, ...]

    @property
    def flagged(self) -> tuple[int, ...]:
        """Elements that are weak or have an anomalous dead time, ascending."""
        return tuple(sorted(set(self.weak) | set(self.anomalous_dead_time)))

    def reasons(self, element: int) -> list[str]:
        """Why one element is flagged (empty when it is not)."""
        reasons = []
        if element in self.weak:
            kind = "net" if self.net else "gross"
            ratio = self.signal[element] / self.typical_signal
            reasons.append(
                f"its {self.roi_name} {kind} counts are {_percent(ratio)} of the typical "
                f"element's (below {_percent(WEAK_FRACTION)}: it sees almost no signal)"
            )
        if element in self.anomalous_dead_time:
            reasons.append(
                f"its dead time is {_percent(self.dead_time_fraction[element])} against "
                f"{_percent(self.typical_dead_time)} typical"
            )
        return reasons

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable figures (for map metadata and summary.json)."""

        def finite(value: float) -> float | None:
            return float(value) if np.isfinite(value) else None

        return {
            "roi": self.roi_name,
            "signal_counts": [float(v) for v in self.signal],
            "signal_is_net": self.net,
            "typical_signal_counts": finite(self.typical_signal),
            "signal_significant": self.significant,
            "dead_time_fraction": [finite(v) for v in self.dead_time_fraction],
            "typical_dead_time_fraction": finite(self.typical_dead_time),
            "weak": list(self.weak),
            "anomalous_dead_time": list(self.anomalous_dead_time),
        }


def _typical(values: np.ndarray) -> float:
    """Median of the stronger half (robust to up to half the elements being dead)."""
    ordered = np.sort(values)[::-1]
    return float(np.median(ordered[: max(1, (ordered.size + 1) // 2)]))


def check_detector_elements(
    gross_counts: np.ndarray,
    live_time_s: np.ndarray,
    real_time_s: np.ndarray,
    *,
    background_counts: np.ndarray | None = None,
    roi_name: str = "ROI",
) -> ElementCheck:
    """Find detector elements with no signal or an anomalous dead time.

    Parameters
    ----------
    gross_counts : numpy.ndarray
        ROI counts ``(n_points, n_detectors)``, counts.
    live_time_s, real_time_s : numpy.ndarray
        ``(n_points, n_detectors)``, s.
    background_counts : numpy.ndarray, optional
        Continuum under the ROI ``(n_points, n_detectors)``, counts (from the side windows);
        the signal is then net of it.
    roi_name : str
        The ROI's name, for the reasons.

    Returns
    -------
    ElementCheck
    """
    gross = np.asarray(gross_counts, dtype=np.float64)
    if gross.ndim != 2:
        raise ValueError(f"gross_counts must be (n_points, n_detectors), got {gross.shape}")
    n_detectors = gross.shape[1]
    gross_total = gross.sum(axis=0)
    signal = gross_total.copy()
    net = background_counts is not None
    if net:
        signal = signal - np.asarray(background_counts, dtype=np.float64).sum(axis=0)
    typical = _typical(signal)
    # The typical element's signal against the Poisson noise of its gross counts (which bounds
    # the noise of its net counts from below).
    noise = float(np.sqrt(max(_typical(gross_total), 1.0)))
    significant = bool(n_detectors > 1 and typical > MIN_SIGNIFICANCE * noise)
    weak: tuple[int, ...] = ()
    if significant:
        weak = tuple(int(d) for d in np.flatnonzero(signal < WEAK_FRACTION * typical))

    live = np.asarray(live_time_s, dtype=np.float64).sum(axis=0)
    real = np.asarray(real_time_s, dtype=np.float64).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dead = np.where(real > 0, 1.0 - live / np.where(real > 0, real, 1.0), np.nan)
    recorded = dead[np.isfinite(dead)]
    typical_dead = float(np.median(recorded)) if recorded.size else float("nan")
    anomalous: tuple[int, ...] = ()
    if recorded.size:
        limit = min(DEAD_TIME_LIMIT, typical_dead + DEAD_TIME_EXCESS)
        anomalous = tuple(
            int(d) for d in np.flatnonzero(np.isfinite(dead) & (dead >= limit - 1e-12))
        )
        if len(anomalous) == n_detectors:  # all alike: nothing to single out
            anomalous = ()
    return ElementCheck(
        roi_name=roi_name,
        signal=signal,
        net=net,
        typical_signal=typical,
        significant=significant,
        dead_time_fraction=dead,
        typical_dead_time=typical_dead,
        weak=weak,
        anomalous_dead_time=anomalous,
    )


def choose_detectors(
    check: ElementCheck, detectors: Sequence[int] | None
) -> tuple[list[int], list[str]]:
    """The detector elements to sum, and caution sentences about the flagged ones.

    Parameters
    ----------
    check : ElementCheck
        From :func:`check_detector_elements` over all elements.
    detectors : sequence of int or None
        Elements the user named (already validated), or None for "all usable ones".

    Returns
    -------
    (list of int, list of str)
        The elements to sum (flagged ones left out when ``detectors`` is None; all flagged
        leaves them all in), and one caution per flagged element concerned.
    """
    n_detectors = int(check.signal.shape[0])
    flagged = check.flagged
    if detectors is not None:
        named = [int(d) for d in detectors]
        cautions = [
            f"detector element {d} kept in the sum because detectors were named, although "
            f"{'; '.join(check.reasons(d))}"
            for d in flagged
            if d in named
        ]
        return named, cautions
    if not flagged:
        return list(range(n_detectors)), []
    if len(flagged) == n_detectors:
        return list(range(n_detectors)), [
            f"every detector element is flagged ({'; '.join(check.reasons(flagged[0]))} for "
            "element 0); all are summed: check the detector"
        ]
    chosen = [d for d in range(n_detectors) if d not in flagged]
    cautions = [
        f"detector element {d} left out of the sum: {'; '.join(check.reasons(d))}; name the "
        "elements to sum (detectors=, --detectors) to keep it"
        for d in flagged
    ]
    return chosen, cautions

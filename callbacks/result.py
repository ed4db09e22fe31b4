"""What a live restoration hands to its listeners: :class:`LiveResult`.

A :class:`~callbacks.live.LiveRestorer` makes one :class:`LiveResult` per restoration of a live
map (partial or final), passes it to its listeners and publishes it in the raw run's derived
run (:class:`~callbacks.publish.DerivedRun`). This module holds only the type, so that the
restorer and the publisher both depend on it and not on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asirp.restore import Restoration


@dataclass(frozen=True)
class LiveResult:
    """One restoration of a live map (partial or final), as listeners receive it.

    Attributes
    ----------
    run_uid : str
        Uid of the raw run.
    sequence : int
        1 for the run's first restoration, then 2, 3, ...
    final : bool
        Whether this is the restoration of the finished map.
    raw_map : numpy.ndarray
        ``(H, W)`` float32 map that went in: normalised counts, NaN where not measured.
    restored_map : numpy.ndarray or None
        ``(H * s, W * s)`` float32 restored counts (``s``: the method's scale, 1 for
        deconvolution), NaN for rows not restored yet; ``None`` when the restoration failed.
    restoration : asirp.Restoration or None
        The engine's result for the restored rows (method, params, PSF, metrics, timing).
    rows_restored : int
        Leading rows of ``raw_map`` that were restored.
    points_measured, points_expected : int
        Pixels measured when the map was taken, and in the full map.
    error : str or None
        ``"ExceptionType: message"`` when the restoration failed.
    exit_status : str or None
        For final results: the derived run's exit status (``success``, ``abort``, ``fail``).
    derived_uid : str or None
        Uid of the derived run this result was published in (``None`` if not published).
    time : float
        Unix time the result was ready, s.
    """

    run_uid: str
    sequence: int
    final: bool
    raw_map: np.ndarray
    restored_map: np.ndarray | None
    restoration: Restoration | None
    rows_restored: int
    points_measured: int
    points_expected: int
    error: str | None = None
    exit_status: str | None = None
    derived_uid: str | None = None
    time: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the restoration succeeded."""
        return self.error is None and self.restoration is not None

    @property
    def method(self) -> str | None:
        """The method that ran (``None`` if it failed)."""
        return None if self.restoration is None else self.restoration.method

    @property
    def metrics(self) -> dict[str, float]:
        """Image-quality figures of the restoration (empty if it failed)."""
        return {} if self.restoration is None else dict(self.restoration.metrics)

    @property
    def progress(self) -> float:
        """Fraction of the map measured when the map was taken (0 to 1)."""
        return self.points_measured / self.points_expected if self.points_expected else 0.0


Listener = Callable[[LiveResult], None]
"""A listener of a :class:`~callbacks.live.LiveRestorer`: ``listener(result)``."""

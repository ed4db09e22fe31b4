r"""Storage-ring current in parasitic (decay) mode: a sawtooth with periodic injections.

Between injections the current decays exponentially with the beam lifetime; every
``injection_period_s`` it is refilled to ``top_current_ma``:

.. math::

    I(t) = I_\\mathrm{top} \\exp(-\\tau(t) / L), \\qquad
    \\tau(t) = (t + \\phi) \\bmod P

with lifetime :math:`L`, period :math:`P` and phase :math:`\\phi` (time since the last
injection at ``t = 0``). The photon flux on the sample is proportional to the current, so
every count of a slow scan carries the sawtooth: rows measured just after an injection are
brighter. Dividing by I0 removes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RingCurrent:
    """Sawtooth ring current.

    Parameters
    ----------
    top_current_ma : float
        Current right after an injection, mA.
    lifetime_h : float
        Beam lifetime (exponential decay constant), hours.
    injection_period_s : float
        Time between injections, s.
    phase_s : float
        Time since the last injection at ``t = 0``, s (``0 <= phase_s < injection_period_s``).
    """

    top_current_ma: float = 200.0
    lifetime_h: float = 4.0
    injection_period_s: float = 600.0
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("top_current_ma", "lifetime_h", "injection_period_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if not (
            isinstance(self.phase_s, int | float) and 0.0 <= self.phase_s < self.injection_period_s
        ):
            raise ValueError(f"phase_s must be in [0, injection_period_s), got {self.phase_s!r}")

    @property
    def lifetime_s(self) -> float:
        """Lifetime, s."""
        return self.lifetime_h * 3600.0

    @property
    def bottom_current_ma(self) -> float:
        """Current just before an injection, mA."""
        return self.top_current_ma * math.exp(-self.injection_period_s / self.lifetime_s)

    def current_ma(self, t_s: np.ndarray | float) -> np.ndarray | float:
        """Current at time(s) ``t_s`` (s), mA (float in, float out)."""
        t = np.asarray(t_s, dtype=np.float64)
        since = np.mod(t + self.phase_s, self.injection_period_s)
        current = self.top_current_ma * np.exp(-since / self.lifetime_s)
        return float(current) if current.ndim == 0 else current

    def charge_mas(self, t_s: np.ndarray | float) -> np.ndarray:
        """Integral of the current from ``-phase_s`` (the last injection before 0) to ``t_s``.

        Returns
        -------
        numpy.ndarray
            mA·s, same shape as ``t_s``.
        """
        t = np.asarray(t_s, dtype=np.float64) + self.phase_s
        periods = np.floor(t / self.injection_period_s)
        since = t - periods * self.injection_period_s
        scale = self.top_current_ma * self.lifetime_s
        per_period = scale * (1.0 - math.exp(-self.injection_period_s / self.lifetime_s))
        return periods * per_period + scale * (1.0 - np.exp(-since / self.lifetime_s))

    def mean_current_ma(
        self, t0_s: np.ndarray | float, duration_s: np.ndarray | float
    ) -> np.ndarray:
        """Mean current over ``[t0_s, t0_s + duration_s]`` (exact integral), mA."""
        t0 = np.asarray(t0_s, dtype=np.float64)
        duration = np.asarray(duration_s, dtype=np.float64)
        if np.any(duration < 0):
            raise ValueError("duration_s must be >= 0")
        safe = np.where(duration > 0, duration, 1.0)
        mean = (self.charge_mas(t0 + duration) - self.charge_mas(t0)) / safe
        return np.where(duration > 0, mean, self.current_ma(t0))

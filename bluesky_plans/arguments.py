"""Checks of plan arguments, shared by the plans (a bad argument raises before any message)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def positive_number(name: str, value: Any) -> float:
    """``value`` as a finite float > 0, or ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def range_um(name: str, values: Sequence[float]) -> tuple[float, float]:
    """``(start, stop)`` µm of a scan range, finite with stop > start, or ``ValueError``."""
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (start, stop) in µm, got {values!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {values!r}")
    if high <= low:
        raise ValueError(f"{name} is empty: stop ({high:g}) must exceed start ({low:g}) µm")
    return low, high

"""Checks of plan arguments, shared by the plans (a bad argument raises before any message)."""

from __future__ import annotations

import math
from typing import Any


def positive_number(name: str, value: Any) -> float:
    """``value`` as a finite float > 0, or ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)

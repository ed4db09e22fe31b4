"""Detector geometry of a powder-diffraction area detector, in pyFAI's PONI convention.

One description serves the simulator (which renders rings from it) and the integrator (which
builds a pyFAI :class:`~pyFAI.integrator.azimuthal.AzimuthalIntegrator` from it), so that both
agree by construction. It is plain data: numbers only, JSON-serialisable through
:meth:`DetectorGeometry.as_dict` and :meth:`DetectorGeometry.from_dict`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

_MAX_SIDE_PX = 8192
_POSITION_PX = 10 * _MAX_SIDE_PX


def _finite(name: str, value: Any, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"{name} must be finite and within [{low}, {high}], got {value!r}")
    return number


@dataclass(frozen=True)
class DetectorGeometry:
    """Where the detector sits and what it sees.

    Parameters
    ----------
    shape_px : tuple of int
        Detector size ``(rows, columns)``, px.
    pixel_um : float
        Pixel pitch (square pixels), µm.
    distance_mm : float
        Sample-to-detector distance along the beam, mm.
    poni_px : tuple of float
        Point of normal incidence ``(row, column)``, px from the first pixel's corner. Without
        tilt it is the beam centre.
    tilt_deg : tuple of float
        pyFAI rotations ``(rot1, rot2)`` of the detector, degrees (``rot3`` is 0).
    wavelength_A : float
        X-ray wavelength, Å.
    """

    shape_px: tuple[int, int] = (1024, 1024)
    pixel_um: float = 75.0
    distance_mm: float = 200.0
    poni_px: tuple[float, float] = (512.0, 512.0)
    tilt_deg: tuple[float, float] = field(default=(0.0, 0.0))
    wavelength_A: float = 0.5

    def __post_init__(self) -> None:
        shape = tuple(self.shape_px)
        if len(shape) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 8 <= s <= _MAX_SIDE_PX for s in shape
        ):
            raise ValueError(f"shape_px must be two integers in [8, {_MAX_SIDE_PX}], got {shape!r}")
        object.__setattr__(self, "shape_px", (int(shape[0]), int(shape[1])))
        object.__setattr__(self, "pixel_um", _finite("pixel_um", self.pixel_um, low=1, high=5000))
        object.__setattr__(
            self, "distance_mm", _finite("distance_mm", self.distance_mm, low=10, high=10_000)
        )
        object.__setattr__(
            self, "wavelength_A", _finite("wavelength_A", self.wavelength_A, low=0.05, high=5)
        )
        poni = tuple(self.poni_px)
        tilt = tuple(self.tilt_deg)
        if len(poni) != 2 or len(tilt) != 2:
            raise ValueError("poni_px and tilt_deg must each hold two numbers")
        object.__setattr__(
            self,
            "poni_px",
            tuple(_finite("poni_px", p, low=-_POSITION_PX, high=_POSITION_PX) for p in poni),
        )
        object.__setattr__(
            self, "tilt_deg", tuple(_finite("tilt_deg", t, low=-45, high=45) for t in tilt)
        )

    @property
    def n_pixels(self) -> int:
        """Number of pixels."""
        return self.shape_px[0] * self.shape_px[1]

    def pyfai_kwargs(self) -> dict[str, float]:
        """Keyword arguments of pyFAI's integrator and geometry (SI units, radians)."""
        pixel_m = self.pixel_um * 1e-6
        return {
            "dist": self.distance_mm * 1e-3,
            "poni1": self.poni_px[0] * pixel_m,
            "poni2": self.poni_px[1] * pixel_m,
            "rot1": math.radians(self.tilt_deg[0]),
            "rot2": math.radians(self.tilt_deg[1]),
            "rot3": 0.0,
            "wavelength": self.wavelength_A * 1e-10,
        }

    def make_integrator(self):
        """A pyFAI azimuthal integrator for this geometry.

        Returns
        -------
        pyFAI.integrator.azimuthal.AzimuthalIntegrator
        """
        from pyFAI.detectors import Detector  # lazy: pyFAI loads in ~0.5 s
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator

        pixel_m = self.pixel_um * 1e-6
        detector = Detector(pixel1=pixel_m, pixel2=pixel_m, max_shape=self.shape_px)
        return AzimuthalIntegrator(detector=detector, **self.pyfai_kwargs())

    def q_range_A(self) -> tuple[float, float]:
        """Smallest and largest momentum transfer seen on the detector, 1/Å (no tilt assumed)."""
        rows, cols = self.shape_px
        corners = [(0, 0), (0, cols), (rows, 0), (rows, cols)]
        radii = [
            math.hypot(r - self.poni_px[0], c - self.poni_px[1]) * self.pixel_um * 1e-3
            for r, c in corners
        ]
        inside = 0 <= self.poni_px[0] <= rows and 0 <= self.poni_px[1] <= cols
        nearest = 0.0 if inside else min(radii)
        return tuple(
            4 * math.pi / self.wavelength_A * math.sin(0.5 * math.atan2(r, self.distance_mm))
            for r in (nearest, max(radii))
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable description."""
        data = asdict(self)
        data["shape_px"] = list(self.shape_px)
        data["poni_px"] = list(self.poni_px)
        data["tilt_deg"] = list(self.tilt_deg)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorGeometry:
        """Inverse of :meth:`as_dict`; unknown keys are refused."""
        if not isinstance(data, dict):
            raise TypeError(f"a geometry must be a dict, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown geometry keys: {sorted(unknown)}")
        values = dict(data)
        for key in ("shape_px", "poni_px", "tilt_deg"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

"""A step-scan tomography plan: darks, flats and projections in one run.

:func:`tomo_scan` records, in one run and three streams,

``darks``
    ``n_darks`` frames with the shutter closed;
``flats``
    ``n_flats`` frames with the shutter open and the sample out of the beam;
``primary``
    ``num`` projections with the sample in, at ``start_deg + k (stop_deg - start_deg) / num``
    (``k = 0 ... num - 1``: the end angle is excluded, as a parallel-beam scan over 180° needs),
    each event holding the rotation readback.

Its start document says so under ``md["tomo"]`` (streams, image and angle fields, angle units,
counts, pixel size and detector PSF in µm when known), which is what a consumer such as
:class:`callbacks.tomo.LiveTomoReconstruction` reads. The shutter is closed and the sample put
back in at the end, also when the run fails or is stopped.

The plan takes devices and numbers only (the queue server's rule) and never imports the
simulator or the device: any ophyd-like detector with an ``image`` signal, a movable rotation
axis and two settable devices (shutter ``"open"``/``"closed"``, sample ``"in"``/``"out"``)
will do; :func:`sim.tomo_devices.make_tomo_beamline` builds simulated ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

__all__ = ["MAX_FRAMES", "TOMO_MD_KEY", "tomo_scan"]

MAX_FRAMES = 100_000
"""Most frames (projections, flats and darks) one scan may take."""

TOMO_MD_KEY = "tomo"
"""Key of the start-document metadata that describes the scan."""


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _optional_size(name: str, value: Any) -> float | None:
    """A positive size in µm, or ``None`` for unknown (zero, negative or not a number)."""
    if value is None:
        return None
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of µm, got {value!r}") from None
    return size if math.isfinite(size) and size > 0 else None


def _name(device: Any) -> str:
    return str(getattr(device, "name", repr(device)))


def _angle_field(rotation: Any) -> str:
    """The rotation's reading: its first hinted field, else its name."""
    hints = getattr(rotation, "hints", None)
    fields = hints.get("fields", []) if isinstance(hints, Mapping) else []
    return str(fields[0]) if fields else _name(rotation)


def _read_size(detector: Any, attribute: str):
    """The detector's ``attribute`` signal (µm) when it has one, else ``None`` (a plan)."""
    signal = getattr(detector, attribute, None)
    if signal is None:
        return None
    value = yield from bps.rd(signal, default_value=None)
    return _optional_size(f"{_name(detector)}.{attribute}", value)


def tomo_scan(
    detector: Any,
    rotation: Any,
    shutter: Any,
    *,
    sample: Any,
    start_deg: float = 0.0,
    stop_deg: float = 180.0,
    num: int = 90,
    n_flats: int = 5,
    n_darks: int = 5,
    pixel_um: float | None = None,
    psf_fwhm_um: float | None = None,
    image_field: str | None = None,
    md: Mapping[str, Any] | None = None,
):
    """Record darks, flats and projections of a rotation scan in one run.

    A generator function: the arguments are checked when the RunEngine starts it, before the
    first message, so a bad argument moves nothing.

    Parameters
    ----------
    detector : readable, triggerable device
        Area detector with an ``image`` signal ``(rows, columns)`` counts; its ``pixel_size``
        and ``psf_fwhm`` signals (µm), when it has them, go into the metadata.
    rotation : movable, readable device
        Rotation axis, degrees; its readback is recorded with every projection.
    shutter : settable device
        Takes ``"open"`` and ``"closed"``.
    sample : settable device
        Takes ``"in"`` and ``"out"`` (of the beam), for the flats.
    start_deg, stop_deg : float
        First angle and end of the range, degrees (the end is excluded).
    num : int
        Number of projections (>= 2).
    n_flats, n_darks : int
        Number of flat and dark frames (>= 1 each).
    pixel_um, psf_fwhm_um : float, optional
        Detector pixel and PSF FWHM, µm, for the metadata (default: the detector's signals).
    image_field : str, optional
        Data key of the image (default ``detector.image.name``).
    md : mapping, optional
        Metadata added to the start document; a ``"tomo"`` mapping in it is merged into the
        plan's own.

    Returns
    -------
    generator
        The plan; its return value is the run's uid.

    Raises
    ------
    ValueError
        Counts below their minimum or over :data:`MAX_FRAMES` in all, non-finite angles, an
        empty range, a detector without an image field.
    """
    start = _finite("start_deg", start_deg)
    stop = _finite("stop_deg", stop_deg)
    if start == stop:
        raise ValueError("start_deg and stop_deg are equal: nothing to rotate")
    projections = _count("num", num, 2)
    flats = _count("n_flats", n_flats, 1)
    darks = _count("n_darks", n_darks, 1)
    if projections + flats + darks > MAX_FRAMES:
        raise ValueError(f"{projections + flats + darks} frames exceed {MAX_FRAMES}")
    if image_field is None:
        image = getattr(detector, "image", None)
        if image is None or not getattr(image, "name", None):
            raise ValueError(f"detector {_name(detector)} has no image signal; pass image_field")
        image_field = str(image.name)
    pixel = _optional_size("pixel_um", pixel_um)
    psf = _optional_size("psf_fwhm_um", psf_fwhm_um)
    for name, given, size in (("pixel_um", pixel_um, pixel), ("psf_fwhm_um", psf_fwhm_um, psf)):
        if given is not None and size is None:
            raise ValueError(f"{name} must be > 0 µm (or None: the detector's), got {given!r}")
    angle_field = _angle_field(rotation)
    step = (stop - start) / projections
    angles = [start + k * step for k in range(projections)]
    extra = dict(md or {})
    user_tomo = dict(extra.pop(TOMO_MD_KEY, None) or {})

    def plan():
        known_pixel = (
            pixel if pixel is not None else (yield from _read_size(detector, "pixel_size"))
        )
        known_psf = psf if psf is not None else (yield from _read_size(detector, "psf_fwhm"))
        tomo = {
            "projections_stream": "primary",
            "flats_stream": "flats",
            "darks_stream": "darks",
            "image_field": image_field,
            "angle_field": angle_field,
            "angle_units": "deg",
            "num_projections": projections,
            "n_flats": flats,
            "n_darks": darks,
            "start_deg": start,
            "stop_deg": stop,
            "pixel_um": known_pixel,
            "psf_fwhm_um": known_psf,
            **user_tomo,
        }
        start_md = {
            "plan_name": "tomo_scan",
            "plan_args": {
                "detector": _name(detector),
                "rotation": _name(rotation),
                "shutter": _name(shutter),
                "sample": _name(sample),
                "start_deg": start,
                "stop_deg": stop,
                "num": projections,
                "n_flats": flats,
                "n_darks": darks,
            },
            "detectors": [_name(detector)],
            "motors": [_name(rotation)],
            "num_points": projections,
            "num_intervals": projections - 1,
            "hints": {"dimensions": [[[angle_field], "primary"]]},
            **extra,
            TOMO_MD_KEY: tomo,
        }

        def frames():
            yield from bps.mv(shutter, "closed")
            for _ in range(darks):
                yield from bps.trigger_and_read([detector, shutter, sample], name="darks")
            yield from bps.mv(sample, "out", shutter, "open")
            for _ in range(flats):
                yield from bps.trigger_and_read([detector, shutter, sample], name="flats")
            yield from bps.mv(sample, "in")
            for angle in angles:
                yield from bps.mv(rotation, angle)
                yield from bps.trigger_and_read([detector, rotation], name="primary")

        def safe_state():
            # the beam off the sample whatever happened; the sample back where it was scanned
            yield from bps.mv(shutter, "closed", sample, "in")

        return (
            yield from bpp.run_wrapper(bpp.finalize_wrapper(frames(), safe_state()), md=start_md)
        )

    return (yield from plan())

"""ophyd (v1) devices of a simulated tomography beamline: rotation stage, shutter, sample, camera.

The devices are thin shells over :class:`sim.tomo.ProjectionDetector` (the physics of
:func:`sim.tomo.simulate_tomo`, one frame at a time) and run on the :class:`~sim.devices.SimClock`
of :mod:`sim.devices`: a rotation charges ``|Δθ| / velocity + settle_time``, a shutter or sample
move its switching time and an exposure its duration plus readout; nothing sleeps and every
Status is returned finished.

Devices
-------
:class:`SimRotationStage`
    Rotation axis in degrees (a :class:`sim.devices.SimMotor`): reading ``<name>`` (hinted,
    units ``deg``), ``<name>_setpoint``, configuration ``<name>_velocity`` (deg/s),
    ``<name>_acceleration_time`` (0 s) and ``<name>_settle_time`` (s).
:class:`SimSwitch`
    A two-state setting: the shutter (``"open"`` / ``"closed"``) and the sample translation
    (``"in"`` / ``"out"`` of the beam). Reading ``<name>`` (a string).
:class:`SimTomoDetector`
    Area detector whose ``<name>_image`` ``(rows, columns)`` float32 counts is, when triggered,
    a dark frame (shutter closed), a flat (shutter open, sample out) or a projection of the
    phantom at the stage's angle (shutter open, sample in), with the detector blur, pixel
    gains, dark level and noise of :func:`sim.tomo.simulate_tomo`. Also ``<name>_mean_counts``
    (hinted) and configuration ``<name>_exposure`` (s), ``<name>_pixel_size`` (µm) and
    ``<name>_psf_fwhm`` (µm, horizontal), which a plan may read into its metadata.

:func:`make_tomo_beamline` builds one beamline (:class:`TomoBeamline`); the phantom and pixel
gains come from ``seed`` exactly as :func:`sim.tomo.simulate_tomo` ``(rng=seed)`` draws them,
the counting noise from a separate stream (``[seed, 1]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import DeviceStatus

from sim.devices import SimClock, SimMotor, _annotated, _finished
from sim.tomo import Ellipsoid, ProjectionDetector, make_projection_detector

ANGLE_UNITS = "deg"
"""Units of the rotation readings in data keys."""

SHUTTER_STATES = ("open", "closed")
SAMPLE_STATES = ("in", "out")


def _number(owner: str, what: str, value: Any, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{owner}: {what} must be a number of {unit}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{owner}: {what} must be finite, got {value!r}")
    return number


class SimRotationStage(SimMotor):
    """Sample rotation axis in degrees whose moves take simulated time.

    A :class:`sim.devices.SimMotor` in degrees, without an acceleration time: a rotation
    charges ``|Δθ| / velocity + settle_time``.

    Parameters
    ----------
    clock : SimClock
        Shared clock.
    limits : (float, float)
        Travel limits, degrees.
    velocity_deg_s : float
        Speed, deg/s.
    settle_time_s : float
        Settling after each move, s.
    init_deg : float
        Starting angle, degrees.
    name : str
        Device name (also the name of its reading).
    """

    units = ANGLE_UNITS
    unit_text = "deg"

    def __init__(
        self,
        *,
        clock: SimClock,
        limits: tuple[float, float] = (-720.0, 720.0),
        velocity_deg_s: float = 30.0,
        settle_time_s: float = 0.01,
        init_deg: float = 0.0,
        name: str = "rotation",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            clock=clock,
            limits=limits,
            velocity_um_s=_number(name, "velocity_deg_s", velocity_deg_s, "deg/s"),
            acceleration_time_s=0.0,
            settle_time_s=_number(name, "settle_time_s", settle_time_s, "s"),
            init_pos=init_deg,
            name=name,
            **kwargs,
        )


class SimSwitch(Device):
    """A setting with a few named states that takes simulated time to change.

    Parameters
    ----------
    clock : SimClock
        Shared clock.
    states : sequence of str
        The allowed states (e.g. ``("open", "closed")``).
    init : str
        Starting state.
    switch_time_s : float
        Time a change of state takes, s.
    name : str
        Device name (also the name of its reading).
    """

    state = Cpt(Signal, value="", kind="hinted")

    def __init__(
        self,
        *,
        clock: SimClock,
        states: Sequence[str],
        init: str,
        switch_time_s: float = 0.1,
        name: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.state.name = self.name
        self._clock = clock
        self.states = tuple(str(state) for state in states)
        if len(self.states) < 2 or len(set(self.states)) != len(self.states):
            raise ValueError(f"states must be two or more distinct names, got {states!r}")
        if not (_number(name, "switch_time_s", switch_time_s, "s") >= 0):
            raise ValueError(f"switch_time_s must be >= 0, got {switch_time_s!r}")
        self.switch_time_s = float(switch_time_s)
        self.state.put(self.check_value(init), timestamp=clock.now)

    @property
    def position(self) -> str:
        """The current state."""
        return str(self.state.get())

    def check_value(self, value: Any) -> str:
        """``value`` if it is one of the states; ValueError otherwise."""
        if not isinstance(value, str) or value not in self.states:
            raise ValueError(
                f"{self.name}: state must be one of {list(self.states)}, got {value!r}"
            )
        return value

    def set(self, value: str, **kwargs: Any) -> DeviceStatus:
        """Change to ``value``; the clock is charged the switching time. Returns a done Status."""
        target = self.check_value(value)
        seconds = 0.0 if target == self.position else self.switch_time_s
        end = self._clock.schedule(seconds)
        self.state.put(target, timestamp=end)
        return _finished(self)

    def stop(self, *, success: bool = False) -> None:
        """Stop (changes are instantaneous in simulated time; nothing to do)."""


class SimTomoDetector(Device):
    """Tomography area detector rendering frames of a :class:`~sim.tomo.ProjectionDetector`.

    Use :func:`make_tomo_beamline`.

    Parameters
    ----------
    physics : ProjectionDetector
        Renders the frames.
    rotation : SimRotationStage
        Gives the angle of a projection.
    shutter : SimSwitch
        ``"closed"``: a dark frame.
    sample : SimSwitch
        ``"out"`` (with the shutter open): a flat.
    clock : SimClock
        Shared clock.
    rng : numpy.random.Generator
        Random generator of the counts and read noise.
    exposure_s : float
        Exposure, s (charged to the clock; the counts are the physics' flat counts per frame).
    readout_s : float
        Dead time after each exposure, s.
    name : str
        Device name (prefix of its readings).

    Attributes
    ----------
    kinds : list of str
        What every frame so far was: ``"dark"``, ``"flat"`` or ``"projection"`` (truth).
    """

    image = Cpt(Signal, value=0, kind="normal")
    mean_counts = Cpt(Signal, value=0.0, kind="hinted")
    exposure = Cpt(Signal, value=0.1, kind="config")
    pixel_size = Cpt(Signal, value=1.0, kind="config")
    psf_fwhm = Cpt(Signal, value=0.0, kind="config")

    def __init__(
        self,
        *,
        physics: ProjectionDetector,
        rotation: SimRotationStage,
        shutter: SimSwitch,
        sample: SimSwitch,
        clock: SimClock,
        rng: np.random.Generator,
        exposure_s: float = 0.1,
        readout_s: float = 0.01,
        name: str = "tomo_det",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not isinstance(physics, ProjectionDetector):
            raise TypeError(f"physics must be a ProjectionDetector, got {type(physics).__name__}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if not (_number(name, "exposure_s", exposure_s, "s") > 0):
            raise ValueError(f"exposure_s must be > 0, got {exposure_s!r}")
        if not (_number(name, "readout_s", readout_s, "s") >= 0):
            raise ValueError(f"readout_s must be >= 0, got {readout_s!r}")
        self.physics = physics
        self._rotation = rotation
        self._shutter = shutter
        self._sample = sample
        self._clock = clock
        self._rng = rng
        self.readout_s = float(readout_s)
        self.exposure.put(float(exposure_s), timestamp=clock.now)
        self.pixel_size.put(physics.pixel_um, timestamp=clock.now)
        self.psf_fwhm.put(physics.psf_fwhm_um[1], timestamp=clock.now)
        self.image.put(np.zeros(physics.shape, dtype=np.float32), timestamp=clock.now)
        self.kinds: list[str] = []

    def frame_kind(self) -> str:
        """What a trigger now would record: ``"dark"``, ``"flat"`` or ``"projection"``."""
        if self._shutter.position == "closed":
            return "dark"
        return "flat" if self._sample.position == "out" else "projection"

    def trigger(self) -> DeviceStatus:
        """Expose one frame in the current state; returns a done Status."""
        self._clock.sync()  # the rotation and the shutter finish first
        kind = self.frame_kind()
        if kind == "dark":
            frame = self.physics.dark(self._rng)
        elif kind == "flat":
            frame = self.physics.flat(self._rng)
        else:
            frame = self.physics.projection(self._rotation.position, self._rng)
        end = self._clock.advance(float(self.exposure.get()) + self.readout_s)
        self.image.put(frame, timestamp=end)
        self.mean_counts.put(float(frame.mean()), timestamp=end)
        self.kinds.append(kind)
        return _finished(self)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data keys of the readings: the image ``(rows, columns)`` float32 counts."""
        described = super().describe()
        described[self.image.name].update(
            shape=list(self.physics.shape), dtype="array", dtype_numpy="<f4"
        )
        counts = {"units": "counts"}
        return _annotated(described, {self.image.name: counts, self.mean_counts.name: counts})

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        """Data keys of the configuration, with units (s, µm)."""
        return _annotated(
            super().describe_configuration(),
            {
                self.exposure.name: {"units": "s"},
                self.pixel_size.name: {"units": "um"},
                self.psf_fwhm.name: {"units": "um"},
            },
        )


@dataclass
class TomoBeamline:
    """One simulated tomography beamline (see :func:`make_tomo_beamline`).

    Attributes
    ----------
    physics : ProjectionDetector
        The object and the detector physics (ground truth: ``physics.phantom``).
    clock : SimClock
        Shared clock.
    rotation : SimRotationStage
        Rotation stage, degrees.
    shutter : SimSwitch
        ``"open"`` / ``"closed"``.
    sample : SimSwitch
        ``"in"`` / ``"out"`` of the beam.
    detector : SimTomoDetector
        Area detector.
    """

    physics: ProjectionDetector
    clock: SimClock
    rotation: SimRotationStage
    shutter: SimSwitch
    sample: SimSwitch
    detector: SimTomoDetector


def make_tomo_beamline(
    shape: tuple[int, int] = (4, 64),
    seed: int = 0,
    psf_fwhm_um: float | Sequence[float] = 25.0,
    *,
    pixel_um: float = 10.0,
    flat_counts: float = 5000.0,
    dark_level: float = 100.0,
    read_noise: float = 3.0,
    gain_spread: float = 0.02,
    phantom: Sequence[Ellipsoid] | None = None,
    exposure_s: float = 0.1,
    velocity_deg_s: float = 30.0,
    detector_name: str = "tomo_det",
    rotation_name: str = "rotation",
    shutter_name: str = "shutter",
    sample_name: str = "sample",
) -> TomoBeamline:
    """A simulated tomography beamline: rotation stage, shutter, sample in/out, camera.

    Parameters
    ----------
    shape : (int, int)
        Detector ``(rows, columns)`` (keep it small in tests).
    seed : int
        Seed: the phantom and pixel gains are those of ``simulate_tomo(rng=seed)`` for the same
        detector; the counting noise comes from ``default_rng([seed, 1])``.
    psf_fwhm_um : float or (float, float)
        Detector blur FWHM, µm, isotropic or (vertical, horizontal).
    pixel_um : float
        Detector pixel, µm.
    flat_counts, dark_level, read_noise, gain_spread : float
        As :func:`sim.tomo.simulate_tomo`.
    phantom : sequence of Ellipsoid, optional
        The object (default :func:`sim.tomo.phantom_3d` for the detector field).
    exposure_s : float
        Exposure per frame, s (simulated time).
    velocity_deg_s : float
        Rotation speed, deg/s.
    detector_name, rotation_name, shutter_name, sample_name : str
        Device names (prefixes of the readings).

    Returns
    -------
    TomoBeamline
        The rotation starts at 0 deg, the shutter closed, the sample in.
    """
    physics = make_projection_detector(
        shape=shape,
        pixel_um=pixel_um,
        psf_fwhm_um=psf_fwhm_um,
        flat_counts=flat_counts,
        dark_level=dark_level,
        read_noise=read_noise,
        gain_spread=gain_spread,
        phantom=phantom,
        rng=np.random.default_rng(seed),
    )
    clock = SimClock()
    rotation = SimRotationStage(clock=clock, velocity_deg_s=velocity_deg_s, name=rotation_name)
    shutter = SimSwitch(clock=clock, states=SHUTTER_STATES, init="closed", name=shutter_name)
    sample = SimSwitch(clock=clock, states=SAMPLE_STATES, init="in", name=sample_name)
    detector = SimTomoDetector(
        physics=physics,
        rotation=rotation,
        shutter=shutter,
        sample=sample,
        clock=clock,
        rng=np.random.default_rng([seed, 1]),
        exposure_s=exposure_s,
        name=detector_name,
    )
    return TomoBeamline(physics, clock, rotation, shutter, sample, detector)

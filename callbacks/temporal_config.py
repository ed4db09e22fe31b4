"""What the temporal monitor does with a run: :class:`TemporalConfig`, from untrusted metadata.

A raw run is analysed when its start document carries ``asirp_temporal`` (a mapping; every key
optional except that a geometry must come from it or from the monitor's defaults):

``geometry``
    :meth:`asirp.diffraction.DetectorGeometry.as_dict` of the area detector.
``settings``
    :meth:`asirp.diffraction.TemporalSettings.as_dict` (default: the monitor's, else the
    core's defaults).
``profile``
    :meth:`asirp.diffraction.InstrumentProfile.as_dict` (default: the monitor's, else none).
``image_field``, ``temperature_field``, ``stream``
    Event field of the frames, of the sample temperature (``null``: frames have none), and
    the event stream they are in (defaults: the monitor's, ``"xrd_image"``,
    ``"temperature_readback"``, ``"primary"``).

Without ``asirp_temporal`` a run is analysed when the monitor has a default geometry and the
run's stream has the default fields (checked at its descriptor). Values given in the start
document take precedence over the monitor's defaults, key by key.

Everything in a start document is untrusted: a value that is not what it should be, a field
name that is not a short string, or a detector larger than ``max_frame_pixels`` makes
:func:`config_from_start` raise :class:`ConfigError` (the monitor logs it and skips the run);
keys it does not know are ignored with a warning, so newer writers do not break older readers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asirp.diffraction import DetectorGeometry

_LOG = logging.getLogger(__name__)

METADATA_KEY = "asirp_temporal"
"""Start-document key of the temporal metadata."""
DEFAULT_IMAGE_FIELD = "xrd_image"
DEFAULT_TEMPERATURE_FIELD = "temperature_readback"
DEFAULT_STREAM = "primary"
MAX_FRAME_PIXELS = 4096 * 4096
"""Default largest detector analysed, pixels (a start document cannot ask for more)."""
KNOWN_KEYS = frozenset(
    {"geometry", "settings", "profile", "image_field", "temperature_field", "stream"}
)
_FIELD = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class ConfigError(ValueError):
    """The temporal metadata of a start document is unusable; the run is not analysed."""


@dataclass(frozen=True)
class TemporalConfig:
    """How one run is analysed.

    Attributes
    ----------
    geometry : DetectorGeometry
        The detector's geometry (frames must have its ``shape_px``).
    settings : TemporalSettings or None
        Analysis settings (``None``: the core's defaults).
    profile : InstrumentProfile or None
        Instrumental broadening for the restoration (``None``: none given).
    image_field : str
        Event field of the frames.
    temperature_field : str or None
        Event field of the sample temperature, or ``None``.
    stream : str
        Event stream of the frames.
    source : str
        ``"metadata"`` (the start document's ``asirp_temporal``) or ``"defaults"``.
    """

    geometry: DetectorGeometry
    settings: Any
    profile: Any
    image_field: str
    temperature_field: str | None
    stream: str
    source: str

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description (for the derived run's start document)."""
        return {
            "geometry": self.geometry.as_dict(),
            "settings": None if self.settings is None else self.settings.as_dict(),
            "profile": None if self.profile is None else self.profile.as_dict(),
            "image_field": self.image_field,
            "temperature_field": self.temperature_field,
            "stream": self.stream,
            "source": self.source,
        }


@dataclass(frozen=True)
class TemporalDefaults:
    """The monitor's own configuration, used where a start document says nothing.

    Attributes
    ----------
    geometry : DetectorGeometry or None
        Without one, only runs whose start document gives a geometry are analysed.
    settings, profile : optional
        ``TemporalSettings`` and ``InstrumentProfile`` of the core.
    image_field, temperature_field, stream : str
        As in :class:`TemporalConfig`.
    max_frame_pixels : int
        Largest detector analysed, pixels.
    """

    geometry: DetectorGeometry | None = None
    settings: Any = None
    profile: Any = None
    image_field: str = DEFAULT_IMAGE_FIELD
    temperature_field: str | None = DEFAULT_TEMPERATURE_FIELD
    stream: str = DEFAULT_STREAM
    max_frame_pixels: int = MAX_FRAME_PIXELS

    def __post_init__(self) -> None:
        _field("image_field", self.image_field)
        _field("stream", self.stream)
        if self.temperature_field is not None:
            _field("temperature_field", self.temperature_field)
        if isinstance(self.max_frame_pixels, bool) or int(self.max_frame_pixels) < 64:
            raise ValueError(f"max_frame_pixels must be >= 64, got {self.max_frame_pixels!r}")
        if self.geometry is not None:
            _check_size(self.geometry, int(self.max_frame_pixels))


def _field(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _FIELD.match(value):
        raise ConfigError(
            f"{name} must be a field name (1-128 letters, digits, '_.:-'), got {value!r:.80}"
        )
    return value


def _check_size(geometry: DetectorGeometry, max_pixels: int) -> None:
    if geometry.n_pixels > max_pixels:
        raise ConfigError(
            f"a detector of {geometry.shape_px[0]} x {geometry.shape_px[1]} px is larger than "
            f"the {max_pixels} pixels analysed (max_frame_pixels)"
        )


def _parse(what: str, parser: Any, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{METADATA_KEY}.{what} must be a mapping, got {type(value).__name__}")
    try:
        return parser(dict(value))
    except Exception as error:  # untrusted input: whatever from_dict raises, the run is skipped
        raise ConfigError(
            f"{METADATA_KEY}.{what} is invalid: {type(error).__name__}: {error}"[:500]
        ) from None


def parse_settings(value: Mapping[str, Any]) -> Any:
    """``TemporalSettings.from_dict(value)`` (raises :class:`ConfigError`)."""
    from asirp.diffraction import TemporalSettings

    return _parse("settings", TemporalSettings.from_dict, value)


def parse_profile(value: Mapping[str, Any]) -> Any:
    """``InstrumentProfile.from_dict(value)`` (raises :class:`ConfigError`)."""
    from asirp.diffraction import InstrumentProfile

    return _parse("profile", InstrumentProfile.from_dict, value)


def parse_geometry(value: Mapping[str, Any]) -> DetectorGeometry:
    """``DetectorGeometry.from_dict(value)`` (raises :class:`ConfigError`)."""
    return _parse("geometry", DetectorGeometry.from_dict, value)


def config_from_start(
    start: Mapping[str, Any], defaults: TemporalDefaults
) -> TemporalConfig | None:
    """How to analyse the run of ``start``, or ``None`` when it is not one to analyse.

    Parameters
    ----------
    start : mapping
        The raw run's start document (untrusted).
    defaults : TemporalDefaults
        The monitor's configuration.

    Returns
    -------
    TemporalConfig or None
        ``None`` when the start document has no ``asirp_temporal`` and there is no default
        geometry. A config from defaults still needs its descriptor to match (the monitor
        checks the fields there).

    Raises
    ------
    ConfigError
        If ``asirp_temporal`` is present but unusable.
    """
    metadata = start.get(METADATA_KEY)
    if metadata is None:
        if defaults.geometry is None:
            return None
        return TemporalConfig(
            geometry=defaults.geometry,
            settings=defaults.settings,
            profile=defaults.profile,
            image_field=defaults.image_field,
            temperature_field=defaults.temperature_field,
            stream=defaults.stream,
            source="defaults",
        )
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"{METADATA_KEY} must be a mapping, got {type(metadata).__name__}")
    unknown = sorted(str(key)[:64] for key in metadata if key not in KNOWN_KEYS)
    if unknown:
        _LOG.warning("run %s: %s keys ignored: %s", start.get("uid"), METADATA_KEY, unknown[:10])
    if "geometry" in metadata:
        geometry = parse_geometry(metadata["geometry"])
    elif defaults.geometry is not None:
        geometry = defaults.geometry
    else:
        raise ConfigError(f"{METADATA_KEY} has no geometry, and the monitor has no default one")
    _check_size(geometry, int(defaults.max_frame_pixels))
    settings = (
        parse_settings(metadata["settings"])
        if metadata.get("settings") is not None
        else defaults.settings
    )
    profile = (
        parse_profile(metadata["profile"])
        if metadata.get("profile") is not None
        else defaults.profile
    )
    image_field = _field("image_field", metadata.get("image_field", defaults.image_field))
    temperature_field = metadata.get("temperature_field", defaults.temperature_field)
    if temperature_field is not None:
        _field("temperature_field", temperature_field)
    stream = _field("stream", metadata.get("stream", defaults.stream))
    return TemporalConfig(
        geometry=geometry,
        settings=settings,
        profile=profile,
        image_field=image_field,
        temperature_field=temperature_field,
        stream=stream,
        source="metadata",
    )

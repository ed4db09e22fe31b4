"""What the device's live mode maps, checked, and the restorer arguments it gives.

One job: the options of live mode (:class:`LiveOptions`, the device's ``Live*`` properties),
their checks (:func:`validate_options`), and the keyword arguments of
:class:`callbacks.LiveRestorer` made from them and the component's settings
(:func:`restorer_arguments`). :mod:`asirp_device.live` runs live mode with them and re-exports
these names. No Tango import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from asirp_device.component import NotReady
from asirp_device.settings import Settings, engine_call


@dataclass(frozen=True)
class LiveOptions:
    """What live mode maps and how often it restores (the device's ``Live*`` properties).

    Attributes
    ----------
    field : str
        Event field to map, e.g. ``"xrf_Cu"``; several separated by commas are summed. Empty:
        live mode cannot start.
    normalize : str
        Flux-monitor field to normalise by (``value * mean(i0) / i0``), e.g. ``"i0"``; empty:
        no normalisation.
    every_rows : int
        Restore and publish the partial map each time this many more rows are done; 0: only
        the final map of each run.
    position_scale_um : float
        µm per motor unit of the scans (1 for µm stages, 1000 for mm stages).
    tiled_uri : str
        Tiled server that receives each raw run's derived run (``TILED_API_KEY`` in the
        environment gives its key); empty: nothing is written to tiled.
    grace_s : float
        At stop, how long the final restoration of the run in progress may take before it is
        cancelled, s.
    allow_pickle : bool
        Also read pickled documents (bluesky's default ``Publisher``). Unpickling runs code
        chosen by the sender: this trusts every process that can publish to the proxy (and,
        since any client may call ``StartLive``, any proxy a client names) to run code in the
        device server. Default: msgpack only.
    """

    field: str = ""
    normalize: str = ""
    every_rows: int = 8
    position_scale_um: float = 1.0
    tiled_uri: str = ""
    grace_s: float = 1.0
    allow_pickle: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        """The event fields named by :attr:`field`."""
        return tuple(name.strip() for name in self.field.split(",") if name.strip())


def validate_options(options: LiveOptions) -> LiveOptions:
    """Return ``options`` with text fields stripped, or raise a clear error.

    Raises
    ------
    TypeError, ValueError
        For a field or monitor name that is not text or holds spaces, ``every_rows`` that is
        not an integer >= 0, a scale that is not > 0, a negative ``grace_s``.
    """
    for name in ("field", "normalize", "tiled_uri"):
        if not isinstance(getattr(options, name), str):
            raise TypeError(f"{name} must be a string, got {getattr(options, name)!r}")
    normalize = options.normalize.strip()
    for name in (*options.fields, normalize):
        if any(c.isspace() for c in name):
            raise ValueError(f"an event field name has no spaces, got {name!r}")
    every_rows = options.every_rows
    if isinstance(every_rows, bool) or not isinstance(every_rows, int) or every_rows < 0:
        raise ValueError(
            f"every_rows must be an integer >= 0 (0: final maps only), got {every_rows!r}"
        )
    scale = options.position_scale_um
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | float)
        or not (math.isfinite(scale) and scale > 0)
    ):
        raise ValueError(f"position_scale_um must be a finite number > 0, got {scale!r}")
    if not (math.isfinite(options.grace_s) and options.grace_s >= 0):
        raise ValueError(f"grace_s must be >= 0 s, got {options.grace_s!r}")
    if not isinstance(options.allow_pickle, bool):
        raise TypeError(f"allow_pickle must be a bool, got {options.allow_pickle!r}")
    return replace(
        options,
        field=", ".join(options.fields),
        normalize=normalize,
        position_scale_um=float(scale),
        tiled_uri=options.tiled_uri.strip(),
        grace_s=float(options.grace_s),
    )


def restorer_arguments(settings: Settings, options: LiveOptions) -> dict[str, Any]:
    """Keyword arguments of :class:`callbacks.LiveRestorer` for the component's ``settings``.

    The method and its parameters (with ``iterations`` for iterative methods) are those
    :func:`asirp_device.settings.engine_call` gives a local restoration; with ``auto_select``
    the method is ``"auto"`` without parameters. The PSF is the beam FWHM on each scan's own
    step; the component's ``pixel_um`` is not used.

    Raises
    ------
    NotReady
        If ``options`` name no field to map.
    ValueError, TypeError
        If the settings do not fit the method.
    """
    fields = options.fields
    if not fields:
        raise NotReady(
            "live mode maps an event field: set live_field (e.g. xrf_Cu; several separated by "
            "commas are summed) or the LiveField property first"
        )
    method, kwargs = engine_call(settings)
    params = {k: v for k, v in kwargs.items() if k not in ("beam_fwhm_um", "pixel_um", "device")}
    return {
        "field": fields[0] if len(fields) == 1 else fields,
        "method": method,
        "params": params,
        "normalize": options.normalize or None,
        "beam_fwhm_um": settings.beam_fwhm_um,
        "position_scale_um": options.position_scale_um,
        "every_rows": options.every_rows or None,
        "device": settings.compute_device,
        "publish": "final",
    }

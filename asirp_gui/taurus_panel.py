"""A Taurus form on the device: the attributes an operator watches, in Taurus's colours.

Tango's quality colours show an attribute in alarm; units and write widgets come with it.

Taurus resolves a device through a Tango database, so the form is offered for devices
registered in one (a facility database, or ``asirp serve``'s embedded one); a ``#dbase=no``
name gets a message instead. Taurus is imported when a form is opened, not with the panel.
"""

from __future__ import annotations

import warnings
from typing import Any

TAURUS_ATTRIBUTES = (
    "State",
    "restoration_outcome",
    "method",
    "auto_select",
    "iterations",
    "beam_fwhm_um",
    "pixel_um",
    "method_used",
    "contrast_std",
    "sharpness",
    "noise_sigma",
    "residual",
    "iterations_run",
    "last_duration_ms",
    "progress",
)
"""Attributes of the form, in order: state, settings, then the newest result's figures."""


def taurus_models(device: str, attributes: tuple[str, ...] = TAURUS_ATTRIBUTES) -> list[str]:
    """Taurus model names of ``attributes`` of ``device``.

    Parameters
    ----------
    device : str
        ``domain/family/member`` (through ``TANGO_HOST``) or ``tango://host:port/d/f/m``.
    attributes : tuple of str
        Attribute names.

    Raises
    ------
    ValueError
        For a device outside a Tango database (``#dbase=no``), which Taurus cannot resolve.
    """
    name = device.strip()
    if "#dbase=no" in name:
        raise ValueError(
            "Taurus needs a device registered in a Tango database; this one is served without "
            "one (#dbase=no). Start it with 'asirp serve' or in the facility database."
        )
    if not name:
        raise ValueError("give a device name")
    return [f"{name}/{attribute}" for attribute in attributes]


def open_taurus_form(device: str) -> Any:
    """A shown ``TaurusForm`` of :data:`TAURUS_ATTRIBUTES` of ``device`` (a top-level window).

    Raises
    ------
    ValueError
        See :func:`taurus_models`.
    """
    models = taurus_models(device)
    with warnings.catch_warnings():
        # Taurus 5.4 calls pint functions that pint deprecates, when it is imported
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="taurus")
        warnings.filterwarnings("ignore", message=".*removed in future versions of pint.*")
        from taurus.qt.qtgui.panel import TaurusForm

        form = TaurusForm()
        form.setWindowTitle(f"ASIRP device {device.strip()}")
        form.setModel(models)
    form.show()
    return form

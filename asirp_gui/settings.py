"""Where the operator panel remembers its settings: a QSettings file in INI format.

The file is ``--settings FILE`` when given, else ``$ASIRP_GUI_SETTINGS``, else Qt's per-user
location (organisation ``asirp``, application ``gui``); tests redirect it to a temporary file.
"""

from __future__ import annotations

import os
from pathlib import Path

from qtpy.QtCore import QSettings

SETTINGS_ENV = "ASIRP_GUI_SETTINGS"
"""Environment variable naming the settings file (INI)."""


def open_settings(path: str | os.PathLike | None = None) -> QSettings:
    """The panel's settings store.

    Parameters
    ----------
    path : str or os.PathLike, optional
        INI file to use; default ``$ASIRP_GUI_SETTINGS`` or the per-user location.

    Returns
    -------
    QSettings
        INI-format settings (values come back as strings: convert when reading).
    """
    chosen = path if path is not None else os.environ.get(SETTINGS_ENV)
    if chosen:
        Path(chosen).parent.mkdir(parents=True, exist_ok=True)
        return QSettings(str(chosen), QSettings.IniFormat)
    return QSettings(QSettings.IniFormat, QSettings.UserScope, "asirp", "gui")

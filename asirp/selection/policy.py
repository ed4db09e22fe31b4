"""The selection policy file: methods pinned by an operator, choices remembered by the selector.

Selecting a method costs several restorations. Scans of the same kind (same modality, beam,
count level and map size) usually want the same method, so the selector can remember its choice
and an operator can pin one:

- **pinned** (per modality): ``policy.pin("xrf_map", "richardson_lucy", iterations=20)``; every
  ``method="auto"`` restoration of that modality then uses it without scoring;
- **remembered** (per kind of scan, see :func:`asirp.selection.scan_kind`): after a scored
  selection the selector stores the winner, and the next scan of the same kind reuses it.

The file is JSON, human-readable and small::

    {"format": "asirp-policy", "version": 1,
     "pinned": {"xrf_map": {"method": "richardson_lucy", "params": {"iterations": 20},
                            "note": "...", "date": "2025-01-01T12:00:00+00:00"}},
     "remembered": {"xrf_map|scale=1|psf=2px|counts=1e2|shape=128x128|split=binomial": {...}},
     "costs": {...}}

Its default location is ``$ASIRP_POLICY`` when set, else ``$XDG_CONFIG_HOME/asirp/policy.json``
(``~/.config/asirp/policy.json``); :func:`asirp.select` and ``asirp.restore(method="auto")`` use a
policy only when given one (``policy=Policy.load()`` for the default file, or a path), so nothing
is read or written behind the caller's back. Writes go to a temporary file that is then renamed.

**Only policy files are rewritten.** ``"format": "asirp-policy"`` marks a file as ASIRP's. An
existing file is read and rewritten only if it is a policy file: it has that marker, or (files
written before the marker) it is a JSON object with a ``version`` and no keys but ``version``,
``pinned``, ``remembered`` and ``costs``. Any other existing file (another program's JSON, a
raw scan given by mistake) is refused with ``ValueError`` and left as it is; a missing file is
created.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asirp.registry import get_method
from asirp.safe_files import atomic_write

POLICY_VERSION = 1
POLICY_FORMAT = "asirp-policy"
"""Value of the ``format`` key that marks a JSON file as an ASIRP policy file."""
_POLICY_KEYS = frozenset({"format", "version", "pinned", "remembered", "costs"})
MODALITIES = ("xrf_map", "tomo_projection", "image")
"""Kinds of data the selector knows (see :mod:`asirp.selection`)."""


def default_policy_path() -> Path:
    """``$ASIRP_POLICY``, else ``$XDG_CONFIG_HOME/asirp/policy.json`` (``~/.config/...``)."""
    explicit = os.environ.get("ASIRP_POLICY")
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "asirp" / "policy.json"


def is_policy_data(data: Any) -> bool:
    """Whether parsed JSON is an ASIRP policy (the marker, or a legacy policy's keys only)."""
    if not isinstance(data, dict):
        return False
    if data.get("format") == POLICY_FORMAT:
        return True
    return "version" in data and not (data.keys() - _POLICY_KEYS)


def _not_a_policy(file: Path) -> ValueError:
    return ValueError(
        f'{file} is not an ASIRP policy file (no "format": "{POLICY_FORMAT}"); it is '
        "neither read nor replaced: give the path of a policy file, or a new one"
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass
class PolicyEntry:
    """A method and its parameters, with where the choice came from.

    Attributes
    ----------
    method : str
        A registered method name, or ``"identity"`` (no restoration).
    params : dict
        Its parameters (JSON values).
    note : str
        Why (the operator's words, or the selector's reason).
    date : str
        ISO 8601 time of the entry (UTC).
    score : float or None
        The selection score when the selector remembered it.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    date: str = ""
    score: float | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> PolicyEntry:
        """Read one entry, or raise ``ValueError`` naming where it is."""
        if not isinstance(data, dict) or not isinstance(data.get("method"), str):
            raise ValueError(f"policy entry {where} must be an object with a 'method' string")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise ValueError(f"policy entry {where}: 'params' must be an object")
        score = data.get("score")
        return cls(
            data["method"],
            params,
            str(data.get("note", "")),
            str(data.get("date", "")),
            float(score) if isinstance(score, int | float) else None,
        )


class Policy:
    """Pinned and remembered methods, backed by a JSON file (or in memory when ``path=None``).

    Parameters
    ----------
    path : str or os.PathLike, optional
        The file; ``None`` keeps the policy in memory only.

    Examples
    --------
    >>> from asirp.selection.policy import Policy
    >>> policy = Policy()  # in memory
    >>> policy.pin("xrf_map", "richardson_lucy", iterations=20, note="mesh scans")
    >>> policy.pinned("xrf_map").params
    {'iterations': 20}
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._pinned: dict[str, PolicyEntry] = {}
        self._remembered: dict[str, PolicyEntry] = {}
        self.costs: dict[str, Any] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Policy:
        """Read a policy file (a missing file is an empty policy).

        Parameters
        ----------
        path : str or os.PathLike, optional
            The file; :func:`default_policy_path` when not given.

        Raises
        ------
        ValueError
            If the file is not valid policy JSON (the message names the file).
        """
        file = default_policy_path() if path is None else Path(path)
        policy = cls(file)
        if not file.exists():
            return policy
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the policy file {file}: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"policy file {file} must hold a JSON object")
        if not is_policy_data(data):
            raise _not_a_policy(file)
        if data.get("version", POLICY_VERSION) != POLICY_VERSION:
            raise ValueError(
                f"policy file {file} has version {data.get('version')!r}; "
                f"this ASIRP reads version {POLICY_VERSION}"
            )
        for section, target in (("pinned", policy._pinned), ("remembered", policy._remembered)):
            entries = data.get(section, {})
            if not isinstance(entries, dict):
                raise ValueError(f"policy file {file}: {section!r} must be an object")
            for key, entry in entries.items():
                target[str(key)] = PolicyEntry.from_dict(entry, f"{section}/{key} of {file}")
        costs = data.get("costs", {})
        policy.costs = costs if isinstance(costs, dict) else {}
        return policy

    def to_dict(self) -> dict[str, Any]:
        """The policy as the JSON object the file holds."""
        with self._lock:
            return {
                "format": POLICY_FORMAT,
                "version": POLICY_VERSION,
                "pinned": {key: asdict(entry) for key, entry in sorted(self._pinned.items())},
                "remembered": {
                    key: asdict(entry) for key, entry in sorted(self._remembered.items())
                },
                "costs": self.costs,
            }

    def save(self) -> None:
        """Write the file atomically (no-op for an in-memory policy).

        Raises
        ------
        ValueError
            If the path holds a file that is not an ASIRP policy file (see the module notes);
            it is left as it is.
        """
        if self.path is None:
            return
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if self.path.exists():
            try:
                existing = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                raise _not_a_policy(self.path) from None
            if not is_policy_data(existing):
                raise _not_a_policy(self.path)
        with atomic_write(self.path, overwrite=True) as output:
            output.file.write(text.encode("utf-8"))

    def pin(self, modality: str, method: str, note: str = "", **params: Any) -> None:
        """Pin ``method`` with ``params`` for every automatic restoration of ``modality``.

        Raises
        ------
        ValueError
            For an unknown modality or method, or parameters the method does not accept.
        """
        _check_modality(modality)
        if method != "identity":
            get_method(method).resolve_params(params)
        with self._lock:
            self._pinned[modality] = PolicyEntry(method, dict(params), note, _now())
        self.save()

    def unpin(self, modality: str) -> None:
        """Remove the pin of ``modality`` (if any)."""
        _check_modality(modality)
        with self._lock:
            self._pinned.pop(modality, None)
        self.save()

    def pinned(self, modality: str) -> PolicyEntry | None:
        """The entry pinned for ``modality``, or ``None``."""
        with self._lock:
            return self._pinned.get(modality)

    def remember(self, kind: str, entry: PolicyEntry) -> None:
        """Store the selector's choice for scans of ``kind``."""
        if not entry.date:
            entry.date = _now()
        with self._lock:
            self._remembered[kind] = entry
        self.save()

    def remembered(self, kind: str) -> PolicyEntry | None:
        """The choice remembered for ``kind``, or ``None``."""
        with self._lock:
            return self._remembered.get(kind)

    def forget(self, kind: str | None = None) -> None:
        """Forget the choice for ``kind``, or every remembered choice (``None``)."""
        with self._lock:
            if kind is None:
                self._remembered.clear()
            else:
                self._remembered.pop(kind, None)
        self.save()


def _check_modality(modality: Any) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; allowed: {', '.join(MODALITIES)}")

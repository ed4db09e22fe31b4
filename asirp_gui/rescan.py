"""An ROI drawn on a restored map, as a rescan for the queue server.

:func:`rescan_item` makes the bluesky-queueserver plan item (``grid_scan`` over the ROI at the
fine step of :func:`bluesky_plans.budget.fine_step_um`, through
:func:`bluesky_plans.recommender.as_plan_items`). Sending is pluggable: a sender is any callable
``sender(item) -> str`` (a one-line report); without one the panel only shows the item.
:class:`JsonFileSender` writes each item as a new JSON file; :class:`QueueServerSender` (``asirp
gui --queue-server``) adds it to the queue of a bluesky-queueserver RE Manager with
``bluesky_queueserver_api``'s ``item_add``.
The names the items use for detectors and motors are :data:`RESCAN_NAMES`; the RE Manager's
startup module that ASIRP ships (:mod:`control_room.qserver_profile`) defines devices under
those names.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asirp.safe_files import atomic_write
from bluesky_plans.budget import fine_step_um
from bluesky_plans.recommender import as_plan_items
from bluesky_plans.roi import RegionOfInterest

RescanSender = Callable[[dict[str, Any]], str]
"""Sends one plan item; returns a one-line report for the panel."""


@dataclass(frozen=True)
class QueueNames:
    """Names of the rescan's devices in the queue server's namespace.

    Parameters
    ----------
    detectors : tuple of str
        The detectors read at each point.
    x_motor, y_motor : str
        The fast (horizontal) and slow (vertical) stage motors, µm.
    """

    detectors: tuple[str, ...] = ("xrf", "i0")
    x_motor: str = "sample_x"
    y_motor: str = "sample_y"

    @property
    def devices(self) -> tuple[str, ...]:
        """Every name: the detectors, then the x and y motors."""
        return (*self.detectors, self.x_motor, self.y_motor)


RESCAN_NAMES = QueueNames()
"""The one place of these names: :func:`rescan_item`'s defaults and the RE Manager's startup
module :mod:`control_room.qserver_profile` (with its ``user_group_permissions.yaml``) use them."""


def rescan_item(
    x_range_um: Sequence[float],
    y_range_um: Sequence[float],
    *,
    beam_fwhm_um: float,
    target_resolution_um: float,
    detectors: Sequence[str] = RESCAN_NAMES.detectors,
    x_motor: str = RESCAN_NAMES.x_motor,
    y_motor: str = RESCAN_NAMES.y_motor,
    md: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The queue-server plan item that rescans one ROI.

    Parameters
    ----------
    x_range_um, y_range_um : (float, float)
        ROI edges, µm (stage coordinates).
    beam_fwhm_um, target_resolution_um : float
        Beam FWHM and wanted resolution, µm: they set the fine step.
    detectors, x_motor, y_motor : str
        Names in the queue server's namespace.
    md : dict, optional
        Extra start-document metadata (e.g. the device and result id the ROI was drawn on).

    Returns
    -------
    dict
        ``{"item_type": "plan", "name": "grid_scan", "args": [...], "kwargs": {...}}``.
    """
    region = RegionOfInterest(
        float(x_range_um[0]),
        float(x_range_um[1]),
        float(y_range_um[0]),
        float(y_range_um[1]),
        score=0.0,
        strategy="operator",
    )
    step = fine_step_um(beam_fwhm_um, target_resolution_um)
    (item,) = as_plan_items(
        [region], detectors=list(detectors), x_motor=x_motor, y_motor=y_motor, step_um=step, md=md
    )
    return item


class JsonFileSender:
    """Write each plan item to ``folder/rescan_NNNN.json`` (never replacing a file).

    Parameters
    ----------
    folder : str or os.PathLike
        Where the items go (created when missing).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def __call__(self, item: dict[str, Any]) -> str:
        """Write ``item``; return which file holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        number = 1
        while (path := self.folder / f"rescan_{number:04d}.json").exists():
            number += 1
        text = json.dumps(item, indent=2)
        with atomic_write(path) as output:
            output.file.write(text.encode())
        return f"plan item written to {path}"


ZMQ_ADDRESS = re.compile(r"tcp://[^\s:/]+:\d{1,5}|ipc://\S+")
"""What a manager's zmq control address looks like (``tcp://HOST:PORT`` or ``ipc://PATH``)."""

REASON_CHARS = 300
"""Longest reason of a refusal shown in the panel's one line."""

PUBLIC_KEY_ENV = "QSERVER_ZMQ_PUBLIC_KEY"
"""Environment variable of the RE Manager's public zmq key when its control socket is encrypted
(bluesky-queueserver-api's own name; the key pair comes from ``qserver-zmq-keys``)."""


class QueueServerSender:
    """Add each plan item to the queue of a bluesky-queueserver RE Manager (zmq control socket).

    Every call opens a ``REManagerAPI`` client, adds the item at the back of the queue and closes
    the client, so nothing stays connected between rescans. Call it off the GUI thread: it waits
    up to ``timeout_s`` for the manager.

    Parameters
    ----------
    zmq_control_addr : str
        The manager's control address, e.g. ``"tcp://127.0.0.1:60615"``.
    user, user_group : str
        Who adds the items; the group must be allowed ``grid_scan`` and the rescan's devices in
        the manager's ``user_group_permissions.yaml``.
    timeout_s : float
        How long to wait for the manager's answer (and to send), s.
    zmq_public_key : str, optional
        The manager's public key (z85, 40 characters) when its control socket is encrypted;
        default: environment variable :data:`PUBLIC_KEY_ENV`, else no encryption. Never shown.
    """

    def __init__(
        self,
        zmq_control_addr: str,
        *,
        user: str = "asirp operator",
        user_group: str = "primary",
        timeout_s: float = 5.0,
        zmq_public_key: str | None = None,
    ) -> None:
        if not isinstance(zmq_control_addr, str) or not ZMQ_ADDRESS.fullmatch(zmq_control_addr):
            raise ValueError(
                f"queue server address must look like tcp://HOST:PORT, got {zmq_control_addr!r}"
            )
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.zmq_control_addr = zmq_control_addr
        self.user = user
        self.user_group = user_group
        self.timeout_s = float(timeout_s)
        self._public_key = zmq_public_key or os.environ.get(PUBLIC_KEY_ENV) or None
        if self._public_key is not None and not _is_z85_key(self._public_key):
            # the message never quotes the key
            raise ValueError(
                f"the queue server's public key ({PUBLIC_KEY_ENV}) must be 40 z85 characters "
                "(from qserver-zmq-keys)"
            )

    def __repr__(self) -> str:
        # the key is left out: reprs end up in logs
        return f"QueueServerSender({self.zmq_control_addr!r}, user_group={self.user_group!r})"

    def __call__(self, item: dict[str, Any]) -> str:
        """Add ``item`` at the back of the queue.

        Returns
        -------
        str
            One line: the item's uid and its position in the queue.

        Raises
        ------
        OSError
            The manager did not answer within ``timeout_s`` (down, or a wrong address or key).
        ValueError
            The manager refused the item (unknown plan or device, not permitted to the group,
            bad arguments), or the address or key is malformed.
        """
        reply = self._add(item)
        added = reply.get("item") or {}
        uid = added.get("item_uid", "?")
        size = reply.get("qsize")
        where = f"position {size} of {size}" if isinstance(size, int) else "the back"
        return f"rescan {uid} queued at {where} on {self.zmq_control_addr}"

    def _add(self, item: dict[str, Any]) -> dict[str, Any]:
        # imported here: the panel starts without loading the queue-server client
        import zmq
        from bluesky_queueserver_api.zmq import REManagerAPI

        where = f"queue server at {self.zmq_control_addr}"
        try:
            api = REManagerAPI(
                zmq_control_addr=self.zmq_control_addr,
                timeout_recv=self.timeout_s,
                timeout_send=self.timeout_s,
                zmq_public_key=self._public_key,
            )
        except zmq.ZMQError as error:
            raise ValueError(f"{where}: not a usable zmq address ({error})") from None
        try:
            return api.item_add(item, user=self.user, user_group=self.user_group)
        except api.RequestTimeoutError:
            raise OSError(
                f"no answer from the {where} within {self.timeout_s:g} s "
                "(is the RE Manager running, and is the address or key right?)"
            ) from None
        except api.RequestFailedError as error:
            raise ValueError(f"the {where} refused the rescan: {_reason(error)}") from None
        finally:
            close_api(api)


def close_api(api: Any) -> None:
    """Close a ``REManagerAPI`` (zmq) client, its sockets and their zmq contexts.

    ``REManagerAPI.close()`` (bluesky-queueserver-api 0.0.13) leaves three ``zmq.Context``
    objects open: the control client's and those of the (never enabled) console and system-info
    monitors. Each warns (``ResourceWarning``) when it is collected, so they are closed here.
    """
    api.close()
    sockets = [getattr(getattr(api, "_client", None), "_zmq_socket", None)]
    for monitor in (api.console_monitor, api.system_info_monitor):
        sockets.append(getattr(getattr(monitor, "_rco", None), "_socket", None))
    for socket in sockets:
        if socket is not None:
            context = socket.context
            socket.close(linger=0)
            context.term()  # its only socket is closed: this returns at once


def _is_z85_key(key: str) -> bool:
    """Whether ``key`` is a curve key as z85 text (40 characters, 32 bytes)."""
    from zmq.utils import z85

    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def _reason(error: Exception) -> str:
    """The manager's reason, without the API's prefixes nor the item it quotes back."""
    text = " ".join(str(error).split())
    for prefix in ("Request failed: ", "Failed to add an item: "):
        text = text.removeprefix(prefix)
    text = text.split(" Plan: {", 1)[0]  # the item, already known to the operator
    if len(text) > REASON_CHARS:
        text = text[: REASON_CHARS - 1] + "…"
    return text or "no reason given"

r"""The RE Manager's startup module: the simulated beamline, a RunEngine and the queueable plans.

Plans: bluesky's ``grid_scan`` and ``count`` (the panel's rescans), and ASIRP's
:func:`~control_room.queue_plans.adaptive_rescan` (the spatial-feedback loop: coarse scan, live
restoration, regions, fine rescans; serialisable arguments only),
:func:`~control_room.queue_plans.coarse_map` and :func:`~control_room.queue_plans.roi_rescans`
(the rescan agent's coarse maps and its approved rescans) and
:func:`~control_room.queue_plans.tomo_scan`.

With ``ASIRP_TILED_URI`` (and ``ASIRP_TILED_API_KEY``) in the manager's environment, every run
is written to that tiled catalog (:mod:`control_room.worker_tiled`).

bluesky-queueserver imports this module when its worker environment opens::

    start-re-manager --startup-module control_room.qserver_profile \\
        --user-group-permissions "$(python -m control_room.qserver)" \\
        --existing-plans-devices ~/asirp-qserver/existing_plans_and_devices.yaml ...

(the whole command line is in ``docs/QUEUE_SERVER.md``). The worker's namespace is this module's:
every plan (a generator function) and every device in it can be named by a queued item, within
the user-group permissions of :mod:`control_room.qserver` (``user_group_permissions.yaml``).
The devices get the names that the panel's rescans use (:data:`asirp_gui.rescan.RESCAN_NAMES`),
so a plan item from :func:`asirp_gui.rescan.rescan_item` runs here unchanged.

A facility swaps in its own devices with its own startup module (or directory) that binds its
detectors and stage motors to the same names, or changes :data:`~asirp_gui.rescan.RESCAN_NAMES`
and the permissions file together. The simulated stage moves on a simulated clock, so a scan
takes only the time its readings cost.
"""

from __future__ import annotations

from bluesky import RunEngine
from bluesky.plans import count, grid_scan  # noqa: F401 (the worker finds plans in globals)

import sim
from asirp_gui.rescan import RESCAN_NAMES
from control_room.qserver import TOMO_NAMES
from control_room.queue_plans import (  # noqa: F401 (plans, in globals)
    adaptive_rescan,
    coarse_map,
    roi_rescans,
    tomo_scan,
)
from control_room.worker_tiled import worker_catalog

beamline = sim.make_beamline(sample="tissue", beam_fwhm_um=50.0, seed=0)
"""The simulated µ-XRF beamline: clustered tissue with Se, Zn and Fe hotspots (stage travel
±500 µm in x and y, 50 µm beam)."""

tomography = sim.make_tomo_beamline(shape=(4, 64), seed=0)
"""The simulated tomography beamline (camera of 4 x 64 px, rotation stage, shutter, sample)."""

devices = {
    **dict(zip(RESCAN_NAMES.detectors, beamline.detectors, strict=True)),
    RESCAN_NAMES.x_motor: beamline.x,
    RESCAN_NAMES.y_motor: beamline.y,
    **dict(
        zip(
            TOMO_NAMES,
            (tomography.detector, tomography.rotation, tomography.shutter, tomography.sample),
            strict=True,
        )
    ),
}
"""The queue's name of each device: ``xrf``, ``i0``, ``sample_x``, ``sample_y`` (µ-XRF) and
``tomo_det``, ``rotation``, ``shutter``, ``tomo_sample`` (tomography)."""

# The worker finds devices among the module's globals, so each one is bound to its name.
globals().update(devices)

RE = RunEngine({})
"""The RunEngine the worker runs plans with (the queue server requires the name ``RE``)."""

_catalog = worker_catalog()
if _catalog is not None:
    from callbacks.publish import TiledSink

    # every run of every plan goes to the beamline's catalog (ASIRP_TILED_URI); a tiled outage
    # is logged by the sink and never stops a scan
    RE.subscribe(TiledSink(_catalog, batch_size=100))

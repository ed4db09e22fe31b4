"""ASIRP's Tango adapter: the ``ASIRP`` device server, its embedded deployment and a plan client.

Modules
-------
``asirp_device.component``
    :class:`~asirp_device.component.RestorationComponent`, the object that does the work (no
    Tango import): settings, input, a worker thread running :func:`asirp.restore`, listeners.
``asirp_device.settings``, ``asirp_device.files``, ``asirp_device.requests``
    The component's collaborators (no Tango import): the settings and their checks, file
    access confined to the data root, and request ids with the results kept for them.
``asirp_device.long_commands``
    Status, progress and outcome of ``Restore``/``Submit`` by request id (no Tango import),
    shown as ska-tango-base's long-running-command attributes.
``asirp_device.server``
    The thin Tango device ``ASIRP`` over the component; ``main()`` is the ``ASIRP`` server.
``asirp_device.values``, ``asirp_device.wire``
    What the device's attributes and ``FetchResult`` return, computed without Tango, and the
    ``DevEncoded`` format of ``Submit``/``FetchResult``.
``asirp_device.embedded``
    ``asirp serve``: an sqlite Tango database and the server processes, supervised by
    ``asirp_device.processes`` (children die with ``asirp serve``, one instance per database
    file) and registered by ``asirp_device.registration`` (only its own entries).
``asirp_device.live``, ``asirp_device.live_options``, ``asirp_device.live_runs``
    Live mode: a bluesky 0MQ document stream restored as it comes, its options, and the book
    of each run's final live result (the device's ``LiveResultOf``).
``asirp_device.client``
    :class:`~asirp_device.client.ASIRPClient`, an ophyd-async device for Bluesky plans.

This package module stays light (no Tango, no ophyd-async import), so plans can import the client
and the core CLI can load ``asirp_device.command`` without loading the control system.
"""

SERVER_NAME = "ASIRP"
"""Tango server (executable) and class name."""

DEFAULT_DEVICE_NAME = "asirp/restoration/1"
"""Device name used by ``asirp serve`` unless told otherwise."""

DEFAULT_INSTANCE = "1"
"""Server instance name used by ``asirp serve`` unless told otherwise (``ASIRP/1``)."""

__all__ = ["DEFAULT_DEVICE_NAME", "DEFAULT_INSTANCE", "SERVER_NAME"]

r"""The ``asirp live`` sub-command: live restoration fed by bluesky's 0MQ document proxy.

Registered through the ``asirp.commands`` entry point (see :mod:`asirp.cli`); this module only
builds the parser, and the handler imports bluesky and tiled when it runs.

Examples
--------
.. code-block:: console

    $ bluesky-0MQ-proxy --in-address 5577 --out-address 5578 &
    $ asirp live --zmq localhost:5578 --field xrf_Cu --normalize i0 --beam-fwhm-um 50 \
          --method richardson_lucy --tiled-uri http://tiled:8000/api/v1 --api-key $KEY

With ``--temporal`` the same proxy feeds temporal feedback instead (a
:class:`callbacks.temporal.TemporalMonitor`): diffraction frames of temperature ramps are
integrated and scored, and each analysed run gets a derived run of patterns, scores and alarms.

.. code-block:: console

    $ asirp live --zmq localhost:5578 --temporal --data-root /data/xrd \
          --geometry-json geometry.json --settings-json settings.json \
          --profile-json profile.json --tiled-uri http://tiled:8000/api/v1

Without ``--geometry-json`` only runs whose start document carries ``asirp_temporal`` metadata
are analysed; frame files are only read inside ``--data-root``.

The RunEngine publishes msgpack documents (``Publisher("localhost:5577",
serializer=callbacks.serialization.serializer)``); pickled ones (bluesky's default) are only
read with ``--allow-pickle``, which lets every publisher of the proxy run code in this process.
A bad ``--zmq`` address is a one-line error (exit status 2) before anything starts, and tiled
secrets (``--api-key``, ``$TILED_API_KEY``, an ``api_key=`` or password in the URI) never
appear in what it prints or logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from asirp.cli import parse_params
from callbacks.address import RedactingFilter, parse_address, redact, redact_uri, uri_secrets

DEFAULT_TILED_DIRECTORY = "asirp-tiled"
MAX_JSON_BYTES = 1 << 20
"""Largest settings, geometry or profile JSON file read by ``--temporal``, bytes."""
MAP_ONLY_OPTIONS = ("field", "element", "spectrum", "channels", "normalize")


def _params(pairs: list[str], iterations: int | None) -> dict[str, Any]:
    params = parse_params(pairs)
    if iterations is not None:
        params["iterations"] = iterations
    return params


def _one_or_pair(values: list[float] | None) -> float | tuple[float, float] | None:
    if values is None:
        return None
    if len(values) not in (1, 2):
        raise ValueError(f"give one value or two (rows, columns), got {values}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``asirp live`` to the ``asirp`` command's sub-commands."""
    live = subcommands.add_parser(
        "live",
        help="restore maps live from a bluesky 0MQ proxy, publish derived runs to tiled",
        description=(
            "Subscribe to bluesky's 0MQ document proxy, assemble the maps of grid and fly "
            "scans as their documents arrive, restore them periodically and at the end of each "
            "run, and write each restoration as a derived run (parent_uid = the raw run) to "
            "tiled. Stop with SIGINT or SIGTERM: open runs are finished (exit status abort) "
            "or marked failed. With --temporal, analyse the powder-diffraction frames of "
            "temperature ramps instead: integrate each frame to I(q), score it for a change of "
            "shape, and write patterns, scores and alarms as a derived run."
        ),
    )
    live.add_argument(
        "--zmq", required=True, metavar="HOST:PORT", help="the proxy's output (subscriber) address"
    )
    live.add_argument("--prefix", default="", help="only documents published with this prefix")
    live.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also read pickled documents (bluesky's default Publisher); this lets every "
        "publisher that can reach the proxy run code in this process (default: msgpack only, "
        "Publisher(..., serializer=callbacks.serialization.serializer))",
    )
    where = live.add_argument_group("tiled (default: an embedded server writing to --tiled-dir)")
    where.add_argument("--tiled-uri", metavar="URI", help="an existing tiled server")
    where.add_argument(
        "--api-key",
        help="API key of --tiled-uri, or of the embedded server (default: $TILED_API_KEY or "
        "the URI's; never printed)",
    )
    where.add_argument(
        "--tiled-dir",
        default=DEFAULT_TILED_DIRECTORY,
        metavar="DIR",
        help=f"folder of the embedded server ({DEFAULT_TILED_DIRECTORY})",
    )
    where.add_argument("--no-tiled", action="store_true", help="do not write derived runs")
    where.add_argument(
        "--write-raw", action="store_true", help="also write the raw runs (no other writer)"
    )
    source = live.add_argument_group("what to map (one of)")
    source.add_argument(
        "--field", action="append", metavar="FIELD", help="event field; repeat to sum fields"
    )
    source.add_argument("--element", help="element ROI field <detector>_<ELEMENT>, e.g. Cu")
    source.add_argument("--spectrum", metavar="FIELD", help="spectrum field to channel-add")
    source.add_argument(
        "--channels", type=int, nargs=2, metavar=("START", "STOP"), help="channels START:STOP"
    )
    live.add_argument("--normalize", metavar="FIELD", help="flux monitor field, e.g. i0")
    live.add_argument("--stream", help="event stream of the map (default: from the hints)")
    live.add_argument("-m", "--method", default="auto", help="method name or 'auto'")
    live.add_argument("--iterations", type=int, help="iteration count (maximum with auto-stop)")
    live.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter"
    )
    psf = live.add_argument_group("PSF (default: the start document's beam_fwhm_um)")
    psf.add_argument("--beam-fwhm-um", type=float, nargs="+", metavar="F", help="beam FWHM, µm")
    psf.add_argument("--psf-sigma-px", type=float, nargs="+", metavar="S", help="sigma, px")
    live.add_argument(
        "--position-scale-um", type=float, default=1.0, help="µm per motor unit (1000 for mm)"
    )
    live.add_argument(
        "--every-rows", type=int, default=8, help="restore every N rows (0: only at the end)"
    )
    live.add_argument("--every-s", type=float, help="... or every T seconds")
    live.add_argument(
        "--min-rows", type=int, help="fewest rows for a partial restoration (default: PSF height)"
    )
    live.add_argument("--publish", choices=("final", "all"), default="final")
    live.add_argument("--device", default="auto", help="auto, cpu or cuda")
    live.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    _register_temporal(live)
    live.set_defaults(handler=_handle)


def _register_temporal(live: argparse.ArgumentParser) -> None:
    temporal = live.add_argument_group(
        "temporal feedback (--temporal; --stream is then the frames' stream, default primary)"
    )
    temporal.add_argument(
        "--temporal",
        action="store_true",
        help="analyse diffraction frames of temperature ramps (change detection) instead of "
        "restoring maps",
    )
    temporal.add_argument(
        "--data-root", metavar="DIR", help="folder frame files must lie in (none: inline only)"
    )
    temporal.add_argument(
        "--root-map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="read files of resources whose root is FROM under TO (repeatable)",
    )
    temporal.add_argument(
        "--geometry-json",
        metavar="FILE",
        help="default detector geometry (DetectorGeometry.as_dict); without it only runs "
        "with asirp_temporal metadata are analysed",
    )
    temporal.add_argument(
        "--settings-json", metavar="FILE", help="default TemporalSettings (as_dict)"
    )
    temporal.add_argument(
        "--profile-json", metavar="FILE", help="default InstrumentProfile (as_dict)"
    )
    temporal.add_argument("--image-field", default="xrd_image", help="frame field (xrd_image)")
    temporal.add_argument(
        "--temperature-field",
        default="temperature_readback",
        help="temperature field, or 'none' (temperature_readback)",
    )
    temporal.add_argument(
        "--pre-event", type=int, default=20, metavar="N", help="frames kept before an alarm (20)"
    )
    temporal.add_argument(
        "--pre-event-frame-mb",
        type=float,
        default=0.0,
        metavar="MB",
        help="raw frames kept with them, at most MB megabytes (0: patterns only)",
    )
    temporal.add_argument(
        "--max-queue-frames",
        type=int,
        default=2000,
        metavar="N",
        help="frames waiting for analysis before new ones are skipped (2000)",
    )


def _hide_secrets(secrets: list[str]) -> None:
    """Remove ``secrets`` from every record the root logger's handlers write (httpx logs URLs)."""
    redacting = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)


def _connect(uri: str, api_key: str | None, secrets: list[str]) -> Any:
    """A tiled client of ``uri``; a failure is one line without the secrets (``OSError``)."""
    from callbacks.tiled_server import connect

    try:
        return connect(uri, api_key=api_key)
    except Exception as error:  # httpx, tiled: whatever it is, one line, secrets removed
        message = redact(f"{type(error).__name__}: {' '.join(str(error).split())}", secrets)
        raise OSError(
            f"cannot connect to the tiled server {redact_uri(uri)} (--tiled-uri): {message}"
        ) from None


def _open_tiled(args: argparse.Namespace, api_key: str | None, secrets: list[str]) -> Any:
    """``(embedded server or None, client or None)`` as the tiled options ask."""
    from callbacks.tiled_server import EmbeddedTiledServer

    if args.no_tiled:
        if args.write_raw:
            raise ValueError("--write-raw needs tiled; drop --no-tiled")
        return None, None
    if args.tiled_uri:
        return None, _connect(args.tiled_uri, api_key, secrets)
    server = EmbeddedTiledServer(args.tiled_dir, api_key=api_key)
    _hide_secrets([server.api_key])
    key = "--api-key or $TILED_API_KEY" if api_key else "random; give --api-key to choose it"
    print(
        f"asirp live: tiled at {redact_uri(server.uri)} (data in {server.directory}; "
        f"API key: {key})",
        flush=True,
    )
    return server, server.client()


def _read_json(path: str | None, option: str) -> dict[str, Any] | None:
    """The JSON object of an operator's file (at most :data:`MAX_JSON_BYTES`), or ``None``."""
    if path is None:
        return None
    import json

    from asirp.safe_files import open_input

    try:
        with open_input(path) as stream:
            text = stream.read(MAX_JSON_BYTES + 1)
    except (OSError, ValueError) as error:
        raise ValueError(f"{option} {path}: {error}") from None
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"{option} {path}: larger than {MAX_JSON_BYTES} bytes")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{option} {path}: not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option} {path}: must hold a JSON object")
    return value


def _root_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"--root-map takes FROM=TO, got {pair!r}")
        mapping[source] = target
    return mapping


def _temporal_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :class:`~callbacks.temporal.TemporalMonitor` from the options.

    The JSON files are read and parsed here, so a bad one is a one-line error before anything
    is started.
    """
    given = [f"--{name.replace('_', '-')}" for name in MAP_ONLY_OPTIONS if getattr(args, name)]
    if given:
        raise ValueError(f"{', '.join(given)}: map options, not used with --temporal")
    if args.pre_event < 0 or args.pre_event_frame_mb < 0 or args.max_queue_frames < 1:
        raise ValueError(
            "--pre-event and --pre-event-frame-mb must be >= 0, --max-queue-frames >= 1"
        )
    from callbacks.temporal_config import parse_geometry, parse_profile, parse_settings

    geometry = _read_json(args.geometry_json, "--geometry-json")
    settings = _read_json(args.settings_json, "--settings-json")
    profile = _read_json(args.profile_json, "--profile-json")
    temperature = args.temperature_field
    return {
        "geometry": None if geometry is None else parse_geometry(geometry),
        "settings": None if settings is None else parse_settings(settings),
        "profile": None if profile is None else parse_profile(profile),
        "image_field": args.image_field,
        "temperature_field": None if temperature.lower() == "none" else temperature,
        "stream": args.stream or "primary",
        "data_root": args.data_root,
        "root_map": _root_map(args.root_map),
        "pre_event_frames": args.pre_event,
        "pre_event_frame_bytes": int(args.pre_event_frame_mb * (1 << 20)),
        "max_queue_frames": args.max_queue_frames,
    }


def _handle_temporal(args: argparse.Namespace, api_key: str | None, secrets: list[str]) -> int:
    options = _temporal_options(args)
    if options["data_root"] is not None:
        from asirp.safe_files import DataRoot

        options["data_root"] = DataRoot(options["data_root"])  # not a folder: one line, now
    from callbacks.publish import raw_run_writer
    from callbacks.remote import run_remote
    from callbacks.temporal import TemporalMonitor

    server, client = _open_tiled(args, api_key, secrets)
    try:
        monitor = TemporalMonitor(**options, tiled=client)
        writer = raw_run_writer(client) if args.write_raw else None

        def ready(address: str) -> None:
            print(f"asirp live --temporal: subscribed to {address}", flush=True)

        signame = run_remote(
            args.zmq,
            monitor,
            prefix=args.prefix.encode(),
            raw_writer=writer,
            on_ready=ready,
            allow_pickle=args.allow_pickle,
        )
        print(f"asirp live --temporal: stopped ({signame})", flush=True)
    finally:
        if server is not None:
            server.close()
        elif client is not None:
            client.context.close()
    return 0


def _handle(args: argparse.Namespace) -> int:
    parse_address(args.zmq, "--zmq address")  # a bad address: one line, exit status 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    api_key = args.api_key or os.environ.get("TILED_API_KEY")
    secrets = uri_secrets(args.tiled_uri, api_key)
    _hide_secrets(secrets)
    if args.temporal:
        return _handle_temporal(args, api_key, secrets)
    from callbacks.live import LiveRestorer
    from callbacks.publish import raw_run_writer
    from callbacks.remote import run_remote

    if args.channels is not None and args.spectrum is None:
        raise ValueError("--channels needs --spectrum")
    server, client = _open_tiled(args, api_key, secrets)
    try:
        restorer = LiveRestorer(
            field=args.field if args.field and len(args.field) > 1 else (args.field or [None])[0],
            method=args.method,
            params=_params(args.param, args.iterations),
            element=args.element,
            spectrum=args.spectrum,
            channels=tuple(args.channels) if args.channels else None,
            normalize=args.normalize,
            stream=args.stream,
            beam_fwhm_um=_one_or_pair(args.beam_fwhm_um),
            psf_sigma_px=_one_or_pair(args.psf_sigma_px),
            position_scale_um=args.position_scale_um,
            every_rows=args.every_rows or None,
            every_s=args.every_s,
            min_rows=args.min_rows,
            device=args.device,
            tiled=client,
            publish=args.publish,
        )
        writer = raw_run_writer(client) if args.write_raw else None

        def ready(address: str) -> None:
            print(f"asirp live: subscribed to {address}", flush=True)

        signame = run_remote(
            args.zmq,
            restorer,
            prefix=args.prefix.encode(),
            raw_writer=writer,
            on_ready=ready,
            allow_pickle=args.allow_pickle,
        )
        print(f"asirp live: stopped ({signame})", flush=True)
    finally:
        if server is not None:
            server.close()
        elif client is not None:
            client.context.close()
    return 0

"""The whole control-room loop on the embedded default, as ``asirp control-room`` runs it.

1. An embedded tiled server writing to the output folder (raw runs and derived restored runs).
2. An embedded sqlite Tango database and the ASIRP device server (child processes), the device
   writing its derived runs to that tiled server (``TiledUri``).
3. The simulated µ-XRF beamline (the clustered tissue: sub-beam hotspots, close pairs, weak spots
   next to strong ones) and a RunEngine. With
   the device: a 0MQ document proxy (child process) that the RunEngine publishes to and the
   device's live mode reads (``StartLive``), and an in-process raw-map assembler that restores
   nothing; without it: the in-process live restorer.
4. An adaptive ROI scan: the coarse map restored once, by the device's live mode while the scan
   runs (read back through the ophyd-async client: the map stored in tiled is the one the
   decision is made on), regions detected on it (the ``peaks`` rules of
   :mod:`bluesky_plans.presets`; the raw map decides where restoration changed nothing), fine
   rescans within a beam-time budget.
5. What the raw map would have decided, on the same coarse map with the same budget
   (:func:`control_room.evaluation.decide_on_raw`; nothing is scanned for it).
6. A report in the output folder: ``control_room.png`` (the raw and the restored coarse map,
   each with the true hotspots and the regions decided on it, and the fine maps),
   ``summary.json`` and ``summary.md`` (recall and beam time of the restored and the raw
   decision side by side, the restoration's method and figures).
Every process started is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MAX_ROIS = 40
"""Most regions one coarse map may send to rescans (the budget usually stops first)."""

DEVICE_NAME = "asirp/restoration/1"
SERVER_INSTANCE = "control_room"


def _figure(
    path: Path,
    report: Any,
    raw_regions: list[Any],
    axes,
    fine_map: Callable[[str], np.ndarray | None],
    truth: tuple[Any, dict[str, Any]],
    element: str,
) -> None:
    """Raw map with its regions, restored map with its regions, fine maps; true hotspots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    hotspots, criteria = truth
    outcome = report.coarse_outcome
    x_um, y_um = axes
    step = float(x_um[1] - x_um[0])
    extent = (x_um[0] - step / 2, x_um[-1] + step / 2, y_um[0] - step / 2, y_um[-1] + step / 2)
    figure, panels = plt.subplots(1, 3, figsize=(16, 5.4), constrained_layout=True)
    decided = report.map_choice.map_used if report.map_choice else "raw"
    restored_title = (
        f"restored ({outcome.method}): {len(report.regions)} regions rescanned"
        if outcome.ok
        else f"restoration failed: {outcome.reason}"
    )
    titles = (
        f"raw coarse map: {len(raw_regions)} regions it would rescan (orange)",
        restored_title + ("" if decided == "restored" else " (raw map decided)"),
        "fine rescans",
    )
    images = (outcome.raw, outcome.image, outcome.image)
    for panel, title, image in zip(panels, titles, images, strict=True):
        shown = panel.imshow(image, origin="lower", extent=extent, cmap="magma")
        panel.set_title(title, fontsize=9)
        panel.set_xlabel("x (µm)")
        panel.set_ylabel("y (µm)")
        figure.colorbar(shown, ax=panel, shrink=0.8, label=f"{element} (counts at mean I0)")

    def boxes(panel, regions, colour):
        for region in regions:
            panel.add_patch(
                Rectangle(
                    (region.x_min_um, region.y_min_um),
                    region.width_um,
                    region.height_um,
                    fill=False,
                    edgecolor=colour,
                    linewidth=1.2,
                )
            )

    boxes(panels[0], raw_regions, "orange")
    boxes(panels[1], report.regions, "cyan")
    boxes(panels[2], report.regions, "cyan")
    for uid, region in zip(report.fine_uids, report.regions, strict=False):
        fine = fine_map(uid)
        if fine is None:
            continue
        rows, cols = fine.shape
        fine_step = report.fine_step_um
        panels[2].imshow(
            fine,
            origin="lower",
            cmap="magma",
            extent=(
                region.x_min_um - fine_step / 2,
                region.x_min_um + (cols - 0.5) * fine_step,
                region.y_min_um - fine_step / 2,
                region.y_min_um + (rows - 0.5) * fine_step,
            ),
        )
    for spot in hotspots:
        if spot.element != element:
            continue
        relevant = (
            spot.radius_um >= criteria["min_radius_um"]
            and spot.concentration >= criteria["min_concentration"]
        )
        for panel in panels[:2]:
            panel.add_patch(
                Circle(
                    (spot.centre_um[1], spot.centre_um[0]),
                    spot.radius_um,
                    fill=False,
                    edgecolor="lime" if relevant else "grey",
                    linewidth=1.2 if relevant else 0.6,
                )
            )
    for panel in panels:
        panel.set_xlim(extent[0], extent[1])
        panel.set_ylim(extent[2], extent[3])
    figure.suptitle(
        f"true {element} hotspots: green must be found (radius >= "
        f"{criteria['min_radius_um']:g} µm, peak >= {criteria['min_concentration']:g} µg/cm²), "
        "grey smaller or fainter",
        fontsize=10,
    )
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_control_room(
    output: str | Path,
    *,
    seed: int = 0,
    element: str = "Se",
    beam_fwhm_um: float = 50.0,
    field_um: float = 800.0,
    coarse_step_um: float | None = None,
    target_resolution_um: float = 20.0,
    budget_fraction: float = 1.0 / 3.0,
    method: str = "richardson_lucy",
    min_radius_um: float = 10.0,
    min_concentration: float = 3.0,
    use_tango: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the loop and write the report; return the summary (also in ``summary.json``).

    Parameters
    ----------
    output : str or Path
        Output folder (Tango database file, tiled data, figures, summary).
    seed : int
        Seed of the simulated sample and counts.
    element : str
        Element whose map drives the rescans.
    beam_fwhm_um, field_um, target_resolution_um : float
        Beam, scanned field (square, centred) and wanted resolution, µm.
    coarse_step_um : float, optional
        Coarse step, µm; default half the beam FWHM (a map restoration can use).
        ``bench/eval_adaptive.py`` measures which step needs least beam time.
    budget_fraction : float
        Total beam time allowed (coarse + rescans) as a fraction of a full fine scan.
    method : str
        Restoration method of the device and the live restorer.
    min_radius_um, min_concentration : float
        Hotspots that must be found (µm, µg/cm²), for the recall figures.
    use_tango : bool
        Restore the coarse map on the Tango device (``False``: in-process live restorer).
    log : callable
        Progress messages.
    """
    import bluesky.plan_stubs  # noqa: F401  (imported early: the RunEngine's loop needs it)
    from bluesky import RunEngine

    import sim
    from bluesky_plans.adaptive import AdaptiveReport, adaptive_roi_scan
    from bluesky_plans.budget import StageTiming, fine_step_um, grid_scan_time_s
    from bluesky_plans.maps import LiveMaps
    from bluesky_plans.presets import adaptive_options
    from callbacks import EmbeddedTiledServer, LiveRestorer, derived_runs, raw_run_writer
    from control_room.evaluation import decide_on_raw, score_regions

    if not 0 < budget_fraction <= 1:
        raise ValueError(f"budget_fraction must be in (0, 1], got {budget_fraction}")
    if coarse_step_um is None:
        coarse_step_um = beam_fwhm_um / 2.0
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stack: list[Callable[[], None]] = []
    try:
        # first: the device is told where to write its derived runs when it is registered
        tiled_server = EmbeddedTiledServer(folder / "tiled")
        stack.append(tiled_server.close)
        catalog = tiled_server.client()
        log(f"tiled: {tiled_server.uri.split('?')[0]} writing to {tiled_server.directory}")
        if use_tango:
            data_root = folder / "data"
            data_root.mkdir(exist_ok=True)
            tango_host = start_device_server(
                stack,
                folder,
                SERVER_INSTANCE,
                tiled_server,
                {
                    "DataRoot": str(data_root.resolve()),
                    "DefaultMethod": method,
                    "DefaultBeamFwhmUm": str(beam_fwhm_um),  # live mode's PSF
                    "LiveEveryRows": "0",  # final maps only: no decision uses a partial one
                },
            )
            log(f"Tango: database {tango_host}, device {DEVICE_NAME} running")

        beamline = sim.make_beamline(
            "tissue", beam_fwhm_um=beam_fwhm_um, seed=seed, field_um=field_um
        )
        engine = RunEngine({})
        engine.subscribe(raw_run_writer(catalog))
        if use_tango:
            field = f"{beamline.xrf.name}_{element}"
            maps: Any = _tango_live(stack, engine, tango_host, field, catalog, log)
            fine_map = functools.partial(_stored_fine_map, catalog, maps.raw_maps)
        else:
            restorer = LiveRestorer(
                element=element, normalize="i0", method=method, every_rows=4, tiled=catalog
            )
            stack.append(lambda: restorer.close(60))
            engine.subscribe(restorer)
            maps = LiveMaps(restorer, tiled=catalog)
            fine_map = functools.partial(_live_fine_map, restorer)

        half = (field_um / 2) - beam_fwhm_um
        span = 2 * half
        timing = StageTiming(dwell_s=beamline.xrf.dwell_time.get(), velocity_um_s=1000.0)
        fine_step = fine_step_um(beam_fwhm_um, target_resolution_um, coarse_step_um)
        full_fine_s = grid_scan_time_s(span, span, fine_step, timing)
        coarse_s = grid_scan_time_s(span, span, coarse_step_um, timing)
        budget_s = budget_fraction * full_fine_s - coarse_s
        if budget_s <= 0:
            raise ValueError("the coarse scan alone exceeds the beam-time budget")
        report = AdaptiveReport()
        clock_start = beamline.clock.now
        log(
            f"adaptive scan: {span:.0f} µm field, coarse {coarse_step_um:g} µm, fine "
            f"{fine_step:g} µm, budget {budget_s:.0f} s for rescans"
        )
        engine(
            adaptive_roi_scan(
                beamline.detectors,
                beamline.x,
                beamline.y,
                (-half, half),
                (-half, half),
                coarse_step_um,
                maps=maps,
                beam_fwhm_um=beam_fwhm_um,
                target_resolution_um=target_resolution_um,
                timing=timing,
                max_rois=MAX_ROIS,
                budget_s=budget_s,
                report=report,
                md={"sample": "tissue", "element": element},
                **adaptive_options(beam_fwhm_um=beam_fwhm_um, step_um=coarse_step_um),
            )
        )
        simulated_s = beamline.clock.now - clock_start
        if use_tango:
            _wait_for_live_results(maps.client.get_trl(), report.uids, 120.0)
        else:
            restorer.wait(120)

        outcome = report.coarse_outcome
        choice = report.map_choice
        x_axis = -half + coarse_step_um * np.arange(outcome.raw.shape[1])
        y_axis = -half + coarse_step_um * np.arange(outcome.raw.shape[0])
        area = (-half, half, -half, half)
        raw_regions, raw_fine_s = decide_on_raw(
            outcome.raw,
            (x_axis, y_axis),
            beam_fwhm_um=beam_fwhm_um,
            coarse_step_um=coarse_step_um,
            fine_step_um=fine_step,
            timing=timing,
            budget_s=budget_s,
            bounds_um=area,
            max_rois=MAX_ROIS,
        )
        truth = beamline.truth.hotspots
        criteria = {
            "element": element,
            "area_um": area,
            "min_radius_um": min_radius_um,
            "min_concentration": min_concentration,
        }
        decisions = {
            f"{choice.map_used} map (rescanned)": (report.regions, report.estimated_fine_s),
            "raw map (what it would have rescanned)": (raw_regions, raw_fine_s),
        }
        comparison = {
            name: {
                **score_regions(regions, truth, **criteria).as_dict(),
                "beam_time_fraction": (coarse_s + fine_s) / full_fine_s,
            }
            for name, (regions, fine_s) in decisions.items()
        }
        derived = derived_runs(catalog, report.coarse_uid)
        summary = {
            "sample": "tissue",
            "element": element,
            "seed": seed,
            "beam_fwhm_um": beam_fwhm_um,
            "field_um": span,
            "coarse_step_um": coarse_step_um,
            "fine_step_um": fine_step,
            "restoration": {
                "where": "Tango device" if use_tango else "in-process live restorer",
                **outcome.describe(),
                "map_used": choice.map_used,
                "map_choice_reason": choice.reason or None,
                "restoration_change": choice.change,
                "metrics": outcome.metrics,
            },
            "regions": [region.as_dict() for region in report.regions],
            "raw_map_regions": [region.as_dict() for region in raw_regions],
            "regions_skipped_for_budget": len(report.skipped),
            "run_uids": report.uids,
            "derived_runs_in_tiled_for_coarse_run": len(derived),
            "hotspots": {
                "criteria": f"{element} hotspots with radius >= {min_radius_um:g} µm and "
                f"peak >= {min_concentration:g} µg/cm² inside the field; found when a fine "
                "scan covers the centre",
                **comparison,
            },
            "beam_time_s": {
                "full_fine_scan_estimate": full_fine_s,
                "coarse_estimate": coarse_s,
                "rescans_estimate": report.estimated_fine_s,
                "adaptive_estimate": coarse_s + report.estimated_fine_s,
                "adaptive_simulated_clock": simulated_s,
                "fraction_of_full_estimate": (coarse_s + report.estimated_fine_s) / full_fine_s,
                "saved_estimate": full_fine_s - coarse_s - report.estimated_fine_s,
            },
            "wall_time_s": time.perf_counter() - started,
        }
        _figure(
            folder / "control_room.png",
            report,
            raw_regions,
            (x_axis, y_axis),
            fine_map,
            (truth, criteria),
            element,
        )
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (folder / "summary.md").write_text(_markdown(summary))
        return summary
    finally:
        for stop in reversed(stack):
            try:
                stop()
            except Exception as error:  # keep stopping the rest
                log(f"while stopping: {type(error).__name__}: {error}")


def start_device_server(
    stack: list[Callable[[], None]],
    folder: Path,
    instance: str,
    tiled_server: Any,
    properties: dict[str, str],
) -> str:
    """An embedded sqlite Tango database and the ASIRP device server in child processes.

    The device writes its derived runs to ``tiled_server`` (``TiledUri``; the API key goes by
    environment, never into the database). Each thing started is pushed on ``stack`` to be
    stopped in reverse order.

    Returns
    -------
    str
        The database's ``TANGO_HOST`` (``"127.0.0.1:PORT"``).
    """
    from asirp_device.embedded import EmbeddedDatabase, ServerProcess, register_device

    database = EmbeddedDatabase(folder / "tango.db", port=0)
    tango_host = database.start()
    stack.append(database.stop)
    register_device(
        tango_host,
        DEVICE_NAME,
        instance,
        {**properties, "TiledUri": tiled_server.uri.split("?")[0]},
    )
    server = ServerProcess(
        tango_host,
        instance,
        listen_host="127.0.0.1",
        environment={"TILED_API_KEY": tiled_server.api_key},
    )
    server.start(DEVICE_NAME)
    stack.append(server.stop)
    return tango_host


def _tango_live(
    stack: list[Callable[[], None]],
    engine: Any,
    tango_host: str,
    field: str,
    catalog: Any,
    log: Callable[[str], None],
) -> Any:
    """The device's live mode on this RunEngine's documents; the plan's ``TangoMaps``.

    A 0MQ proxy (child process, 127.0.0.1), a msgpack ``Publisher`` subscribed to ``engine``,
    ``StartLive`` on the device (it restores every map run once and writes its derived run to
    tiled), and an in-process raw-map assembler (no restoration) for the raw map and the
    fallback. Each thing started is pushed on ``stack`` to be stopped in reverse order.
    """
    import tango
    from bluesky.callbacks.zmq import Publisher
    from ophyd_async.core import init_devices

    from asirp_device.client import ASIRPClient
    from asirp_device.document_proxy import DocumentProxyProcess, handshake
    from bluesky_plans.maps import TangoMaps
    from callbacks.raw_maps import RawMaps
    from callbacks.serialization import serializer

    proxy = DocumentProxyProcess()
    proxy.start()
    stack.append(proxy.stop)
    publisher = Publisher(proxy.in_address, serializer=serializer)
    stack.append(publisher.close)
    trl = f"tango://{tango_host}/{DEVICE_NAME}"
    device = tango.DeviceProxy(trl)
    device.live_field, device.live_normalize = field, "i0"
    device.StartLive(proxy.out_address)
    stack.append(device.StopLive)
    handshake(publisher, lambda: device.live_documents)  # no scan document is lost
    engine.subscribe(publisher)
    raw_maps = RawMaps(field, normalize="i0")  # what the device maps, assembled here
    engine.subscribe(raw_maps)
    with init_devices():
        client = ASIRPClient(trl, name="asirp")
    log(f"Tango: live mode of {DEVICE_NAME} on the 0MQ proxy {proxy.out_address} ({field})")
    return TangoMaps(client, raw_maps, tiled=catalog)


def _wait_for_live_results(trl: str, uids: list[str], timeout_s: float) -> None:
    """Wait until the device's live mode is done with each run (final result or failure)."""
    import tango

    device = tango.DeviceProxy(trl)
    deadline = time.monotonic() + timeout_s
    for uid in uids:
        while time.monotonic() < deadline:
            try:
                device.LiveResultOf(uid)
            except tango.DevFailed as error:
                if error.args[0].reason in ("ASIRP_NotReady", "ASIRP_UnknownRun"):
                    time.sleep(0.05)
                    continue
            break


def _stored_fine_map(catalog: Any, raw_maps: Any, uid: str) -> np.ndarray | None:
    """A fine run's map as the device restored and stored it in tiled, else its raw map."""
    from callbacks.publish import derived_runs, read_final_map

    runs = list(derived_runs(catalog, uid).values())
    if runs:
        try:
            return read_final_map(runs[-1])
        except LookupError:  # its restoration failed: show it raw
            pass
    return raw_maps.raw_map(uid)


def _live_fine_map(restorer: Any, uid: str) -> np.ndarray | None:
    """A fine run's map from the in-process live restorer (restored, else raw)."""
    result = restorer.latest_for(uid)
    if result is None:
        return None
    return result.restored_map if result.ok else result.raw_map


def _markdown(summary: dict[str, Any]) -> str:
    beam = summary["beam_time_s"]
    hot = summary["hotspots"]
    restoration = summary["restoration"]
    why = restoration["fallback_reason"] or restoration["map_choice_reason"]
    lines = [
        f"# ASIRP control-room loop: {summary['sample']} sample, {summary['element']} map",
        "",
        f"- Beam {summary['beam_fwhm_um']:g} µm FWHM; field {summary['field_um']:g} µm; "
        f"coarse step {summary['coarse_step_um']:g} µm; fine step {summary['fine_step_um']:g} µm",
        f"- Coarse map restored once, by the {restoration['where']} (method "
        f"{restoration['method']}); the {restoration['map_used']} map decided"
        + (f" ({why})" if why else ""),
        f"- {len(summary['regions'])} regions rescanned "
        f"({summary['regions_skipped_for_budget']} skipped for the budget)",
        f"- Hotspots: {hot['criteria']}",
        "",
        "| decision | recall | found | false regions | beam time (of a full fine scan) |",
        "|---|---|---|---|---|",
    ]
    for key in [key for key in hot if key != "criteria"]:
        score = hot[key]
        lines.append(
            f"| {key} | {score['recall']:.0%} | {score['found']}/{score['relevant']} | "
            f"{score['false_regions']} of {score['regions']} | "
            f"{score['beam_time_fraction']:.0%} |"
        )
    lines += [
        "",
        f"- Beam time (estimate): coarse {beam['coarse_estimate']:.0f} s + rescans "
        f"{beam['rescans_estimate']:.0f} s = {beam['adaptive_estimate']:.0f} s, vs a full fine "
        f"scan {beam['full_fine_scan_estimate']:.0f} s ({beam['fraction_of_full_estimate']:.0%}; "
        f"saved {beam['saved_estimate']:.0f} s); simulated clock "
        f"{beam['adaptive_simulated_clock']:.0f} s",
        f"- Wall time {summary['wall_time_s']:.0f} s",
        "",
    ]
    return "\n".join(lines)

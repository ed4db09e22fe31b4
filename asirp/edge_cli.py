"""The ``asirp psf-from-edge`` command: the beam FWHM from knife-edge scans.

See :mod:`asirp.beam_edge` for the fit. ::

    asirp psf-from-edge EDGE [EDGE2] [--axis vertical|horizontal] [--focus-series]
                        [-o beam.json] [--overwrite] [--plot FIG.png]

One file gives one FWHM (the axis it measured with ``--axis``); two files are the vertical then
the horizontal scan and give the ``vertical horizontal`` pair that ``beam_fwhm_um`` takes. With
``--focus-series`` each file holds scans at several focus positions (a third column z, µm) and
the FWHM is the one at the best focus. ``-o`` writes the beam file that
:func:`asirp.beam_file.beam_from_json` reads; ``--plot`` a figure of the data and the fits.
Nothing existing is replaced without ``--overwrite``, and an input never.

This module is imported by ``asirp``'s parser for every command, so it stays light: the fit
(scipy, h5py through :mod:`asirp.io`) and matplotlib are imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``psf-from-edge`` to the ``asirp`` sub-commands."""
    parser = commands.add_parser(
        "psf-from-edge",
        help="beam FWHM from a knife-edge scan",
        description="Fit the edge spread function (erfc) of knife-edge scans and report the beam "
        "FWHM in µm with its uncertainty; one file per axis (vertical, then horizontal). Input: "
        "text/CSV columns 'position_um signal [z_um]', .npy (n, 2|3), or HDF5 file.h5::/dataset.",
    )
    parser.add_argument("edges", nargs="+", metavar="EDGE", help="edge scan file(s): 1 or 2")
    parser.add_argument(
        "--axis",
        choices=("vertical", "horizontal"),
        help="the axis a single file measured (two files are vertical, then horizontal)",
    )
    parser.add_argument(
        "--focus-series",
        action="store_true",
        help="each file holds scans at several focus positions (third column z, µm): report the "
        "FWHM at the best focus",
    )
    parser.add_argument("-o", "--output", metavar="BEAM.json", help="write the beam file")
    parser.add_argument("--plot", metavar="FIG.png", help="save a figure of the data and fits")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output or figure (never an input)",
    )
    parser.set_defaults(handler=_command)


def _check_targets(
    targets: Sequence[tuple[str, Path]], inputs: Sequence[Path], *, overwrite: bool
) -> None:
    """Refuse, before any work, outputs that are inputs, folders, or exist without overwrite.

    The writes check again atomically (:func:`asirp.safe_files.atomic_write`).
    """
    from asirp.safe_files import file_identity

    protected = {identity for identity in map(file_identity, inputs) if identity is not None}
    for label, target in targets:
        identity = file_identity(target)
        if identity is None:
            continue
        if identity in protected:
            raise ValueError(f"{label} {target} is an input file; choose another path")
        if target.is_dir():
            raise ValueError(f"{label} {target} is a folder; give a file name")
        if not overwrite:
            raise ValueError(f"{label} {target} already exists; use --overwrite to replace it")
    if len(targets) == 2 and targets[0][1].resolve() == targets[1][1].resolve():
        raise ValueError("--plot and --output name the same file; choose another figure path")


def _describe(measurements: Sequence[Any]) -> str:
    """``FWHM v x h µm ± dv x dh µm (vertical x horizontal)`` and the focus, in one line."""
    values = " x ".join(f"{m.fwhm_um:.4g}" for m in measurements)
    errors = " x ".join(f"{m.fwhm_uncertainty_um:.2g}" for m in measurements)
    axes = " x ".join(m.axis or "one axis" for m in measurements)
    line = f"FWHM {values} µm ± {errors} µm ({axes})"
    foci = [
        f"{m.axis or 'best'} focus at z = {m.best_z_um:.4g} ± {m.best_z_uncertainty_um:.2g} µm"
        for m in measurements
        if hasattr(m, "best_z_um")
    ]
    if foci:
        line += "; " + ", ".join(foci)
    return line


def _fit_lines(measurements: Sequence[Any]) -> list[str]:
    """One line per edge fit: where, FWHM, edge position, reduced chi-square."""
    lines = []
    for measurement in measurements:
        fits = getattr(measurement, "fits", (measurement,))
        for fit in fits:
            focus = f" z={fit.z_um:g} µm" if fit.z_um is not None else ""
            lines.append(
                f"  {fit.source}{focus}: FWHM {fit.fwhm_um:.4g} ± {fit.fwhm_uncertainty_um:.2g} "
                f"µm, edge at {fit.x0_um:.6g} µm, {fit.n_points} points, reduced chi2 "
                f"{fit.reduced_chi2:.3g} ({fit.weights} weights)"
            )
    return lines


def edge_figure(measurements: Sequence[Any], stream: Any) -> None:
    """Draw each measurement (edge data and fit, or a focus series' caustic) as a PNG.

    Parameters
    ----------
    measurements : sequence of EdgeFit or FocusSeries
        One panel each.
    stream : binary file
        Where the PNG goes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from asirp.beam_file import read_edge_scan

    figure, axes = plt.subplots(1, len(measurements), figsize=(5.2 * len(measurements), 4.0))
    for panel, measurement in zip(np.atleast_1d(axes), measurements, strict=True):
        title = measurement.axis or "beam"
        if hasattr(measurement, "best_z_um"):
            z = np.array([fit.z_um for fit in measurement.fits])
            fwhm = np.array([fit.fwhm_um for fit in measurement.fits])
            error = np.array([fit.fwhm_uncertainty_um for fit in measurement.fits])
            fine = np.linspace(z.min(), z.max(), 200)
            panel.errorbar(z, fwhm, yerr=error, fmt="o", label="edge fits")
            panel.plot(fine, measurement.caustic(fine), label="caustic")
            panel.set_xlabel("focus z (µm)")
            panel.set_ylabel("FWHM (µm)")
            title += (
                f": {measurement.fwhm_um:.3g} ± {measurement.fwhm_uncertainty_um:.2g} µm at "
                f"z = {measurement.best_z_um:.4g} µm"
            )
        else:
            scan = read_edge_scan(measurement.source)
            order = np.argsort(scan.position_um)
            x, y = scan.position_um[order], scan.signal[order]
            fine = np.linspace(x.min(), x.max(), 400)
            panel.plot(x, y, "o", markersize=3, label="data")
            panel.plot(fine, measurement.model(fine), label="erfc fit")
            panel.set_xlabel("position (µm)")
            panel.set_ylabel("signal")
            title += f": FWHM {measurement.fwhm_um:.3g} ± {measurement.fwhm_uncertainty_um:.2g} µm"
        panel.set_title(title)
        panel.legend()
    figure.tight_layout()
    figure.savefig(stream, format="png", dpi=110)
    plt.close(figure)


def _command(args: argparse.Namespace) -> None:
    from asirp.beam_edge import AXES
    from asirp.beam_file import measure_edge_file, write_beam_json
    from asirp.io import split_hdf5_path
    from asirp.safe_files import atomic_write, file_identity

    if len(args.edges) > 2:
        raise ValueError(
            f"give one edge scan or two (vertical, then horizontal), got {len(args.edges)}"
        )
    if len(args.edges) == 2 and args.axis is not None:
        raise ValueError(
            "--axis names the axis of a single file; two files are vertical, then horizontal"
        )
    axes = [args.axis] if len(args.edges) == 1 else list(AXES)
    inputs = [split_hdf5_path(name)[0] for name in args.edges]
    targets = [("output", Path(args.output))] if args.output else []
    if args.plot:
        targets.append(("--plot", Path(args.plot)))
    _check_targets(targets, inputs, overwrite=args.overwrite)

    measurements = [
        measure_edge_file(name, axis=axis, focus_series=args.focus_series)
        for name, axis in zip(args.edges, axes, strict=True)
    ]
    print(_describe(measurements))
    for line in _fit_lines(measurements):
        print(line)
    protect = [os.fspath(path) for path in inputs]
    hint = "use --overwrite to replace it"
    if args.output:
        write_beam_json(
            args.output, measurements, overwrite=args.overwrite, protect=protect, hint=hint
        )
        print(f"beam file -> {args.output}")
    if args.plot:
        guarded = [*protect, file_identity(args.output) if args.output else None]
        with atomic_write(args.plot, overwrite=args.overwrite, protect=guarded, hint=hint) as out:
            edge_figure(measurements, out.file)
        print(f"figure -> {args.plot}")

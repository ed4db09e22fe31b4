"""The ``asirp`` command line: list methods, restore files, run the demo.

Exit status: 0 on success, 2 for bad input or usage (with a one-line message on stderr), 1 for
an unexpected failure.

The adapter packages (Tango device, live callbacks, plans, simulator) add their own
sub-commands (``asirp serve``, ``asirp live``, ...) without the core importing them: each one
declares an entry point in the group ``asirp.commands`` whose value is a function
``register(subcommands)``. It receives the ``argparse`` sub-parser collection, adds its parser,
and sets ``handler=`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit
status or ``None``) with ``set_defaults``. Keep the registering module light: import the heavy
control-system packages inside the handler, so ``asirp methods`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from asirp._version import __version__
from asirp.edge_cli import register as register_psf_from_edge
from asirp.methods.blind_richardson_lucy import BlindWidthWarning
from asirp.plotting import before_after_figure
from asirp.registry import method_specs
from asirp.replay_cli import register as register_replay
from asirp.restore import restore
from asirp.safe_files import atomic_write, file_identity
from asirp.sr.consistency import ConsistencyWarning
from asirp.sr.train import TRAINABLE, TrainSettings, train
from asirp.threads import THREADS_VARIABLE, apply_thread_budget
from asirp.tomo_cli import register as register_tomo

# The commands that read or write HDF5 (restore, xrf-map, demo) import asirp.io, asirp.xrf and
# asirp.demo when they run: those load h5py (about 0.2 s, measured with ``python -X
# importtime``), which ``asirp methods`` and the adapters' sub-commands do not need.

EXIT_BAD_INPUT = 2
COMMAND_ENTRY_POINT_GROUP = "asirp.commands"


class UsageError(ValueError):
    """A command-line usage problem, reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, status 2
        raise UsageError(message)


def _methods_help() -> str:
    lines = []
    for spec in method_specs():
        psf = "needs PSF" if spec.needs_psf else "no PSF"
        lines.append(f"{spec.name}  [{spec.family}, {psf}, scale {spec.scale}]  {spec.summary}")
        for parameter in spec.parameters:
            default = "auto" if parameter.default is None else parameter.default
            lines.append(
                f"    {parameter.name}={default}  {parameter.describe_range()}  {parameter.doc}"
            )
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "auto"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs of ``--param`` options as method parameters.

    Values become bool (``true``/``false``), ``None`` (``none``/``auto``), int or float when
    they parse as such, else stay strings.

    Raises
    ------
    UsageError
        For a pair without ``=``.
    """
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--param expects NAME=VALUE, got {pair!r}")
        name, value = pair.split("=", 1)
        params[name.strip()] = _parse_value(value)
    return params


def _pair_or_scalar(values: Sequence[float] | None) -> float | tuple[float, ...] | None:
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``asirp`` command."""
    parser = _Parser(prog="asirp", description="Adaptable synchrotron image restoration.")
    parser.add_argument("--version", action="version", version=f"asirp {__version__}")
    parser.add_argument(
        "--threads",
        dest="thread_budget",
        type=int,
        default=None,
        metavar="N",
        help="use at most N threads in all (torch, numba and BLAS together), also in the "
        "servers this command starts (sets ASIRP_NUM_THREADS; default: that variable, else "
        "every core this process may use). On a control-room machine shared with the "
        "RunEngine, leave it a core: for example --threads 3 on 4 cores",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("methods", help="list the methods, their families and parameters")

    restore = commands.add_parser(
        "restore",
        help="restore an image or stack from a file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="methods and their parameters (use --param NAME=VALUE):\n" + _methods_help(),
    )
    restore.add_argument("input", help="input .npy, .tif/.tiff, or HDF5 as file.h5::/dataset")
    restore.add_argument("-o", "--output", required=True, help="output HDF5 file")
    restore.add_argument("-m", "--method", default="auto", help="method name or 'auto'")
    psf = restore.add_argument_group("PSF (one of)")
    psf.add_argument(
        "--beam-fwhm-um",
        type=float,
        nargs="+",
        metavar="F",
        help="beam FWHM in µm (one value, or vertical horizontal)",
    )
    psf.add_argument(
        "--pixel-um",
        type=float,
        nargs="+",
        metavar="P",
        help="scan step in µm (one value, or between-lines along-line)",
    )
    psf.add_argument(
        "--beam-from-edge",
        metavar="BEAM.json",
        help="beam FWHM measured by 'asirp psf-from-edge' (with --pixel-um; recorded in the "
        "provenance)",
    )
    psf.add_argument("--psf", metavar="FILE", help="PSF file (.npy, .tif, file.h5::/dataset)")
    psf.add_argument(
        "--psf-sigma-px",
        type=float,
        nargs="+",
        metavar="S",
        help="Gaussian PSF sigma in pixels (one value, or rows columns)",
    )
    restore.add_argument("--iterations", type=int, help="iteration count (maximum with auto-stop)")
    restore.add_argument(
        "--counts-gain",
        type=float,
        metavar="G",
        help="values per detected count (e.g. 1/I0 of a normalised map), for the Poisson stop "
        "rule; default: 1 for integer counts, else estimated from the noise",
    )
    restore.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any method parameter, repeatable",
    )
    restore.add_argument("--device", default="auto", help="auto, cpu or cuda")
    restore.add_argument("--reference", help="ground truth file, for PSNR/SSIM")
    restore.add_argument("--plot", metavar="FIGURE.png", help="save a before/after figure")
    restore.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file or figure (never the input files)",
    )

    demo = commands.add_parser("demo", help="restore a built-in simulated µ-XRF mesh map")
    demo.add_argument("-o", "--output", default="out/demo", help="output folder (out/demo)")
    demo.add_argument("-m", "--method", default="auto", help="method name or 'auto'")
    demo.add_argument("--seed", type=int, default=0, help="seed of the simulated noise")
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda")

    _add_xrf_map_parser(commands)
    _add_train_parser(commands)
    register_psf_from_edge(commands)
    register_replay(commands)
    register_tomo(commands)

    for entry_point in sorted(
        entry_points(group=COMMAND_ENTRY_POINT_GROUP), key=lambda entry: entry.name
    ):
        entry_point.load()(commands)
    return parser


def _add_train_parser(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train a super-resolution network (fca_sr, beam_sr, rrdb_sr) on synthetic X-ray-like "
        "data",
        description="Train fca_sr, beam_sr (told the beam) or rrdb_sr weights with ASIRP's "
        "synthetic data and write them "
        "as .safetensors (asirp.sr.train). Uses a CUDA GPU when present (larger preset); runs on "
        "the CPU with a smaller preset. Unset sizes come from the device's preset.",
    )
    train.add_argument("arch", choices=TRAINABLE, help="architecture")
    train.add_argument("--scale", type=int, default=2, choices=(2, 4), help="upscaling factor")
    train.add_argument("-o", "--output", required=True, help="output .safetensors file")
    train.add_argument("--steps", type=int, help="optimiser steps")
    train.add_argument("--batch", type=int, help="maps per batch")
    train.add_argument("--patch", type=int, help="fine-grid patch side, px")
    train.add_argument("--pool", type=int, help="structures kept in the data pool")
    train.add_argument("--learning-rate", type=float, default=2e-3, help="peak learning rate")
    train.add_argument("--seed", type=int, default=0, help="seed of data, weights and noise")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda")
    train.add_argument("--threads", type=int, help="CPU threads for torch")
    train.add_argument("--time-limit-s", type=float, help="stop and save after this many seconds")
    train.set_defaults(handler=_command_train)


def _command_train(args: argparse.Namespace) -> None:
    settings = TrainSettings(
        arch=args.arch,
        scale=args.scale,
        output=args.output,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        pool=args.pool,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        time_limit_s=args.time_limit_s,
    )
    for name in ("steps", "batch", "patch", "pool", "threads"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    train(settings, log=lambda line: print(line, flush=True))


def _add_xrf_map_parser(commands: Any) -> None:
    xrf = commands.add_parser(
        "xrf-map",
        help="element map from a raw µ-XRF scan (ASIRP HDF5, APS MDA or fly scan, Diamond "
        "Xspress3 NeXus), exported and optionally restored",
        description="Make an element map from a raw µ-XRF scan: the ASIRP raw HDF5 "
        "(asirp.xrf.raw layout, reading only the ROI channels), an APS step scan (.mda), an APS "
        "XRF-Maps fly scan (HDF5 spectra with its companion .mda, found by name or given with "
        "--companion) or a Diamond Xspress3 NeXus file (the format is found from the file's "
        "contents); write OUT/map.h5 (NeXus), map.txt (x y counts), map.png, "
        "summary.json and, with --restore, restored.txt, restored.png and fluctuation.png. "
        "Settings may come from --config FILE.toml (see examples/xrf-map.toml); flags override.",
    )
    xrf.add_argument(
        "raw", nargs="?", help="raw scan file: .h5, .mda, .nxs (or 'raw' in the config)"
    )
    xrf.add_argument(
        "--companion",
        metavar="FILE",
        help="the MDA file of an APS fly scan (positions, I0), when not found next to it",
    )
    xrf.add_argument("-o", "--output", help="output folder (or 'output' in the config)")
    xrf.add_argument("--config", metavar="FILE.toml", help="settings file (TOML)")
    xrf.add_argument("--element", help="chemical symbol, e.g. Cu")
    xrf.add_argument("--line", help="emission line: Ka (default), Kb, La, Lb, Ma1, ...")
    xrf.add_argument(
        "--channels", type=int, nargs=2, metavar=("FIRST", "LAST"), help="explicit ROI channels"
    )
    xrf.add_argument("--normalize", choices=("i0", "ar", "none"), help="flux normalisation")
    xrf.add_argument(
        "--dead-time",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="correct counts by real/live time",
    )
    xrf.add_argument(
        "--detectors",
        type=int,
        nargs="+",
        metavar="D",
        help="elements to sum (default: all but those with no signal or anomalous dead time)",
    )
    xrf.add_argument(
        "--background",
        choices=("linear", "snip", "none"),
        help="continuum under the ROI: linear (net counts from side windows, default), snip "
        "(SNIP on the summed spectrum) or none (plain channel sums)",
    )
    xrf.add_argument(
        "--fit-config",
        metavar="FILE.cfg",
        help="PyMca fit configuration: map the element's fitted peak areas (PyMca's fast "
        "linear fit) instead of ROI counts",
    )
    xrf.add_argument(
        "--threshold", type=float, nargs=2, metavar=("LOW", "HIGH"), help="clip the map, counts"
    )
    xrf.add_argument("--cmap", help="matplotlib colour map (viridis)")
    xrf.add_argument("--restore", metavar="METHOD", help="restore the map (method or 'auto')")
    xrf.add_argument(
        "--beam-fwhm-um", type=float, nargs="+", metavar="F", help="beam FWHM in µm (1 or 2)"
    )
    xrf.add_argument(
        "--beam-from-edge",
        metavar="BEAM.json",
        help="the beam measured by 'asirp psf-from-edge' (recorded in the provenance)",
    )
    xrf.add_argument(
        "--calibration",
        type=float,
        nargs=2,
        metavar=("OFFSET_KEV", "GAIN_KEV"),
        help="energy = offset + gain * channel, keV, instead of the file's (for files without one)",
    )
    xrf.add_argument(
        "--maps-override",
        metavar="FILE",
        help="a MAPS maps_fit_parameters_override.txt: use the calibration MAPS fitted",
    )
    xrf.add_argument(
        "--psf-sigma-px", type=float, nargs="+", metavar="S", help="Gaussian PSF sigma in px"
    )
    xrf.add_argument("--iterations", type=int, help="iteration count (maximum with auto-stop)")
    xrf.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter"
    )
    xrf.add_argument("--device", help="auto, cpu or cuda")
    xrf.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files in OUT (never the raw scan)",
    )
    xrf.set_defaults(handler=_command_xrf_map)


def _command_xrf_map(args: argparse.Namespace) -> None:
    from asirp.xrf.config import XRFMapConfig, read_config  # lazy: h5py (see the imports)
    from asirp.xrf.workflow import run_xrf_map

    config = read_config(args.config) if args.config else XRFMapConfig()
    threshold = args.threshold or (None, None)
    config = config.override(
        companion=args.companion,
        element=args.element,
        line=args.line,
        channels=args.channels,
        normalize=args.normalize,
        dead_time=args.dead_time,
        detectors=args.detectors,
        background=args.background,
        fit_config=args.fit_config,
        threshold_low=threshold[0],
        threshold_high=threshold[1],
        colormap=args.cmap,
        restore_method=args.restore,
        beam_fwhm_um=_pair_or_scalar(args.beam_fwhm_um),
        beam_file=args.beam_from_edge,
        calibration_kev=args.calibration,
        maps_override=args.maps_override,
        psf_sigma_px=_pair_or_scalar(args.psf_sigma_px),
        iterations=args.iterations,
        restore_params=parse_params(args.param) or None,
        device=args.device,
    )
    summary = run_xrf_map(config, args.raw, args.output, overwrite=args.overwrite)
    for caution in summary["cautions"]:
        print(f"asirp: caution: {caution}", file=sys.stderr)
    info = summary["map"]
    line = (
        f"{info['label']} map {info['shape'][0]} x {info['shape'][1]} ({info['scan_kind']}, "
        f"step {info['pixel_um'][0]:g} x {info['pixel_um'][1]:g} µm), {info['units']}, "
        f"mean {info['mean']:.4g}"
    )
    if summary["restoration"] is not None:
        line += f"; restored with {summary['restoration']['method']}"
    print(f"{line} -> {summary['output']}: {', '.join(summary['files'])}, summary.json")


def _check_output(
    label: str, target: Path, protected: Sequence[tuple[int, int]], *, overwrite: bool
) -> None:
    """Refuse, before any work, an output that is an input or exists without ``--overwrite``.

    The writes check again atomically (:func:`asirp.safe_files.atomic_write`); this only saves
    a restoration whose result could not be written.
    """
    identity = file_identity(target)
    if identity is None:
        return
    if identity in protected:
        raise UsageError(f"{label} {target} is the input file; choose another output path")
    if target.is_dir():
        raise UsageError(f"{label} {target} is a folder; give a file name")
    if not overwrite:
        raise UsageError(f"{label} {target} already exists; use --overwrite to replace it")


def _command_restore(args: argparse.Namespace) -> None:
    import numpy as np

    from asirp.io import read_array, split_hdf5_path  # lazy: h5py (see the imports)
    from asirp.results_io import write_restoration

    output = Path(args.output)
    inputs = [split_hdf5_path(name)[0] for name in (args.input, args.reference, args.psf) if name]
    protected = [identity for identity in map(file_identity, inputs) if identity is not None]
    outputs = [("output", output)] + ([("--plot", Path(args.plot))] if args.plot else [])
    for label, target in outputs:
        _check_output(label, target, protected, overwrite=args.overwrite)
    if args.plot and Path(args.plot).resolve() == output.resolve():
        raise UsageError("--plot and --output name the same file; choose another figure path")
    image = read_array(args.input)
    params = parse_params(args.param)
    if args.iterations is not None:
        params["iterations"] = args.iterations
    if args.counts_gain is not None:
        params["counts_gain"] = args.counts_gain
    reference = read_array(args.reference) if args.reference else None
    beam_fwhm_um = _pair_or_scalar(args.beam_fwhm_um)
    beam_source = None
    if args.beam_from_edge:
        from asirp.beam_file import beam_from_json  # lazy: scipy.optimize

        if beam_fwhm_um is not None:
            raise UsageError("give --beam-fwhm-um or --beam-from-edge, not both")
        beam_fwhm_um, beam_source = beam_from_json(args.beam_from_edge)

    bar = None
    if np.ndim(image) == 3 and np.shape(image)[0] > 1:
        from tqdm import tqdm

        bar = tqdm(total=100, unit="%", desc=f"restoring {np.shape(image)[0]} images")

    def report(fraction: float) -> None:
        if bar is not None:
            bar.update(round(100 * fraction) - bar.n)

    try:
        with warnings.catch_warnings():
            # the engine's own warnings (an undetermined blind beam width, an inconsistent
            # super-resolution) come back as one-line cautions below, not as Python tracebacks
            warnings.filterwarnings("ignore", category=BlindWidthWarning)
            warnings.filterwarnings("ignore", category=ConsistencyWarning)
            result = restore(
                image,
                args.method,
                psf=args.psf,
                beam_fwhm_um=beam_fwhm_um,
                pixel_um=_pair_or_scalar(args.pixel_um),
                psf_sigma_px=_pair_or_scalar(args.psf_sigma_px),
                device=args.device,
                reference=reference,
                progress=report,
                **params,
            )
    finally:
        if bar is not None:
            bar.close()
    if beam_source is not None:  # the measured beam goes into the provenance
        result.psf_description["beam_source"] = beam_source
    hint = "use --overwrite to replace it"
    write_restoration(
        output,
        result,
        input_path=args.input,
        input_image=image,
        pixel_um=_pair_or_scalar(args.pixel_um),
        overwrite=args.overwrite,
        protect=protected,
        hint=hint,
    )
    if args.plot:
        pixel = args.pixel_um[0] if args.pixel_um else None
        guarded = [*protected, file_identity(output)]
        with atomic_write(args.plot, overwrite=args.overwrite, protect=guarded, hint=hint) as out:
            before_after_figure(image, result.image, out.path, title=result.method, pixel_um=pixel)
    figures = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
    print(f"{result.method} in {result.elapsed_s:.2f} s -> {output}\n{figures}")
    for note in result.cautions():
        print(f"asirp: caution: {note}", file=sys.stderr)


def _command_demo(args: argparse.Namespace) -> None:
    from asirp.demo import run_demo  # lazy: h5py (see the imports)

    summary = run_demo(args.output, method=args.method, seed=args.seed, device=args.device)
    figures = summary["metrics"]
    print(
        f"demo: {summary['sample']}, beam {summary['beam_fwhm_um']} µm FWHM, "
        f"step {summary['step_um']} µm\n"
        f"method {summary['method']} ({summary['params'].get('auto_reason', 'chosen by user')})\n"
        f"PSNR {figures['psnr_input']:.2f} -> {figures['psnr']:.2f} dB, "
        f"SSIM {figures['ssim_input']:.3f} -> {figures['ssim']:.3f}, "
        f"contrast (std) {figures['contrast_std_input']:.1f} -> {figures['contrast_std']:.1f} "
        f"counts, in {summary['elapsed_s']:.2f} s\n"
        f"outputs in {Path(args.output).resolve()}: measured.npy, restored.h5, "
        "before_after.png, metrics.json"
    )
    print(json.dumps({"iterations_run": summary["params"].get("iterations_run")}))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``asirp`` command; return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.thread_budget is not None or os.environ.get(THREADS_VARIABLE, "").strip():
            apply_thread_budget(args.thread_budget)  # a bad ASIRP_NUM_THREADS fails here
        if args.command == "methods":
            print(_methods_help())
        elif args.command == "restore":
            _command_restore(args)
        elif args.command == "demo":
            _command_demo(args)
        else:
            status = args.handler(args)
            return 0 if status is None else int(status)
    except (ValueError, TypeError, OSError) as error:
        message = " ".join(str(error).split())
        print(f"asirp: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())

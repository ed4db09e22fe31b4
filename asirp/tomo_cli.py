"""The ``asirp tomo`` command: reconstruct a tomography scan from raw and restored projections.

``asirp tomo INPUT -o OUTPUT [--method M] [--psf-fwhm-px F | --psf-fwhm-um F --pixel-um P]
[--centre C] [--overwrite]`` reads a Data Exchange or NXtomo HDF5 scan, restores its
projections (on transmission, along the detector row) with one method for the whole scan,
reconstructs every detector row by filtered back-projection from the measured and from the
restored projections, and writes both to a NeXus file. It prints the centre, the method and
the output path, and ``asirp: caution: ...`` lines on stderr for what not to trust. Exit
status: 0 done, 2 bad input or options (one line ``asirp: error: ...``). The work is
:func:`asirp.tomo.pipeline.run_tomo`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``tomo`` to the ``asirp`` sub-commands."""
    parser = commands.add_parser(
        "tomo",
        help="reconstruct a tomography scan (Data Exchange or NXtomo) from raw and restored "
        "projections",
        description="Flat/dark-correct the projections, restore them (transmission, along the "
        "detector row, one method for the whole scan), find the rotation centre, reconstruct "
        "each detector row by filtered back-projection from the measured and from the "
        "restored projections, and write both volumes as NeXus. Exit status: 0 done, 2 bad "
        "input.",
    )
    parser.add_argument("input", help="Data Exchange or NXtomo HDF5 file")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT.h5", help="NeXus file")
    parser.add_argument(
        "--method",
        default="auto",
        help="'auto' (default; restores only with a PSF), 'none', or a method of "
        "'asirp methods' (same pixel grid)",
    )
    psf = parser.add_mutually_exclusive_group()
    psf.add_argument(
        "--psf-fwhm-px", type=float, metavar="F", help="detector PSF FWHM along the row, px"
    )
    psf.add_argument(
        "--psf-fwhm-um", type=float, metavar="F", help="detector PSF FWHM along the row, µm"
    )
    parser.add_argument(
        "--pixel-um", type=float, metavar="P", help="detector pixel, µm (default: the file's)"
    )
    parser.add_argument(
        "--centre", type=float, metavar="C", help="rotation axis, detector columns (default: found)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    engine = parser.add_argument_group(
        "distributed restoration and reconstruction (dask)",
        "the workers read and flat/dark-correct the projections from INPUT, restore them into a "
        "resumable zarr store and reconstruct both volumes into stores beside it; run again "
        "with the same options to resume an interrupted run (docs/DISTRIBUTED.md)",
    )
    engine.add_argument(
        "--workers", type=int, metavar="N", help="a LocalCluster of N worker processes"
    )
    engine.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="a running dask scheduler to use instead"
    )
    engine.add_argument(
        "--store",
        metavar="STORE.zarr",
        help="the restored projections' store (default: OUTPUT with .projections.zarr)",
    )
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> int:
    from asirp.tomo.pipeline import StackEngine, run_tomo  # lazy: h5py and scikit-image

    engine = None
    if args.workers is not None or args.scheduler is not None or args.store is not None:
        if args.workers is not None and args.scheduler is not None:
            raise ValueError("give --workers (a local cluster) or --scheduler, not both")
        store = args.store or str(Path(args.output).with_suffix(".projections.zarr"))
        engine = StackEngine(store=store, scheduler=args.scheduler, workers=args.workers)
    try:
        result = run_tomo(
            args.input,
            args.output,
            method=args.method,
            psf_fwhm_px=args.psf_fwhm_px,
            psf_fwhm_um=args.psf_fwhm_um,
            pixel_um=args.pixel_um,
            centre=args.centre,
            overwrite=args.overwrite,
            engine=engine,
        )
    except (KeyError, RuntimeError) as error:  # h5py's on a damaged file: bad input
        raise ValueError(f"cannot read {args.input}: {error}") from None
    for note in result.cautions:
        print(f"asirp: caution: {note}", file=sys.stderr)
    print(
        f"centre {result.centre_px:.2f} px ({result.centre_source}); restoration: "
        f"{result.plan.method}; {result.raw.shape[0]} slice(s) of "
        f"{result.raw.shape[1]}x{result.raw.shape[2]} px written to {result.output}"
    )
    return 0

"""The ``asirp replay`` command: re-run a result file's restoration and compare, bit for bit.

``asirp replay RESULT.h5 [--input FILE] [-o NEW.h5] [--overwrite] [--json]`` prints
``bit-identical: ...`` and exits 0, or prints the largest difference and the number of
differing pixels and exits 1; a bad file, a missing input or an input that is not the recorded
one (by sha256) exits 2 with one line ``asirp: error: ...``. Where this machine differs from
the recorded one (library versions, device, threads), ``asirp: warning: ...`` lines say so on
stderr. The work is :func:`asirp.replay.replay`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

EXIT_IDENTICAL = 0
EXIT_DIFFERENT = 1


def register(commands: Any) -> None:
    """Add ``replay`` to the ``asirp`` sub-commands."""
    parser = commands.add_parser(
        "replay",
        help="re-run a result file from its provenance and check it is bit-identical",
        description="Re-run the restoration recorded in RESULT.h5 (method, parameters, PSF, "
        "seed, device and thread count) on its input, checked by sha256, and compare the new "
        "image with the stored one bit for bit. Exit status: 0 bit-identical, 1 different, "
        "2 bad input.",
    )
    parser.add_argument("result", help="a result file written by 'asirp restore'")
    parser.add_argument(
        "--input",
        metavar="FILE",
        help="the input (.npy, .tif, file.h5::/dataset) if not at its recorded path; it must "
        "be the recorded one (same sha256)",
    )
    parser.add_argument("-o", "--output", metavar="NEW.h5", help="write the replayed result")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output file"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> int:
    from asirp.io import split_hdf5_path  # lazy: h5py, as for 'asirp restore'
    from asirp.methods.blind_richardson_lucy import BlindWidthWarning
    from asirp.replay import STORED_INPUT, replay
    from asirp.results_io import read_restoration, write_restoration
    from asirp.safe_files import file_identity
    from asirp.sr.consistency import ConsistencyWarning

    output = Path(args.output) if args.output else None
    inputs = [split_hdf5_path(name)[0] for name in (args.result, args.input) if name]
    protected = [identity for identity in map(file_identity, inputs) if identity is not None]
    if output is not None:  # refuse before the work, as 'asirp restore' does
        identity = file_identity(output)
        if identity is not None and identity in protected:
            raise ValueError(f"output {output} is the result or its input; choose another path")
        if identity is not None and not args.overwrite:
            raise ValueError(f"output {output} already exists; use --overwrite to replace it")
    with warnings.catch_warnings():
        # the engine's warnings (an undetermined blind beam width, an inconsistent
        # super-resolution) were the original run's too: the question here is bit-identity
        warnings.filterwarnings("ignore", category=BlindWidthWarning)
        warnings.filterwarnings("ignore", category=ConsistencyWarning)
        report, again = replay(args.result, input_path=args.input)
    for note in report.environment:
        print(f"asirp: warning: {note}", file=sys.stderr)
    if output is not None:
        stored = report.input_source == STORED_INPUT  # then the new file keeps a copy too
        write_restoration(
            output,
            again,
            input_path=None if stored else report.input_source,
            input_image=read_restoration(args.result)["input_image"] if stored else None,
            overwrite=args.overwrite,
            protect=protected,
            hint="use --overwrite to replace it",
        )
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    else:
        print(report.summary())
    return EXIT_IDENTICAL if report.identical else EXIT_DIFFERENT

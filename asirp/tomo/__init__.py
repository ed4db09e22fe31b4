"""Tomography in the core: read scans, restore projections, find the centre, reconstruct, write.

Modules, one job each: :mod:`~asirp.tomo.exchange` (Data Exchange / NXtomo reading),
:mod:`~asirp.tomo.normalise` (flat/dark correction, ``-log``),
:mod:`~asirp.tomo.restore_projections` (one plan, block-wise restoration),
:mod:`~asirp.tomo.centre` (rotation axis), :mod:`~asirp.tomo.reconstruct` (filtered
back-projection), :mod:`~asirp.tomo.volume` (NeXus output) and :mod:`~asirp.tomo.pipeline`
(:func:`run_tomo`, all of it in one process).
"""

from asirp.tomo.exchange import TomoScan, read_scan
from asirp.tomo.pipeline import TomoResult, run_tomo
from asirp.tomo.restore_projections import ProjectionPlan, plan_restoration, restore_block

__all__ = [
    "ProjectionPlan",
    "TomoResult",
    "TomoScan",
    "plan_restoration",
    "read_scan",
    "restore_block",
    "run_tomo",
]

"""Shared helpers for the simulated-beamline tests: run plans, assemble maps from events."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine


@pytest.fixture
def run_plan():
    """Run a plan on a fresh RunEngine; return its documents as ``[(name, doc), ...]``."""
    engines = []

    def run(plan):
        engine = RunEngine({})
        engines.append(engine)
        documents = []
        engine.subscribe(lambda name, doc: documents.append((name, doc)))
        engine(plan)
        return documents

    return run


def event_columns(documents, keys):
    """Columns of the primary stream's events and event pages, in acquisition order."""
    columns = {key: [] for key in keys}
    for name, doc in documents:
        if name == "event":
            for key in keys:
                columns[key].append(doc["data"][key])
        elif name == "event_page":
            for key in keys:
                columns[key].extend(doc["data"][key])
    return {key: np.asarray(values) for key, values in columns.items()}


def grid_from_points(y, x, values, step_um):
    """Place point values on the regular grid their positions span: ``(rows, cols)`` map."""
    rows = np.rint((y - y.min()) / step_um).astype(int)
    cols = np.rint((x - x.min()) / step_um).astype(int)
    image = np.full((rows.max() + 1, cols.max() + 1), np.nan)
    image[rows, cols] = values
    return image

"""``callbacks.raw_maps.RawMaps``: every map run's raw map, assembled without restoring."""

from __future__ import annotations

import numpy as np
from event_model import compose_run

from callbacks.raw_maps import RawMaps


def _run(shape=(2, 3), values=None, metadata=None):
    run = compose_run(
        metadata={"shape": list(shape), "extents": [[0, 1], [0, 2]]} | (metadata or {})
    )
    keys = {
        "det": {"source": "sim", "dtype": "number", "shape": []},
        "i0": {"source": "sim", "dtype": "number", "shape": []},
    }
    stream = run.compose_descriptor(name="primary", data_keys=keys)
    documents = [("start", run.start_doc), ("descriptor", stream.descriptor_doc)]
    for index, value in enumerate(values or [], start=1):
        event = stream.compose_event(
            data={"det": value, "i0": 2.0 if index % 2 else 1.0},
            timestamps={"det": 0.0, "i0": 0.0},
        )
        documents.append(("event", event))
    documents.append(("stop", run.compose_stop()))
    return run.start_doc["uid"], documents


def test_each_map_run_gets_its_normalised_raw_map_and_nothing_else():
    maps = RawMaps("det", normalize="i0")
    first, documents = _run(values=[10.0, 20.0, 30.0, 40.0, 50.0])
    second, more = _run(shape=(2, 2), values=[1.0, 1.0, 1.0, 1.0])
    plain = compose_run(metadata={"purpose": "not a map"})
    for name, doc in documents[:-1]:
        maps(name, doc)
    assert not maps.finished(first)
    for name, doc in [*documents[-1:], ("start", plain.start_doc), *more]:
        maps(name, doc)
    maps("stop", plain.compose_stop())
    maps("event", {"descriptor": "unknown"})  # a bad document is skipped, not raised
    assert maps.finished(first)
    assert maps.finished(second)
    mean_i0 = np.mean([2.0, 1.0, 2.0, 1.0, 2.0])
    expected = np.array([[10 / 2, 20 / 1, 30 / 2], [40 / 1, 50 / 2, np.nan]]) * mean_i0
    np.testing.assert_allclose(maps.raw_map(first), expected.astype(np.float32), rtol=1e-6)
    assert maps.raw_map(second).shape == (2, 2)
    assert maps.raw_map(plain.start_doc["uid"]) is None
    assert maps.raw_map("never seen") is None
    assert not maps.finished("never seen")


def test_only_the_latest_runs_are_kept():
    maps = RawMaps("det", keep=2)
    uids = []
    for _ in range(3):
        uid, documents = _run(values=[1.0])
        uids.append(uid)
        for name, doc in documents:
            maps(name, doc)
    assert maps.raw_map(uids[0]) is None
    assert all(maps.raw_map(uid) is not None for uid in uids[1:])

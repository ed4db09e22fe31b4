"""MapAssembler alone, without a restorer: documents in, the raw map out (and its hooks)."""

from __future__ import annotations

import numpy as np
import pytest
from event_model import compose_run

from callbacks.assembler import MapAssembler
from callbacks.geometry import GeometryError
from callbacks.mapping import MapSource

NUMBER = {"source": "sim", "dtype": "number", "shape": []}


class RecordingHooks:
    """AssemblerHooks that write down what they are told."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def descriptor_accepted(self, assembler, descriptor_uid):
        self.calls.append(("descriptor_accepted", descriptor_uid))

    def points_added(self, assembler):
        self.calls.append(("points_added", assembler.map.points))

    def finished(self, assembler, exit_status, reason):
        self.calls.append(("finished", exit_status, reason))


def _grid_run():
    """A run of a 2 x 3 map whose events carry positions ``y`` (slow) and ``x`` (fast)."""
    run = compose_run(metadata={"shape": [2, 3], "extents": [[0, 1], [0, 2]], "motors": ["y", "x"]})
    keys = {"y": NUMBER, "x": NUMBER, "det": NUMBER, "i0": NUMBER}
    return run, run.compose_descriptor(name="primary", data_keys=keys)


def _event(stream, y, x, det, i0=1.0):
    data = {"y": y, "x": x, "det": det, "i0": i0}
    return stream.compose_event(data=data, timestamps=dict.fromkeys(data, 0.0))


def test_documents_in_raw_map_out_with_positions_and_normalisation():
    run, stream = _grid_run()
    documents = [("start", run.start_doc), ("descriptor", stream.descriptor_doc)]
    documents += [
        ("event", _event(stream, 0.0, 0.0, 10.0, i0=1.0)),
        ("event", _event(stream, 0.0, 1.0, 20.0, i0=2.0)),
        ("event", _event(stream, 0.0, 2.0, 30.0, i0=1.0)),
        ("event", _event(stream, 1.0, 2.0, float("nan"))),  # NaN reading: skipped
        ("event", _event(stream, 5.0, 0.0, 40.0)),  # outside the map: skipped
        ("event", _event(stream, 1.0, 1.0, 50.0, i0=0.0)),  # no flux: skipped
    ]
    page = stream.compose_event_page(
        data={"y": [1.0], "x": [0.0], "det": [60.0], "i0": [1.0]},
        timestamps={"y": [0.0], "x": [0.0], "det": [0.0], "i0": [0.0]},
        seq_num=[7],
    )
    documents += [("event_page", page), ("stop", run.compose_stop())]
    hooks = RecordingHooks()
    assembler = MapAssembler(run.start_doc, MapSource("det", normalize="i0"), hooks=hooks)
    for name, doc in documents:
        assembler(name, doc)

    mean_i0 = (1.0 + 2.0 + 1.0 + 1.0) / 4
    expected = np.array(
        [[10.0 * mean_i0, 20.0 * mean_i0 / 2.0, 30.0 * mean_i0], [60.0 * mean_i0, np.nan, np.nan]],
        dtype=np.float32,
    )
    np.testing.assert_allclose(assembler.raw_map, expected, rtol=1e-6)
    assert assembler.raw_map.dtype == np.float32
    assert assembler.progress == pytest.approx(4 / 6)
    assert assembler.finished
    assert dict(assembler.skipped) == {
        "NaN or unreadable reading": 1,
        "position outside the map": 1,
        "zero, negative or NaN monitor reading": 1,
    }
    assert assembler.descriptors == {stream.descriptor_doc["uid"]}
    assert hooks.calls == [
        ("descriptor_accepted", stream.descriptor_doc["uid"]),
        ("points_added", 1),
        ("points_added", 2),
        ("points_added", 3),
        ("points_added", 4),
        ("finished", "success", ""),
    ]


def test_points_without_positions_follow_the_sequence_and_snake():
    run = compose_run(
        metadata={"shape": [2, 3], "extents": [[0, 1], [0, 2]], "snaking": [False, True]}
    )
    stream = run.compose_descriptor(name="primary", data_keys={"det": NUMBER})
    assembler = MapAssembler(run.start_doc, MapSource("det"))  # no hooks: used alone
    assembler("start", run.start_doc)
    assembler("descriptor", stream.descriptor_doc)
    for value in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):  # the 7th is beyond the map
        assembler("event", stream.compose_event(data={"det": value}, timestamps={"det": 0.0}))
    np.testing.assert_array_equal(assembler.raw_map, [[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]])
    assert assembler.skipped == {"sequence number beyond the map": 1}
    assert not assembler.finished


def test_other_streams_are_ignored_and_an_aborted_run_finishes_once():
    run, stream = _grid_run()
    baseline = run.compose_descriptor(name="baseline", data_keys={"det": NUMBER})
    hooks = RecordingHooks()
    assembler = MapAssembler(run.start_doc, MapSource("det"), hooks=hooks)
    assert assembler.raw_map is None
    assembler("descriptor", baseline.descriptor_doc)
    assembler("event", baseline.compose_event(data={"det": 1.0}, timestamps={"det": 0.0}))
    assert assembler.map is None
    assert hooks.calls == []
    assembler("descriptor", stream.descriptor_doc)
    assembler("event", _event(stream, 0.0, 0.0, 5.0))
    assembler("stop", run.compose_stop(exit_status="abort", reason="beam lost"))
    assembler.finish("abort", "again")  # once only
    assembler("event", _event(stream, 0.0, 1.0, 6.0))  # after the end: ignored
    assert hooks.calls[-1] == (
        "finished",
        "abort",
        "the raw run ended with exit status 'abort' (beam lost)",
    )
    assert [call[0] for call in hooks.calls].count("finished") == 1
    assert assembler.map.points == 1


def test_a_start_document_without_a_map_is_refused():
    run = compose_run(metadata={})
    with pytest.raises(GeometryError, match="no 'shape'"):
        MapAssembler(run.start_doc, MapSource("det"))

"""The device's attribute values, FetchResult replies and result book, without a Tango server."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import asirp_device.requests
from asirp.restore import Restoration
from asirp_device.requests import (
    RESULT_CACHE_BYTES,
    RESULT_CACHE_SIZE,
    RequestBook,
    RequestFailed,
    ResultRecord,
    UnknownRequest,
    check_request_id,
)
from asirp_device.settings import Settings
from asirp_device.values import (
    EMPTY_IMAGE,
    METRIC_ATTRIBUTES,
    RESULT_ATTRIBUTES,
    fetch_header,
    fetch_reply,
    input_value,
    parameters_json,
    result_values,
)
from asirp_device.wire import decode_result


def record(
    request_id: int = 7,
    *,
    shape: tuple[int, int] = (4, 6),
    metrics: dict[str, float] | None = None,
    params: dict[str, object] | None = None,
    psf: np.ndarray | None = None,
) -> ResultRecord:
    image = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    restoration = Restoration(
        image=image,
        method="richardson_lucy",
        params={"iterations_run": 12} if params is None else params,
        psf=psf,
        metrics={"sharpness": 0.5, "residual": 0.25, "psnr_input": 3.0}
        if metrics is None
        else metrics,
        elapsed_s=0.1,
    )
    return ResultRecord(
        restoration, sequence=3, source="Submit", duration_s=0.125, request_id=request_id
    )


def test_before_any_result_every_result_attribute_is_empty_nan_or_zero():
    values = result_values(None)
    assert set(values) == set(RESULT_ATTRIBUTES)
    assert values["result_id"] == 0
    assert values["iterations_run"] == 0
    assert values["method_used"] == ""
    assert values["metrics_json"] == "{}"
    assert values["restored_image"].shape == (0, 0)
    assert values["psf"].shape == (0, 0)
    assert values["restored_image"].dtype == np.float32
    assert all(math.isnan(values[name]) for name in (*METRIC_ATTRIBUTES, "last_duration_ms"))


def test_a_result_gives_its_map_metrics_and_request_id():
    kernel = np.full((3, 3), 1 / 9, dtype=np.float64)
    values = result_values(record(psf=kernel))
    assert set(values) == set(RESULT_ATTRIBUTES)
    assert values["result_id"] == 7
    assert values["restored_image"].shape == (4, 6)
    assert values["psf"].dtype == np.float32
    assert values["psf"].shape == (3, 3)
    assert values["method_used"] == "richardson_lucy"
    assert values["sharpness"] == 0.5
    assert values["residual"] == 0.25
    assert math.isnan(values["contrast_std"])
    assert math.isnan(values["noise_sigma"])
    assert values["iterations_run"] == 12
    assert values["last_duration_ms"] == pytest.approx(125.0)
    assert json.loads(values["metrics_json"]) == {
        "sharpness": 0.5,
        "residual": 0.25,
        "psnr_input": 3.0,
        "request_id": 7,
    }
    assert values["psf"] is not EMPTY_IMAGE
    assert result_values(record(psf=None))["psf"].shape == (0, 0)


def test_iterations_run_that_is_not_an_integer_reads_zero():
    assert result_values(record(params={}))["iterations_run"] == 0
    assert result_values(record(params={"iterations_run": "12"}))["iterations_run"] == 0


def test_the_fetch_reply_carries_the_header_and_the_map():
    kept = record(request_id=42)
    header = fetch_header(kept)
    assert header == {
        "request_id": 42,
        "source": "Submit",
        "derived_uid": None,
        "method": "richardson_lucy",
        "sequence": 3,
        "iterations_run": 12,
        "duration_ms": pytest.approx(125.0),
        "metrics": kept.restoration.metrics,
    }
    decoded, image = decode_result(fetch_reply(kept))
    assert decoded["request_id"] == 42
    assert decoded["shape"] == [4, 6]
    assert decoded["dtype"] == "float32"
    assert decoded["metrics"] == kept.restoration.metrics
    np.testing.assert_array_equal(image, kept.restoration.image)


def test_parameters_json_and_the_input_value():
    assert parameters_json(Settings(parameters={"stop": "fixed", "a": 1})) == (
        '{"a": 1, "stop": "fixed"}'
    )
    assert parameters_json(Settings()) == "{}"
    assert input_value(None) is EMPTY_IMAGE
    image = np.ones((4, 4), dtype=np.float32)
    assert input_value(image) is image


def test_the_book_keeps_the_latest_results_and_says_why_others_are_missing():
    book = RequestBook()
    first = book.new_id()
    assert book.new_id() == first + 1
    ids = [book.new_id() for _ in range(RESULT_CACHE_SIZE + 2)]
    for request_id in ids:
        book.keep(record(request_id))
    assert book.find(ids[0]) is None
    assert book.find(ids[1]) is None
    assert book.find(ids[-1]).request_id == ids[-1]
    assert isinstance(book.missing(ids[0]), UnknownRequest)
    assert "no longer kept" in str(book.missing(ids[0]))
    assert "there is no request" in str(book.missing(first - 1))
    assert "there is no request" in str(book.missing(ids[-1] + 1))
    book.fail(first, "restoration aborted")
    error = book.missing(first)
    assert isinstance(error, RequestFailed)
    assert "restoration aborted" in str(error)


def test_the_book_keeps_the_latest_result_whatever_its_size(monkeypatch):
    assert RESULT_CACHE_BYTES == 256 * 2**20
    monkeypatch.setattr(asirp_device.requests, "RESULT_CACHE_BYTES", 1000)
    book = RequestBook()
    big = [record(book.new_id(), shape=(16, 16)) for _ in range(2)]  # 1 KiB each
    for kept in big:
        book.keep(kept)
    assert book.find(big[0].request_id) is None
    assert book.find(big[1].request_id) is big[1]


def test_request_ids_are_integers():
    assert check_request_id(np.int64(5)) == 5
    with pytest.raises(TypeError, match="a request id is an integer"):
        check_request_id(True)
    with pytest.raises(TypeError):
        check_request_id(5.0)


def test_the_value_modules_load_no_control_system():
    code = (
        "import sys, asirp_device.values, asirp_device.settings, asirp_device.files, "
        "asirp_device.requests, asirp_device.component\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tango', 'ophyd_async', 'bluesky'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]"

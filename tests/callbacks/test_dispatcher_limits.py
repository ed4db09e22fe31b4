"""The 0MQ subscriber's size limit: an oversized message never reaches memory or callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid

import pytest
from bluesky.callbacks.zmq import Publisher

from callbacks.dispatcher import MAX_MESSAGE_BYTES, SafeRemoteDispatcher
from callbacks.serialization import serializer
from tests.asirp_device.conftest import DocumentProxy

pytestmark = pytest.mark.timeout(180)


def test_an_oversized_message_is_refused_and_the_next_ones_arrive():
    proxy = DocumentProxy()
    publisher = Publisher(proxy.in_address, serializer=serializer)
    dispatcher = SafeRemoteDispatcher(proxy.out_address, max_message_bytes=4096)
    assert dispatcher.max_message_bytes == 4096
    seen: list[str] = []
    dispatcher.subscribe(lambda name, doc: seen.append(doc["uid"]))

    def serve() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # cancel_threadsafe ends it so
            dispatcher.start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:

        def send_until_seen(extra: dict, timeout: float = 60.0) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                uid = str(uuid.uuid4())
                publisher("start", {"uid": uid, "time": time.time(), **extra})
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    if uid in seen:
                        return uid
                    time.sleep(0.02)
            raise AssertionError("no message reached the subscriber")

        send_until_seen({})  # 0MQ drops messages until the subscription is joined
        big = str(uuid.uuid4())
        publisher("start", {"uid": big, "time": time.time(), "padding": "x" * 20_000})
        # 0MQ disconnects the sender of the oversized message and reconnects: later small
        # messages arrive again, the big one never
        send_until_seen({"purpose": "after the big one"})
        time.sleep(0.3)
        assert big not in seen
        assert dispatcher.dropped["reconnect"] >= 1
    finally:
        dispatcher.cancel_threadsafe()
        thread.join(timeout=30)
        publisher.close()
        proxy.stop()
    assert not thread.is_alive()


def test_the_limit_is_checked_and_has_a_default():
    default = SafeRemoteDispatcher("127.0.0.1:5567")
    default.loop.close()  # never started: nothing else to release
    assert default.max_message_bytes == MAX_MESSAGE_BYTES
    with pytest.raises(ValueError, match="max_message_bytes"):
        SafeRemoteDispatcher("127.0.0.1:5567", max_message_bytes=0)

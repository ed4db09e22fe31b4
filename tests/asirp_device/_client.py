"""A client process of the ASIRP device: restore one map through a Tango database, with events.

Run as ``python _client.py DEVICE INPUT.npy OUTPUT.npy`` with ``TANGO_HOST`` set: the device
name is resolved through that database. It subscribes to change events on ``State`` and
``restored_image`` and to data-ready events, writes the map, calls ``Restore``, waits for the
``RUNNING`` -> ``ON`` events, saves the restored map to ``OUTPUT.npy`` and prints a JSON summary
of what it saw.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import tango


def main() -> None:
    device_name, input_path, output_path = sys.argv[1:4]
    proxy = tango.DeviceProxy(device_name)
    seen: list[tuple[str, object]] = []
    errors: list[str] = []
    arrived = threading.Condition()

    def record(event: tango.EventData) -> None:
        name = event.attr_name.rsplit("/", 1)[-1].lower()
        with arrived:
            if event.err:
                errors.append(str(event.errors))
            elif isinstance(event, tango.DataReadyEventData):
                seen.append(("data_ready", event.ctr))
            elif name == "state":
                seen.append(("state", str(event.attr_value.value)))
            else:
                seen.append((name, list(event.attr_value.value.shape)))
            arrived.notify_all()

    subscriptions = [
        proxy.subscribe_event("State", tango.EventType.CHANGE_EVENT, record),
        proxy.subscribe_event("restored_image", tango.EventType.CHANGE_EVENT, record),
        proxy.subscribe_event("restored_image", tango.EventType.DATA_READY_EVENT, record),
    ]
    image = np.load(input_path)
    proxy.write_attribute("input_image", image)
    proxy.Restore()

    def finished() -> bool:
        states = [value for name, value in seen if name == "state"]
        return states[-2:] == ["RUNNING", "ON"] and any(n == "data_ready" for n, _ in seen)

    deadline = time.monotonic() + 60
    with arrived:
        while not finished() and time.monotonic() < deadline:
            arrived.wait(deadline - time.monotonic())
    restored = proxy.read_attribute("restored_image").value
    for subscription in subscriptions:
        proxy.unsubscribe_event(subscription)
    np.save(output_path, restored)
    info = proxy.info()
    print(
        json.dumps(
            {
                "events": seen,
                "errors": errors,
                "finished": finished(),
                "class": info.dev_class,
                "server": info.server_id,
                "state": str(proxy.state()),
                "method_used": proxy.method_used,
            }
        )
    )


if __name__ == "__main__":
    main()

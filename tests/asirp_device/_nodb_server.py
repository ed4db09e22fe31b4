"""Serve one ASIRP device through ``DeviceTestContext`` (no database) until stdin closes.

Run as ``python _nodb_server.py '<device properties as JSON>'`` by the tests, in its own process
(two Tango servers in one process crash, and torch does not mix with ``fork``). It prints
``ASIRP_READY <device access TRL>`` once the device answers, then blocks reading stdin; when the
test closes stdin it leaves the context, which kills the server cleanly.
"""

from __future__ import annotations

import json
import sys

from tango.test_context import DeviceTestContext

from asirp_device.server import ASIRP

READY = "ASIRP_READY"


def main() -> None:
    properties = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    context = DeviceTestContext(
        ASIRP,
        device_name="test/asirp/1",
        properties=properties,
        host="127.0.0.1",
        port=0,
        process=False,
        timeout=60,
    )
    with context:
        sys.stdout.write(f"{READY} {context.get_device_access()}\n")
        sys.stdout.flush()
        sys.stdin.read()


if __name__ == "__main__":
    main()

"""``asirp_device.document_proxy``: the 0MQ proxy as a child process, and the handshake."""

from __future__ import annotations

import psutil
import pytest

from asirp_device.document_proxy import DocumentProxyProcess, handshake


def test_the_proxy_runs_on_free_loopback_ports_and_stops():
    proxy = DocumentProxyProcess()
    in_address, out_address = proxy.start()
    try:
        assert in_address == f"127.0.0.1:{proxy.in_port}"
        assert out_address == f"127.0.0.1:{proxy.out_port}"
        assert proxy.in_port != proxy.out_port
        child = psutil.Process(proxy.pid)
        listening = {c.laddr.port for c in child.net_connections() if c.status == "LISTEN"}
        assert {proxy.in_port, proxy.out_port} <= listening
        with pytest.raises(RuntimeError, match="already started"):
            proxy.start()
    finally:
        proxy.stop()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    proxy.stop()  # idempotent
    assert proxy.pid is None


def test_handshake_publishes_empty_runs_until_two_documents_arrive():
    sent: list[tuple[str, dict]] = []
    runs = handshake(lambda name, doc: sent.append((name, doc)), lambda: max(0, len(sent) - 2))
    assert runs == 2  # the first run's documents were "dropped", the second's arrived
    assert [name for name, _ in sent] == ["start", "stop", "start", "stop"]
    assert sent[1][1]["run_start"] == sent[0][1]["uid"]
    assert "shape" not in sent[0][1]  # no map: live mode restores nothing for it


def test_handshake_gives_up_when_nothing_arrives():
    with pytest.raises(TimeoutError, match=r"no document reached the subscriber in 0\.3 s"):
        handshake(lambda name, doc: None, lambda: 0, timeout=0.3)

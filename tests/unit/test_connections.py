"""The connection cap's gauge (appliance/connections.py) and the server's Gate (appliance/server.py)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time

import pytest

from appliance import connections
from appliance.connections import ConnectionGauge
from appliance.server import Gate


@contextlib.contextmanager
def listener(family: int = socket.AF_INET, host: str = "127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.bind((host, 0))
        srv.listen()
        yield srv


def test_count_sees_exactly_the_connections_to_a_port():
    with listener() as srv, listener() as other:
        port = srv.getsockname()[1]
        assert connections.count(frozenset({port})) == 0  # a listening socket is not a connection
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [srv.accept()[0] for _ in clients]
        noise = socket.create_connection(("127.0.0.1", other.getsockname()[1]))
        try:
            assert connections.count(frozenset({port})) == 3
            assert connections.count(frozenset({port, other.getsockname()[1]})) == 4
            clients[0].close()  # the peer left: the server's side is in CLOSE_WAIT and still held
            assert connections.count(frozenset({port})) == 3
            accepted[0].close()
            assert connections.count(frozenset({port})) == 2
        finally:
            for s in (*clients, *accepted, noise):
                s.close()


def test_an_ipv4_listener_is_counted_in_ipv4_alone():
    assert connections.families(["127.0.0.1", "0.0.0.0"]) == (socket.AF_INET,)
    assert connections.families(["127.0.0.1", "::"]) == connections.BOTH  # :: takes IPv4 too
    assert connections.families(["localhost"]) == connections.BOTH  # a name may resolve to either
    with listener() as srv:
        port = srv.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        server_side = srv.accept()[0]
        try:
            assert connections.count(frozenset({port}), (socket.AF_INET,)) == 1
            assert connections.count(frozenset({port}), (socket.AF_INET6,)) == 0
        finally:
            client.close()
            server_side.close()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_count_sees_ipv6_connections():
    try:
        ctx = listener(socket.AF_INET6, "::1")
        srv = ctx.__enter__()
    except OSError:
        pytest.skip("no ::1 on this machine")
    try:
        port = srv.getsockname()[1]
        client = socket.create_connection(("::1", port))
        server_side = srv.accept()[0]
        assert connections.count(frozenset({port})) == 1
        client.close()
        server_side.close()
    finally:
        ctx.__exit__(None, None, None)


def _request_side(monkeypatch, *counts: int) -> tuple[ConnectionGauge, list[int], list[float]]:
    """A gauge (cap 3) whose counts are ``counts`` in turn, on a clock the test moves; the request side
    only (no refreshing thread). Returns the gauge, one entry per count taken, and the clock."""
    taken: list[int] = []
    given = iter(counts)

    def fake(ports, families=connections.BOTH):
        taken.append(1)
        return next(given)

    now = [100.0]
    monkeypatch.setattr(connections, "count", fake)
    monkeypatch.setattr("appliance.connections.time.monotonic", lambda: now[0])
    monkeypatch.setattr(ConnectionGauge, "_refresher", lambda self: None)
    return ConnectionGauge({1}, cap=3, max_age=0.05, recheck=0.005, linger=1.0), taken, now


def test_requests_read_the_last_count_except_after_a_quiet_spell_or_to_refuse(monkeypatch):
    gauge, calls, now = _request_side(monkeypatch, 1, 5, 2)
    assert not gauge.over() and len(calls) == 1  # the first request counts
    now[0] += 0.5
    assert not gauge.over() and len(calls) == 1  # busy: the thread's count is read
    now[0] += 0.6
    assert gauge.over() and len(calls) == 2  # a quiet second since the last count: counted again, 5 > 3
    now[0] += 0.006
    assert not gauge.over() and len(calls) == 3  # a refusal is rechecked after 5 ms: 2 now


def test_the_thread_counts_while_requests_come_and_rests_after(monkeypatch):
    calls: list[int] = []

    def fake(ports, families=connections.BOTH):
        calls.append(1)
        return len(calls)

    monkeypatch.setattr(connections, "count", fake)
    gauge = ConnectionGauge({1}, cap=10_000, max_age=0.01, linger=0.2)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        gauge.over()
        time.sleep(0.02)
    busy = len(calls)
    assert busy >= 10 and gauge.value() >= busy  # refreshed about every 10 ms, not once per request
    time.sleep(0.4)
    rested = len(calls)
    time.sleep(0.3)
    assert len(calls) == rested  # no request for longer than linger: the thread waits


def test_a_kernel_that_refuses_the_count_disables_the_cap_with_one_warning(monkeypatch, caplog):
    def refuse(ports, families=connections.BOTH):
        raise OSError("no netlink here")

    now = [0.0]
    monkeypatch.setattr(connections, "count", refuse)
    monkeypatch.setattr("appliance.connections.time.monotonic", lambda: now[0])
    gauge = ConnectionGauge({1}, cap=3)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            now[0] += 1
            assert not gauge.over()
    assert [r.getMessage() for r in caplog.records].count(
        "cannot count open connections (no netlink here): server.max_connections is not enforced") == 1


class FixedGauge(ConnectionGauge):
    def __init__(self, value: int, cap: int) -> None:
        super().__init__({1}, cap)
        self.fixed = value

    def value(self) -> int:
        return self.fixed

    def over(self) -> bool:
        return self.fixed > self.cap


async def call(gate: Gate) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await gate({"type": "http", "method": "GET", "path": "/health", "headers": []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


async def ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_gate_answers_503_in_the_envelope_above_the_cap_only():
    status, headers, body = asyncio.run(call(Gate(ok, FixedGauge(4, cap=3))))
    assert status == 503 and headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"
    assert json.loads(body)["code"] == "SERVICE_UNAVAILABLE"
    assert asyncio.run(call(Gate(ok, FixedGauge(3, cap=3))))[0] == 200


def test_the_gate_counts_requests_in_flight_for_the_drain():
    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(scope, receive, send):
            await release.wait()
            await ok(scope, receive, send)

        gate = Gate(slow, FixedGauge(0, cap=3))
        assert await gate.drained(0.01)
        request = asyncio.create_task(call(gate))
        await asyncio.sleep(0.01)
        assert gate.in_flight == 1 and not await gate.drained(0.05)
        release.set()
        assert await gate.drained(1) and gate.in_flight == 0
        assert (await request)[0] == 200

    asyncio.run(scenario())


def test_a_request_when_the_count_is_at_the_cap_counts_again(monkeypatch):
    """The thread's count may miss the connection the request came on: at the cap, it is retaken."""
    gauge, calls, now = _request_side(monkeypatch, 3, 4)
    assert not gauge.over() and len(calls) == 1  # 3 open: at the cap, not over it
    now[0] += 0.01
    assert gauge.over() and len(calls) == 2  # counted again, with the new connection: 4 > 3

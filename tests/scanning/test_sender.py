"""Findings batches with a few in flight: every finding sent once with its seq, never more than
``depth`` unanswered, a lost lease or an error stops the sending, and out-of-order batches store
what in-order ones would."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from appliance.scanning import batches
from appliance.scanning.reporter import ReportError
from appliance.scanning.sender import send_batches
from appliance.store.db import connect, migrate
from appliance.store.ops import Op, apply_sync
from engines.base import Finding


def findings(count: int) -> list[Finding]:
    return [Finding(rule_id=f"r{i}", title=f"t{i}") for i in range(count)]


class Recorder:
    """A reporter's ``findings`` call that takes a little while and notes what overlapped."""

    def __init__(self, lost_from: int | None = None, fail_at: int | None = None) -> None:
        self.lock = threading.Lock()
        self.sent: list[tuple[int, list[str]]] = []
        self.running = 0
        self.most = 0
        self.lost_from = lost_from
        self.fail_at = fail_at

    def __call__(self, batch: list[Finding], first_seq: int) -> bool:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)
            if first_seq == self.fail_at:
                raise ReportError("appliance answered 500")
            if self.lost_from is not None and first_seq >= self.lost_from:
                return False
            with self.lock:
                self.sent.append((first_seq, [f.rule_id for f in batch]))
            return True
        finally:
            with self.lock:
                self.running -= 1


def test_every_finding_is_sent_once_with_its_seq_and_at_most_depth_in_flight():
    send = Recorder()
    assert send_batches(send, iter(findings(23)), batch=5, depth=3) == (23, True)
    assert sorted(first for first, _ in send.sent) == [0, 5, 10, 15, 20]
    for first, rules in send.sent:
        assert rules == [f"r{i}" for i in range(first, min(first + 5, 23))]
    assert send.most == 3  # overlapped, and never more than depth


def test_depth_one_sends_one_at_a_time_and_limit_caps():
    send = Recorder()
    assert send_batches(send, iter(findings(23)), batch=5, depth=1, limit=12) == (12, True)
    assert send.most == 1 and sorted(first for first, _ in send.sent) == [0, 5, 10]
    assert send.sent[-1][1] == ["r10", "r11"]


def test_a_lost_lease_stops_the_sending():
    produced: list[int] = []

    def parse() -> Iterator[Finding]:
        for finding in findings(1000):
            produced.append(1)
            yield finding
    send = Recorder(lost_from=10)
    stored, kept = send_batches(send, parse(), batch=5, depth=2)
    assert not kept and stored == 10
    assert len(produced) < 40  # stopped soon after the refusal, not at the end of the parse


def test_an_error_propagates_after_the_batches_in_flight_are_answered():
    send = Recorder(fail_at=10)
    with pytest.raises(ReportError, match="500"):
        send_batches(send, iter(findings(1000)), batch=5, depth=3)
    assert send.running == 0  # nothing still sending behind the caller
    assert len(send.sent) < 10


def test_a_parser_error_propagates_after_the_batches_in_flight_are_answered():
    def parse() -> Iterator[Finding]:
        yield from findings(12)
        raise RuntimeError("parser bug")
    send = Recorder()
    with pytest.raises(RuntimeError, match="parser bug"):
        send_batches(send, parse(), batch=5, depth=3)
    assert send.running == 0 and sorted(first for first, _ in send.sent) == [0, 5]


def test_out_of_order_batches_keep_the_first_finding_of_a_fingerprint(tmp_path):
    conn = connect(tmp_path / "db.sqlite")
    migrate(conn)
    conn.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t', 'default', 0)")
    conn.execute("INSERT INTO scans (id, tenant_id, scan_type, target, target_type, status, priority, timeout,"
                 " created_at, queued_at, lease_id) VALUES ('s', 't', 'nmap', '127.0.0.1', 'ip', 'running',"
                 " 'normal', 60, 0, 0, 'lease')")
    first = [Finding(rule_id="dup", title="found first", host="127.0.0.1"), Finding(rule_id="a", title="a")]
    second = [Finding(rule_id="b", title="b"), Finding(rule_id="dup", title="found later", host="127.0.0.1")]
    def op(batch: list[Finding], first_seq: int) -> Op:
        return batches.findings_op("s", "lease", "nmap", batch, first_seq)
    # The later batch is committed first, as can happen with several in flight.
    apply_sync(conn, [op(second, 2)])
    apply_sync(conn, [op(first, 0)])
    rows = conn.execute("SELECT seq, json_extract(body, '$.title') FROM findings ORDER BY seq").fetchall()
    rows = [tuple(row) for row in rows]
    assert rows == [(0, "found first"), (1, "a"), (2, "b")]
    # And in order, the later duplicate changes nothing.
    apply_sync(conn, [op(second, 2)])
    assert conn.execute("SELECT count(*) FROM findings").fetchone()[0] == 3

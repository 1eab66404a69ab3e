"""The pure scan task with a fake engine and a fake reporter: no database, no nmap, no appliance.

The fake engine is a real process (a few lines of Python run by the real runner), so cancel,
shutdown and timeouts are exercised for real; only the scanner and the appliance are stand-ins.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.scanning.intake import Claim
from appliance.scanning.job import Job
from appliance.scanning.queue import HUEY_PRIORITY, Backend, ScanQueue
from appliance.scanning.task import ScanTask, TaskSettings
from engines.base import Engine, Finding, Outcome, ScanSpec
from tests.helpers import live_group_members

# Writes one finding per line to report.jsonl, `count` of them, pausing `pause` s after each.
SCANNER = """
import json, sys, time
count, pause = int(sys.argv[1]), float(sys.argv[2])
with open("report.jsonl", "w") as out:
    for i in range(count):
        out.write(json.dumps({"rule": f"r{i}", "severity": "low"}) + "\\n"); out.flush()
        time.sleep(pause)
print("done")
"""


class FakeEngine(Engine):
    name = "fake"  # type: ignore[misc]
    title = "Fake"  # type: ignore[misc]
    binary = sys.executable  # type: ignore[misc]
    target_types = frozenset({"ip"})

    def build_argv(self, spec: ScanSpec) -> list[str]:
        return [sys.executable, "-c", SCANNER, str(spec.options.get("count", 3)), str(spec.options.get("pause", 0))]

    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        path = spec.workdir / "report.jsonl"
        if spec.options.get("explode"):
            raise RuntimeError("parser bug")
        if path.exists():
            for line in path.read_text().splitlines():
                item = json.loads(line)
                yield Finding(item["rule"], f"finding {item['rule']}", severity=item["severity"], ip=spec.target)

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        done = "done" in (spec.workdir / "stdout.log").read_text()
        return Outcome(done, None if done else "ENGINE_ERROR", None if done else "scanner did not finish")

    def _read_version(self, path: str) -> str | None:
        return "1.0"


class FakeReporter:
    """The appliance as the task sees it: one scan, its lease, and what was reported."""

    name = "test-worker"

    def __init__(self, claimable: bool = True) -> None:
        self.claimable = claimable
        self.cancelled = threading.Event()
        self.lease_lost = False
        self.stored: list[Finding] = []
        self.batches: list[tuple[int, int]] = []
        self.finished: list[tuple[str, str | None, str | None]] = []
        self.released = False
        self.heartbeats: list[int | None] = []
        self.pids: list[int] = []

    def claim(self, job: Job, workdir: str) -> Claim | None:
        return Claim("lease-1", job) if self.claimable else None

    def heartbeat(self, claim: Claim, progress: int | None) -> bool:
        self.heartbeats.append(progress)
        return not self.cancelled.is_set() and not self.lease_lost

    def process_started(self, claim: Claim, pid: int) -> None:
        self.pids.append(pid)

    def findings(self, claim: Claim, engine: str, batch: list[Finding], first_seq: int) -> bool:
        if self.lease_lost:
            return False
        self.batches.append((first_seq, len(batch)))
        self.stored.extend(batch)
        return True

    def finish(self, claim: Claim, status: str, code: str | None = None, message: str | None = None) -> bool:
        self.finished.append((status, code, message))
        return not self.cancelled.is_set() and not self.lease_lost

    def release(self, claim: Claim) -> None:
        self.released = True


def job(**options: Any) -> dict[str, Any]:
    return Job("scan-1", "tenant-1", "fake", "127.0.0.1", "ip", options, 30, "normal").to_dict()


@pytest.fixture
def make_task(tmp_path: Path):
    def make(reporter: FakeReporter, stopping: threading.Event | None = None, batch: int = 500) -> ScanTask:
        return ScanTask({"fake": FakeEngine()}, reporter, tmp_path / "scans",
                        TaskSettings(kill_grace=1.0, tick_seconds=0.1, batch=batch), stopping or threading.Event())
    return make


def test_a_scan_runs_and_reports_its_findings_in_batches(make_task):
    reporter = FakeReporter()
    assert make_task(reporter, batch=2)(job(count=5)) == "completed"
    # Several batches are in flight at once (appliance.scanning.sender): their order is not fixed.
    assert sorted(f.rule_id for f in reporter.stored) == ["r0", "r1", "r2", "r3", "r4"]
    assert sorted(reporter.batches) == [(0, 2), (2, 2), (4, 1)]
    assert reporter.finished == [("completed", None, None)]


def test_the_engine_decides_failure_not_the_exit_code(make_task, tmp_path):
    class Silent(FakeEngine):
        def build_argv(self, spec: ScanSpec) -> list[str]:
            return [sys.executable, "-c", "pass"]  # exits 0, says nothing
    reporter = FakeReporter()
    task = ScanTask({"fake": Silent()}, reporter, tmp_path / "s", TaskSettings(tick_seconds=0.1), threading.Event())
    assert task(job()) == "failed"
    assert reporter.finished == [("failed", "ENGINE_ERROR", "scanner did not finish")]


def test_max_findings_caps_what_is_stored(make_task):
    reporter = FakeReporter()
    message = job(count=6)
    message["max_findings"] = 4
    assert make_task(reporter, batch=3)(message) == "completed"
    assert len(reporter.stored) == 4


def test_cancel_stops_the_process_group_and_keeps_partial_findings(make_task):
    reporter = FakeReporter()
    task = make_task(reporter)
    threading.Timer(0.8, reporter.cancelled.set).start()
    started = time.monotonic()
    assert task(job(count=100, pause=0.1)) == "stopped"
    assert time.monotonic() - started < 5
    assert reporter.pids and not live_group_members(reporter.pids[0])
    assert 0 < len(reporter.stored) < 100  # what the scanner wrote before the cancel
    assert reporter.finished == [("cancelled", None, None)]  # refused by the appliance; it recounts


def test_shutdown_hands_the_scan_back(make_task):
    reporter = FakeReporter()
    stopping = threading.Event()
    task = make_task(reporter, stopping)
    threading.Timer(0.5, stopping.set).start()
    assert task(job(count=100, pause=0.1)) == "released"
    assert reporter.released and reporter.finished == []
    assert not live_group_members(reporter.pids[0])


def test_a_lost_lease_stops_the_run_and_stores_nothing_more(make_task):
    reporter = FakeReporter()
    task = make_task(reporter)

    def lose() -> None:
        reporter.lease_lost = True
    threading.Timer(0.5, lose).start()
    assert task(job(count=100, pause=0.1)) == "stopped"
    assert reporter.stored == []


def test_a_parser_bug_fails_the_scan_instead_of_leaving_it_running(make_task):
    reporter = FakeReporter()
    assert make_task(reporter)(job(explode=True)) == "crashed"
    assert reporter.finished == [("failed", "INTERNAL_ERROR", "worker error: RuntimeError")]


def test_unclaimable_and_malformed_jobs_run_nothing(make_task):
    reporter = FakeReporter(claimable=False)
    assert make_task(reporter)(job()) == "skipped"
    assert make_task(FakeReporter())({"scan_id": 1}) == "malformed"
    assert reporter.pids == []


def test_progress_reaches_the_heartbeat(make_task):
    class Counting(FakeEngine):
        def progress(self, spec: ScanSpec) -> int | None:
            path = spec.workdir / "report.jsonl"
            return len(path.read_text().splitlines()) * 10 if path.exists() else 0
    reporter = FakeReporter()
    task = ScanTask({"fake": Counting()}, reporter, make_task(reporter)._workdirs,
                    TaskSettings(tick_seconds=0.1), threading.Event())
    assert task(job(count=8, pause=0.1)) == "completed"
    assert any(p and 0 < p < 80 for p in reporter.heartbeats)


def test_immediate_mode_queue_runs_the_task_in_process(make_task, tmp_path):
    """Huey's immediate mode: enqueue runs the job at once, through the same task code."""
    reporter = FakeReporter()
    queue = ScanQueue(Backend("sqlite", sqlite_path=str(tmp_path / "q.db")), make_task(reporter))
    huey, _ = queue._queue("", "fake")
    huey.immediate = True
    queue.enqueue(Job.from_dict(job(count=2)))
    assert [f.rule_id for f in reporter.stored] == ["r0", "r1"]


def test_jobs_cross_the_queue_as_json_never_pickle(tmp_path):
    """A message read back from the queue is a plain job: a pickle payload there would run code."""
    queue = ScanQueue(Backend("sqlite", sqlite_path=str(tmp_path / "q.db")), lambda j: "ok")
    queue.enqueue(Job.from_dict(job(count=1)))
    huey, _ = queue._queue("", "fake")
    raw = huey.storage.dequeue()
    assert raw.startswith(b"{") and json.loads(raw)["huey_message"]["args"][0]["scan_id"] == "scan-1"
    import pickle
    with pytest.raises(ValueError):
        huey.serializer.deserialize(pickle.dumps({"x": 1}))


def test_a_batch_of_enqueues_is_one_insert_and_reads_back_as_huey_would_store_it(tmp_path, monkeypatch):
    """A batch's jobs are inserted with one statement; Huey dequeues them byte for byte as serialized,
    by priority and then in order."""
    from huey.storage import SqliteStorage

    queue = ScanQueue(Backend("sqlite", sqlite_path=str(tmp_path / "q.db")), lambda j: "ok")
    huey, _ = queue._queue("", "fake")
    one_at_a_time: list[bytes] = []
    serialized: list[bytes] = []
    insert, serialize = SqliteStorage.enqueue, huey.serialize_task

    def insert_one(self: Any, data: bytes, priority: float | None = None) -> None:
        one_at_a_time.append(data)
        insert(self, data, priority)

    def recording_serialize(task: Any) -> bytes:
        serialized.append(serialize(task))
        return serialized[-1]

    monkeypatch.setattr(SqliteStorage, "enqueue", insert_one)
    monkeypatch.setattr(huey, "serialize_task", recording_serialize)
    priorities = ["normal", "high", "low", "normal", "critical", "high"]
    jobs = [Job(f"scan-{n}", "tenant-1", "fake", "127.0.0.1", "ip", {"note": "é \\ \" \u0001"}, 30, p)
            for n, p in enumerate(priorities)]
    with queue.batching():
        for one in jobs:
            queue.enqueue(one)
    assert one_at_a_time == []
    stored = []
    while (raw := huey.storage.dequeue()) is not None:
        stored.append(raw)
    order = sorted(range(len(jobs)), key=lambda n: (-HUEY_PRIORITY[priorities[n]], n))
    assert stored == [serialized[n] for n in order]
    assert [huey.deserialize_task(raw).args[0]["scan_id"] for raw in stored] == [f"scan-{n}" for n in order]
    # Outside a batch, an enqueue is Huey's own insert.
    queue.enqueue(jobs[0])
    assert one_at_a_time == [serialized[-1]] and huey.storage.dequeue() == serialized[-1]

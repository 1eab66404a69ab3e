"""Remote workers end to end: a real redis-server, ``serve`` with ``queue.workers = 0``, and real
``cix-appliance worker`` processes (one placed in zone 127.0.0.2/32) running real nmap scans of
loopback ports. Every process here is started by the test and ended by its pid."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import APPLIANCE, Server, cli, cli_json
from tests.helpers import free_port, live_group_members, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("nmap") is None,
    reason="redis-server and nmap are installed by ./test.sh")]
SLOW = {"ports": "1-65535", "timing": "T2", "serviceDetection": False}


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--requirepass", self.password,
             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ready, 20, what="redis-server")

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _ready(self) -> bool:
        import redis
        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Worker:
    def __init__(self, server: Server, redis: Redis, name: str, workdir: Path, *zones: str,
                 concurrency: int = 2, command: list[str] = APPLIANCE) -> None:
        args = [a for z in zones for a in ("--zone", z)]
        self.token = cli_json("workers", "add", name, "--data-dir", str(server.data_dir), *args,
                              command=command)["token"]
        self.name = name
        self.workdir = workdir
        self.log = workdir.parent / f"worker-{name}.log"
        tmp = workdir.parent / "tmp"  # where the binary unpacks itself (see Server.start)
        tmp.mkdir(exist_ok=True)
        env = {**os.environ, "CIX_WORKER_TOKEN": self.token, "CIX_QUEUE_URL": redis.url, "TMPDIR": str(tmp)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*command, "worker", "--appliance", server.base, "--ca-file",
                                          str(server.data_dir / "tls-cert.pem"), "--concurrency", str(concurrency),
                                          "--work-dir", str(workdir)], stdout=log, stderr=log, env=env)

    def scanner_pids(self) -> list[int]:
        """Processes whose working directory is one of this worker's scan dirs."""
        scans = str(self.workdir / "scans")
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.readlink(f"/proc/{name}/cwd").startswith(scans) and int(name) != self.proc.pid:
                        found.append(int(name))
                except OSError:
                    continue
        return [p for p in found if live_group_members(p)]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def site(tmp_path) -> Iterator[tuple[Server, str, Redis, list[Worker]]]:
    data = tmp_path / "data"
    admin = cli_json("init", "--data-dir", str(data), "--allow-loopback")["key"]
    redis = Redis(tmp_path)
    server = Server(data)
    workers: list[Worker] = []
    try:
        for key, value in (("queue.redis_url", f'"{redis.url}"'), ("queue.backend", '"redis"'),
                           ("queue.workers", "0"), ("scans.lease_seconds", "5"),
                           ("scans.reconcile_interval_seconds", "1")):
            cli("config", "set", key, value, "--data-dir", str(data))
        yield server, admin, redis, workers
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL)
            for pid in worker.scanner_pids():
                os.kill(pid, signal.SIGKILL)
        if server.proc is not None:
            server.stop(signal.SIGKILL)
        redis.stop()


def scan(c: httpx.Client, target: str = "127.0.0.1", **options: object) -> dict:
    r = c.post("/api/v1/scans", json={"scanType": "nmap", "target": target,
                                      "options": options or {"ports": "1", "serviceDetection": False}})
    assert r.status_code == 201, r.text
    return r.json()["data"]


def attempts(server: Server, scan_id: str) -> int:
    with sqlite3.connect(server.data_dir / "appliance.db") as conn:
        return conn.execute("SELECT attempts FROM scans WHERE id = ?", (scan_id,)).fetchone()[0]


def test_remote_workers_route_cancel_fail_over_and_refuse_revoked_tokens(site, tmp_path):
    server, admin, redis, workers = site
    server.start()
    with server.client(admin) as c:
        # Priorities hold on Redis: queued before any worker runs, started highest first.
        ordered = {p: c.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1", "priority": p,
                                                    "options": {"ports": "1", "serviceDetection": False}}).json()
                   ["data"]["id"] for p in ("low", "normal", "high", "critical")}
        workers.append(Worker(server, redis, "w1", tmp_path / "w1", concurrency=1))
        finals = {p: server.wait_scan(c, i, 60) for p, i in ordered.items()}
        by_start = sorted(finals, key=lambda p: finals[p]["startedAt"])
        assert by_start == ["critical", "high", "normal", "low"]

        workers.append(Worker(server, redis, "w2", tmp_path / "w2"))
        workers.append(Worker(server, redis, "seg", tmp_path / "seg", "127.0.0.2/32"))
        wait_for(lambda: len(c.get("/health").json()) and all(
            w["lastSeenAt"] for w in cli_json("workers", "list", "--data-dir", str(server.data_dir))), 30,
            what="every worker to say hello")

        # Zones: 127.0.0.2 runs only on the segment's worker; 127.0.0.1 never does.
        inside = [scan(c, "127.0.0.2") for _ in range(2)]
        outside = [scan(c, "127.0.0.1") for _ in range(3)]
        assert {server.wait_scan(c, s["id"], 60)["worker"] for s in inside} == {"seg"}
        assert {server.wait_scan(c, s["id"], 60)["worker"] for s in outside} <= {"w1", "w2"}

        # Submit-to-start on idle workers: Redis wakes a blocked worker at once.
        delays = []
        for _ in range(5):
            done = server.wait_scan(c, scan(c)["id"], 60)
            delays.append(_ms(done["startedAt"]) - _ms(done["createdAt"]))
        print(f"\nsubmit → start on an idle remote worker: median {statistics.median(delays):.0f} ms, "
              f"max {max(delays):.0f} ms (includes the claim's HTTPS round trip and DNS-free re-vetting)")

        # Cancel of a running remote scan: its process group is gone within 5 s.
        slow = scan(c, "127.0.0.1", **SLOW)
        runner = wait_for(lambda: _worker_of(c, slow["id"]), 30, what="the slow scan to start")
        worker = next(w for w in workers if w.name == runner)
        pids = wait_for(worker.scanner_pids, 15, what="the remote nmap process")
        assert c.post(f"/api/v1/scans/{slow['id']}/cancel").json()["data"]["status"] == "cancelled"
        wait_for(lambda: not any(live_group_members(p) for p in pids), 5, interval=0.1,
                 what="the remote process group to end")

        # kill -9 of a worker mid-scan: the lease expires and the scan completes on the other one.
        medium = scan(c, "127.0.0.1", ports="1-30000", timing="T3", serviceDetection=False)
        runner = wait_for(lambda: _worker_of(c, medium["id"]), 30, what="the scan to start")
        victim = next(w for w in workers if w.name == runner)
        orphans = wait_for(victim.scanner_pids, 15, what="the victim's nmap")
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        wait_for(lambda: not any(live_group_members(p) for p in orphans), 5, what="its nmap to die with it")
        final = server.wait_scan(c, medium["id"], 120)
        assert final["status"] == "completed" and final["worker"] not in (runner, "seg")
        assert attempts(server, medium["id"]) == 2

        # A revoked token is refused at once, and the worker holding it can no longer claim.
        cli("workers", "revoke", "seg", "--data-dir", str(server.data_dir))
        seg = next(w for w in workers if w.name == "seg")
        with httpx.Client(base_url=server.base, verify=server.tls_context()) as raw:
            refused = raw.post("/internal/v1/worker/hello", json={}, headers={"X-Worker-Token": seg.token})
        assert (refused.status_code, refused.json()["code"]) == (401, "KEY_REVOKED")
    for worker in workers:
        if worker.proc.poll() is None:
            assert worker.stop() == 0  # SIGTERM: a clean stop
    assert server.stop() == 0


def test_two_hundred_queued_scans_are_claimed_exactly_once(site, tmp_path):
    server, admin, redis, workers = site
    server.start()
    with server.client(admin) as c:
        ids = [scan(c)["id"] for _ in range(200)]
        workers.extend([Worker(server, redis, "a", tmp_path / "a", concurrency=4),
                        Worker(server, redis, "b", tmp_path / "b", concurrency=4)])
        finals = [server.wait_scan(c, i, 300) for i in ids]
    assert all(f["status"] == "completed" for f in finals)
    assert {f["worker"] for f in finals} == {"a", "b"}
    with sqlite3.connect(server.data_dir / "appliance.db") as conn:
        starts = dict(conn.execute("SELECT scan_id, count(*) FROM scan_events WHERE event = 'scan.started'"
                                   " GROUP BY scan_id").fetchall())
        tries = {row[0] for row in conn.execute("SELECT attempts FROM scans")}
    assert len(starts) == 200 and set(starts.values()) == {1} and tries == {1}
    print(f"\n200 scans: worker a ran {sum(f['worker'] == 'a' for f in finals)}, "
          f"b ran {sum(f['worker'] == 'b' for f in finals)}")


def _worker_of(c: httpx.Client, scan_id: str) -> str | None:
    data = c.get(f"/api/v1/scans/{scan_id}").json()["data"]
    return data["worker"] if data["status"] == "running" else None


def _ms(iso: str) -> float:
    from appliance import clock
    return clock.parse_iso(iso) * 1000


"""Helpers the bench runs as separate processes with an appliance source tree on PYTHONPATH, so that
they use that tree's own code (the CLI's key ops, the lifecycle's cancel op, the nmap adapter):

    tools.py keys --count N --data-dir D         N keys (contract maxima for rate limits), one per line
    tools.py cancel --data-dir D                 cancel every queued scan (lifecycle.end, as the API does)
    tools.py seed-scans --count N --data-dir D   N finished scans inserted directly (copies of one real row)
    tools.py counts --data-dir D                 scans by status, findings, Huey tasks waiting (JSON)
    tools.py nmap-argv --target T --port P --workdir W   the argv the nmap engine runs for these options
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

from appliance import apikeys, config
from appliance.scanning import lifecycle
from appliance.store import apply_sync, connect


def keys(data_dir: Path, count: int) -> None:
    with connect(config.load(data_dir).db_path) as conn:
        tenant = conn.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()[0]
        ops, raws = [], []
        for index in range(count):
            spec = apikeys.parse_spec({"name": f"bench-{time.time_ns()}-{index}", "rateLimitPerMinute": 1000,
                                       "rateLimitPerHour": 50_000, "rateLimitPerDay": 500_000}, ["nmap"])
            _, raw, key_ops = apikeys.create_ops(tenant, spec, "cli:bench")
            ops += key_ops
            raws.append(raw)
        apply_sync(conn, ops)
    print("\n".join(raws))


def cancel(data_dir: Path) -> None:
    conn = connect(config.load(data_dir).db_path)
    ids = [r[0] for r in conn.execute("SELECT id FROM scans WHERE status = 'queued'")]
    for start in range(0, len(ids), 1000):
        apply_sync(conn, [lifecycle.end(i, "cancelled") for i in ids[start:start + 1000]])
    print(len(ids))


def seed_scans(data_dir: Path, count: int) -> None:
    """Finished scans spread over the last 25 days, each a copy of the newest real scan row."""
    conn = connect(config.load(data_dir).db_path)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(scans)")]
    fresh = {"id": "lower(printf('%s-%s-4%s-a%s-%s', hex(randomblob(4)), hex(randomblob(2)),"
                   " substr(hex(randomblob(2)), 2), substr(hex(randomblob(2)), 2), hex(randomblob(6))))",
             "status": "'completed'", "created_at": "s.created_at - n.i * (25 * 86400.0 / :count)",
             "queued_at": "s.created_at - n.i * (25 * 86400.0 / :count)",
             "started_at": "s.created_at - n.i * (25 * 86400.0 / :count) + 1",
             "completed_at": "s.created_at - n.i * (25 * 86400.0 / :count) + 5"}
    select = ", ".join(fresh.get(c, f"s.{c}") for c in columns)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)"
                 f" INSERT INTO scans ({', '.join(columns)}) SELECT {select} FROM n,"
                 f" (SELECT * FROM scans ORDER BY created_at DESC LIMIT 1) AS s", {"count": count})
    conn.execute("COMMIT")
    print(count)


def counts(data_dir: Path) -> None:
    cfg = config.load(data_dir)
    conn = connect(cfg.db_path)
    by_status = dict(conn.execute("SELECT status, count(*) FROM scans GROUP BY status").fetchall())
    findings = conn.execute("SELECT count(*) FROM findings").fetchone()[0]
    queue = sqlite3.connect(cfg.queue_path)
    tables = [r[0] for r in queue.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    tasks = queue.execute("SELECT count(*) FROM task").fetchone()[0] if "task" in tables else 0
    print(json.dumps({"scans": by_status, "findings": findings, "queued_tasks": tasks}))


def nmap_argv(target: str, port: int, workdir: Path) -> None:
    from engines.base import ScanSpec
    from engines.nmap import NmapEngine

    engine = NmapEngine()
    found = engine.probe()
    spec = ScanSpec("direct", target, "ip", engine.validate({"ports": str(port)}), 300, workdir,
                    found.path or engine.binary)
    print(json.dumps(engine.build_argv(spec)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["keys", "cancel", "seed-scans", "counts", "nmap-argv"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--target", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.command == "keys":
        keys(args.data_dir, args.count)
    elif args.command == "cancel":
        cancel(args.data_dir)
    elif args.command == "seed-scans":
        seed_scans(args.data_dir, args.count)
    elif args.command == "counts":
        counts(args.data_dir)
    else:
        nmap_argv(args.target, args.port, args.workdir)


if __name__ == "__main__":
    main()

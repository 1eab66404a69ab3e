"""Per-request cost without TLS, sockets or wrk: the appliance's ASGI app and the bare reference
app called in-process, in a loop, on one thread. Low-noise figures for profiling the request path.

    python bench/asgi.py [--requests N] [--profile get|list|post]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.types import ASGIApp, Message


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), *headers],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8443), "state": {}}


async def call(app: ASGIApp, request: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
    status, chunks = 0, []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            chunks.append(message.get("body", b""))
    await app(request, receive, send)
    return status, b"".join(chunks)


async def loop(app: ASGIApp, make: Callable[[int], dict[str, Any]], count: int, body: bytes = b"") -> float:
    """CPU microseconds of this thread per request (CPU time, not wall time: other processes on a
    shared machine then skew it much less), every answer checked to be 2xx."""
    began = time.thread_time()
    for index in range(count):
        status, answer = await call(app, make(index), body)
        assert 200 <= status < 300, (status, answer[:300])
    return (time.thread_time() - began) / count * 1e6


async def main(count: int, profile: str | None) -> None:
    from reference import build_app

    from appliance import config
    from appliance.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        run = [sys.executable, "-m", "appliance"]
        admin = json.loads(subprocess.run([*run, "init", "--data-dir", str(data), "--allow-loopback", "--json"],
                                          capture_output=True, text=True, check=True).stdout)["key"]
        subprocess.run([*run, "config", "set", "queue.workers", "0", "--data-dir", str(data)], check=True,
                       capture_output=True)
        keys = subprocess.run([sys.executable, str(Path(__file__).parent / "tools.py"), "keys", "--count", "400",
                               "--data-dir", str(data)], capture_output=True, text=True, check=True).stdout.split()
        app = create_app(config.load(data))
        async with app.router.lifespan_context(app):
            submit = json.dumps({"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": "80"}}).encode()
            hdr = [(b"x-api-key", admin.encode()), (b"content-type", b"application/json"),
                   (b"content-length", str(len(submit)).encode())]
            ids = []
            for _ in range(100):
                _, body = await call(app, scope("POST", "/api/v1/scans", hdr), submit)
                ids.append(json.loads(body)["data"]["id"])
            scan_body = (await call(app, scope("GET", f"/api/v1/scans/{ids[0]}", [(b"x-api-key", admin.encode())])))[1]
            list_body = (await call(app, scope("GET", "/api/v1/scans", [(b"x-api-key", admin.encode())],
                                               b"limit=100")))[1]
            bodies = Path(tmp) / "bodies.json"
            bodies.write_text(json.dumps({"/scan": json.loads(scan_body), "/list": json.loads(list_body),
                                          "/health": {"status": "ok"}}))
            import os
            os.environ["BENCH_REF_BODIES"] = str(bodies)
            ref = build_app()
            key_headers = [[(b"x-api-key", k.encode())] for k in keys]
            post = [[(b"x-api-key", k.encode()), *hdr[1:]] for k in keys[200:]]
            cases: list[tuple[str, ASGIApp, Callable[[int], dict[str, Any]], int, bytes]] = [
                ("GET /scans/:id", app, lambda i: scope("GET", f"/api/v1/scans/{ids[0]}", key_headers[i % 200]),
                 count, b""),
                ("reference /scan", ref, lambda i: scope("GET", "/scan", []), count, b""),
                ("GET /scans?limit=100", app, lambda i: scope("GET", "/api/v1/scans", key_headers[200 + i % 200],
                                                              b"limit=100"), count // 10, b""),
                ("reference /list", ref, lambda i: scope("GET", "/list", []), count // 10, b""),
                ("GET /health", app, lambda i: scope("GET", "/health", []), count, b""),
                ("reference /health", ref, lambda i: scope("GET", "/health", []), count, b""),
                ("POST /scans", app, lambda i: scope("POST", "/api/v1/scans", post[i % 200]), count // 10, submit),
            ]
            best: dict[str, float] = {}
            for _ in range(5):  # alternating rounds; the fastest round of each is its cost without noise
                for name, target, make, n, payload in cases:
                    cost = await loop(target, make, n // 5, payload)
                    best[name] = min(best.get(name, cost), cost)
            for name, cost in best.items():
                print(f"{name:24s} {cost:8.1f} µs/request (CPU, best of 5 alternating rounds)", flush=True)
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                case = {"get": 0, "list": 2, "health": 4, "post": 6}[profile]
                await loop(app, cases[case][2], cases[case][3], cases[case][4])
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", choices=["get", "list", "health", "post"],
                        help="cProfile the appliance on this route")
    args = parser.parse_args()
    import uvloop
    uvloop.run(main(args.requests, args.profile))

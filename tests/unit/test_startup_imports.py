"""What ``serve`` loads before its first request. Each package named here cost the single binary's
start tens of milliseconds though only some requests or settings use it (bench/README.md, "single
binary"); they are imported where they are used. Run in a fresh interpreter: the test process has
them all loaded already."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Package -> what loads it when it is needed.
LAZY = {
    "redis": "queue.backend = redis, remote workers",
    "httpx": "the first webhook delivery, remote workers",
    "httpcore": "the first webhook delivery",
    "dns": "an OSINT scan's DNS brute force",
    "uvicorn": "server.pq_port",
    "OpenSSL": "server.pq_port",
    "prometheus_client": "metrics.enabled",
    "cryptography.x509": "init (the self-signed certificate)",
    "rich": "nothing (httpx's own CLI)",
}

SERVE = """
import asyncio, json, sys
from pathlib import Path
import appliance.cli
from appliance import config
from appliance.app import create_app
from appliance.server import run

async def main():
    app = create_app(config.load(Path(sys.argv[1])))
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.3)  # the delivery loop's first pass, the dispatcher's first runs

asyncio.run(main())
print(json.dumps(sorted(m for m in sys.argv[2:] if m in sys.modules)))
"""

WITH_REDIS = """
import sys
from appliance.scanning.queue import Backend
assert "redis" not in sys.modules
import huey.storage
assert huey.storage.Redis is None
backend = Backend("redis", redis_url="redis://127.0.0.1:1/0")  # a client; no connection is made
import redis
storage = backend.huey("cix-test").storage
assert isinstance(storage, huey.storage.PriorityRedisStorage) and isinstance(storage.conn, redis.Redis)
assert huey.storage.ConnectionError is redis.exceptions.ConnectionError
assert huey.storage.TimeoutError is redis.exceptions.TimeoutError
print("ok")
"""


def _python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_serve_starts_without_the_packages_only_some_requests_need(admin_key: str, data_dir: Path) -> None:
    loaded = json.loads(_python(SERVE, str(data_dir), *LAZY))
    assert loaded == [], {m: LAZY[m] for m in loaded}


def test_a_redis_queue_hands_huey_the_client_it_was_loaded_without() -> None:
    assert _python(WITH_REDIS) == "ok"

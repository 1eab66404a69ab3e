"""``GET /engines`` (§10): every scan type, whether it can run here, and what is missing."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appliance import clock
from appliance.api.context import authorize
from appliance.api.envelope import ok
from engines.base import Engine, Scanner
from engines.offline_data import age_seconds
from engines.registry import probe_all


def engine_json(scanner: Scanner) -> dict[str, Any]:
    found = scanner.probe()
    now = time.time()
    offline = [{"name": d.name, "required": d.required, "version": d.version, "size": d.size,
                "updatedAt": clock.iso(d.updated_at), "ageSeconds": age_seconds(d, now), "missing": d.missing}
               for d in scanner.data_status()]
    # The age of the stalest data the engine has: what an operator must refresh first.
    ages = [d["ageSeconds"] for d in offline if d["ageSeconds"] is not None]
    data: dict[str, Any] = {
        "scanType": scanner.name, "name": scanner.title, "installed": found.installed,
        "available": found.available, "version": found.version, "missing": list(found.missing),
        "offlineData": offline, "offlineDataAge": max(ages) if ages else None,
        "targetTypes": sorted(scanner.target_types), "defaultTimeout": scanner.default_timeout,
    }
    if isinstance(scanner, Engine):
        data["options"] = scanner.option_schema()
    return data


async def list_engines(request: Request) -> JSONResponse:
    services, _ = authorize(request, "engines:read")
    # The first probe runs each scanner's --version: off the event loop.
    def describe() -> list[dict[str, Any]]:
        probe_all(services.engines)
        return [engine_json(s) for s in services.engines.values()]
    data = await asyncio.to_thread(describe)
    return ok(data)


routes = [Route("/engines", list_engines, methods=["GET"])]

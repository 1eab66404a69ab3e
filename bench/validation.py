"""How long ``POST /scans`` validation takes per request: the body's JSON checks, then everything
``parse_scan`` does (shape, scan type, key limits, engine availability, target, nmap options,
config) — no database, no DNS. Also, for the record of the library choice (docs/architecture.md),
the same body shape validated by msgspec and by pydantic v2 when pydantic is installed (it comes
with the test dependencies, not with the appliance).

    .venv/bin/python bench/validation.py [--rounds 20000]
"""
from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path
from typing import Annotated, Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.api.envelope import _check_tree
from appliance.apikeys import KeyGrant
from appliance.bodies import given, parse, scan_shape
from appliance.scanning.submit import all_target_types, parse_scan
from engines import build_registry

BODY = {"scanType": "nmap", "target": "127.0.0.1", "name": "nightly web", "tags": ["ci", "nightly"],
        "priority": "high", "options": {"ports": "22,80,443,8000-8100", "timing": "T4", "serviceDetection": True,
                                        "scripts": "http-title,ssl-cert"},
        "config": {"timeoutSeconds": 600}, "callbackUrl": "https://ci.example.com/hooks/scan"}
GRANT = KeyGrant("key-bench", "tenant-bench", frozenset({"scans:create"}), None, None, 1000, 50000, 500000,
                 "active", None, None)


def per_call(fn: Any, rounds: int) -> float:
    """Microseconds per call: the best of five runs of ``rounds`` calls."""
    return min(timeit.repeat(fn, number=rounds, repeat=5)) / rounds * 1e6


def pydantic_shape() -> Any:
    try:
        from pydantic import BaseModel, ConfigDict, Field, StringConstraints
    except ImportError:
        return None
    text255 = Annotated[str, StringConstraints(max_length=255)]

    class ScanShape(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        scanType: Annotated[str, StringConstraints(max_length=64)]
        target: Annotated[str, StringConstraints(max_length=2048)]
        targetType: Literal["host", "url", "domain", "ip", "network", "image", "path", "repository"] | None = None
        name: text255 | None = None
        priority: Literal["critical", "high", "normal", "low"] | None = None
        options: dict[str, Any] | None = None
        config: dict[str, Any] | None = None
        tags: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
                        Field(max_length=20)] | None = None
        timeout: Annotated[int, Field(ge=30, le=86400)] | None = None
        assetId: text255 | None = None
        callbackUrl: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https://\S+$")] | None = None

    return ScanShape


def main(rounds: int) -> None:
    engines = build_registry()
    if not engines["nmap"].probe().available:
        sys.exit("nmap is not installed: parse_scan would stop at ENGINE_UNAVAILABLE (./scripts/install.sh)")
    raw = json.dumps(BODY).encode()
    shape = scan_shape(all_target_types(engines))
    parse_scan(BODY, GRANT, engines)  # warm: caches, compiled patterns

    full = per_call(lambda: parse_scan(BODY, GRANT, engines), rounds)
    tree = per_call(lambda: _check_tree(json.loads(raw)), rounds)
    msgspec_shape = per_call(lambda: given(parse(BODY, shape)), rounds)
    print(f"POST /scans validation (parse_scan: shape, scan type, target, nmap options, config): {full:6.1f} µs")
    print(f"  JSON decode + depth/Unicode checks of the body (read_json):                      {tree:6.1f} µs")
    print(f"  together:                                                                        {full + tree:6.1f} µs"
          f"  (budget 50 µs)")
    print(f"body shape alone, msgspec:  {msgspec_shape:5.2f} µs")
    model = pydantic_shape()
    if model is not None:
        model.model_validate(BODY)
        print(f"body shape alone, pydantic: {per_call(lambda: model.model_validate(BODY), rounds):5.2f} µs")
    else:
        print("body shape alone, pydantic: not installed (pip install pydantic to compare)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20000)
    main(parser.parse_args().rounds)

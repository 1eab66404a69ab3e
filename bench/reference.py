"""The bare reference: a Starlette app with no middleware answering the same JSON the appliance does,
served by uvicorn with httptools and uvloop over the appliance's certificate, TLS 1.3 only.

    python bench/reference.py --cert C --key K --port P --bodies FILE [--workers N]

``FILE`` is a JSON object ``{"/path": <JSON document>, ...}`` written by the bench from the appliance's
own answers, so each reference route renders a document of the same size and shape (rendered per
request with Starlette's ``JSONResponse``, as a plain Starlette app does).
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def tls13_context(config: uvicorn.Config, _default: Any) -> ssl.SSLContext:
    """The appliance's TLS settings (appliance/tls.py): TLS 1.3 minimum, the same certificate.
    Module-level so that uvicorn can hand it to spawned worker processes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(os.environ["BENCH_REF_CERT"], os.environ["BENCH_REF_KEY"])
    return context


def build_app() -> Starlette:
    with open(os.environ["BENCH_REF_BODIES"]) as fh:
        bodies: dict[str, Any] = json.load(fh)

    def route(path: str, document: Any) -> Route:
        async def endpoint(request: Request) -> JSONResponse:
            return JSONResponse(document)
        return Route(path, endpoint, methods=["GET"])

    return Starlette(routes=[route(path, document) for path, document in bodies.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--bodies", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # Spawned workers re-import this module: settings travel in the environment.
    os.environ.update(BENCH_REF_CERT=args.cert, BENCH_REF_KEY=args.key, BENCH_REF_BODIES=args.bodies)
    uvicorn.run("reference:build_app", factory=True, host="127.0.0.1", port=args.port, workers=args.workers,
                http="httptools", loop="uvloop", ssl_context_factory=tls13_context, access_log=False,
                log_level="warning", server_header=False, date_header=False)


if __name__ == "__main__":
    main()

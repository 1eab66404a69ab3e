"""Shared fixtures: an initialized data dir, and the app served in-process through httpx."""
from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette

from appliance import config as config_mod
from appliance.app import create_app
from appliance.cli import cli


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_cli(*args: str) -> str:
    """Run a CLI command in-process; fail the test with its output if it fails."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def run_cli_async(*args: str) -> str:
    """``run_cli`` from an async test: off the event loop, so that a server running in-process keeps
    committing (a CLI write waits for the server's writer, which needs the loop to finish its transaction)."""
    import asyncio
    return await asyncio.to_thread(run_cli, *args)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def admin_key(data_dir: Path) -> str:
    out = run_cli("init", "--data-dir", str(data_dir), "--allow-loopback", "--json")
    return json.loads(out)["key"]


def make_key(data_dir: Path, *args: str) -> dict:
    return json.loads(run_cli("keys", "create", "--data-dir", str(data_dir), "--json", *args))


class AppClient(httpx.AsyncClient):
    """An in-process client that also hands tests the app (``client.app.state.services``)."""

    app: Starlette


@contextlib.asynccontextmanager
async def serve_in_process(data_dir: Path, **overrides: object) -> AsyncIterator[AppClient]:
    """The whole app with its lifespan (writer, queue consumer, reconciler) behind httpx."""
    cfg = config_mod.load(data_dir)
    for key, value in overrides.items():
        cfg._values[key.replace("__", ".")] = value
    app = create_app(cfg)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with AppClient(transport=transport, base_url="https://testserver") as client:
            client.app = app
            yield client


@pytest.fixture
async def client(data_dir: Path, admin_key: str) -> AsyncIterator[AppClient]:
    async with serve_in_process(data_dir) as c:
        c.headers["X-API-Key"] = admin_key
        yield c

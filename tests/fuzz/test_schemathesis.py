"""schemathesis against the served OpenAPI document, in process (ASGI), with a fixed seed.

Every operation gets a bounded number of generated requests, valid and invalid; each answer must
be documented (status, content type, headers) and fit its schema, and none may be a server error.
Safety: the fuzz tenant may scan only 127.0.0.1, nothing scans (``queue.workers = 0``), webhooks and
callbacks may reach no address at all, and no name is resolved (``getaddrinfo`` answers only for
literals and localhost), so generated URLs and hostnames never leave this process.
"""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from appliance import config as config_mod
from appliance import templates
from appliance.app import create_app
from appliance.store import apply_sync, connect
from tests.conftest import run_cli
from tests.results_helpers import finding, scan_ops

MAX_EXAMPLES = 30
SEED = 20261129
_real_getaddrinfo = socket.getaddrinfo


def _offline_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """Literal addresses and localhost only: a generated name is never looked up."""
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text.strip("[]"))
    except OSError:
        if text != "localhost":
            raise socket.gaierror(socket.EAI_NONAME, "name resolution is off in the fuzz test") from None
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(scope="module")
def fuzz_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    d = ["--data-dir", str(data)]
    run_cli("init", *d)
    run_cli("tenants", "create", "fuzz", *d)
    run_cli("targets", "allow", "--tenant", "fuzz", "127.0.0.1", *d)
    key = json.loads(run_cli("keys", "create", "--tenant", "fuzz", "--name", "fuzz", "--json",
                             *[a for s in _all_scopes() for a in ("--scope", s)], *d))
    victim = json.loads(run_cli("keys", "create", "--tenant", "fuzz", "--name", "victim", "--json", *d))
    conn = connect(data / "appliance.db")
    with conn:  # thousands of requests in a minute: the test's own key is not what is under test
        conn.execute("UPDATE api_keys SET rate_minute = 10000000, rate_hour = 10000000, rate_day = 10000000"
                     " WHERE id = ?", (key["id"],))
    tenant = conn.execute("SELECT id FROM tenants WHERE name = 'fuzz'").fetchone()[0]
    scan_id, ops = scan_ops(tenant, [finding("a", "high"), finding("b", "low", url="https://127.0.0.1/x")],
                            scan_id="00000000-0000-4000-8000-00000000f022")
    apply_sync(conn, ops)
    template_id, template_ops = templates.create_ops(tenant, {
        "name": "t", "description": None, "scan_type": "nmap", "target_type": None, "priority": "normal",
        "options": "{}", "config": "{}", "tags": "[]", "timeout": None}, "cli:test")
    apply_sync(conn, template_ops)
    conn.close()
    KNOWN.update(scan_id=scan_id, template_id=template_id, key_id=victim["id"])
    return data, key["key"]


@pytest.fixture
def fuzz_app(fuzz_data: tuple[Path, str]) -> Iterator[tuple[Any, str]]:
    """A fresh app on the shared data dir: schemathesis ends an app's lifespan with each test."""
    data, key = fuzz_data
    cfg = config_mod.load(data)
    cfg._values.update({"queue.workers": 0, "webhooks.denied_networks": ["0.0.0.0/0", "::/0"],
                        "ratelimit.failed_auth_per_minute": 100000, "metrics.enabled": True})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", _offline_getaddrinfo)
        yield create_app(cfg), key


def _all_scopes() -> tuple[str, ...]:
    from appliance.credentials import SCOPES

    return SCOPES


ANSWERS: dict[str, set[int]] = {}  # operation -> statuses seen
KNOWN: dict[str, str] = {}  # path parameter -> the id of a resource of the fuzz tenant


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx but the documented 503s (an engine not installed here, a full disk)."""
    ANSWERS.setdefault(case.operation.label, set()).add(response.status_code)
    if response.status_code >= 500:
        code = json.loads(response.content or b"{}").get("code") if response.status_code == 503 else None
        if code not in ("ENGINE_UNAVAILABLE", "SERVICE_UNAVAILABLE"):
            raise AssertionError(f"server error {response.status_code}: {response.content[:300]!r}")
    return None


CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


def _operations(app: Any) -> list[Any]:
    loaded = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    return [cast(Any, result).ok() for result in loaded.get_all_operations()]


@pytest.mark.parametrize("mode, known", [(GenerationMode.POSITIVE, False), (GenerationMode.NEGATIVE, False),
                                         (GenerationMode.POSITIVE, True)])
def test_api_conforms_to_its_document(fuzz_app: tuple[Any, str], mode: GenerationMode, known: bool) -> None:
    """Each operation, ``MAX_EXAMPLES`` generated requests (a fixed seed: the same requests every run);
    ``known``: operations on one resource get the id of one that exists, the rest of them generated."""
    app, key = fuzz_app
    failures: list[str] = []
    # Deletions last: a known resource is then still there for every other operation on it (a PATCH
    # of the known template must be able to succeed, whatever the generated requests before it were).
    operations = sorted(_operations(app), key=lambda op: op.method.upper() == "DELETE")
    assert len(operations) >= 35
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        if known and (not names or names - set(KNOWN)):
            continue
        fixed = {name: KNOWN[name] for name in names} if known else None

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
        @seed(SEED)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"}
            case.call_and_validate(headers={**headers, "X-API-Key": key}, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to negate in an operation without inputs
        except Exception as exc:  # every operation is tried; all failures are reported together
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert failures == [], "\n\n".join(failures)


def test_linked_operations_in_sequence(fuzz_app: tuple[Any, str]) -> None:
    """Stateful: the document's links chain a created scan, template, key or webhook into the
    operations on it (results, diff, cancel, launch, rotate...), with the same checks."""
    app, key = fuzz_app
    machine = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app).as_state_machine()

    class Machine(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"X-API-Key": key}}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    run_state_machine_as_test(Machine, settings=settings(
        max_examples=MAX_EXAMPLES, stateful_step_count=6, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck)), _min_steps=2)


def test_fuzz_reached_every_operation_and_scanned_nothing_beyond_loopback(fuzz_data: tuple[Path, str]) -> None:
    """After the fuzzing: every operation answered, valid requests got through (2xx) where a fuzzer
    can make one, every scan stored targets 127.0.0.1, and none ever ran."""
    assert len(ANSWERS) >= 35, "; ".join(f"{k}: {sorted(v)}" for k, v in ANSWERS.items())
    succeeded = {label for label, statuses in ANSWERS.items() if any(200 <= s < 300 for s in statuses)}
    assert {"POST /api/v1/scans", "POST /api/v1/api-keys", "POST /api/v1/scan-templates", "GET /api/v1/scans",
            "GET /api/v1/scans/{scan_id}/results", "GET /api/v1/scans/{scan_id}", "GET /api/v1/usage/history",
            "PATCH /api/v1/scan-templates/{template_id}", "DELETE /api/v1/api-keys/{key_id}"} <= succeeded, \
        sorted(set(ANSWERS) - succeeded)
    conn = connect(fuzz_data[0] / "appliance.db")
    rows = conn.execute("SELECT target, status, started_at FROM scans WHERE id != ?", (KNOWN["scan_id"],)).fetchall()
    conn.close()
    assert rows and all(r["target"] == "127.0.0.1" and r["started_at"] is None for r in rows), \
        [tuple(r) for r in rows[:5]]

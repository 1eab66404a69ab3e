"""The delivery state machine: a ``webhook_deliveries`` row is ``pending`` until an attempt gets a
2xx (``succeeded``) or its retries run out (``failed``).

Rows are the only state: a due row (``next_attempt_at`` passed) is sent by the loop here, so retries
survive restarts and the delivery id never changes between attempts. Sends are concurrent and
bounded (``webhooks.concurrency`` overall, ``webhooks.tenant_concurrency`` per tenant, each tenant's
oldest due rows taken in turn), on the event loop with one async HTTP client: a dead receiver ties
up at most its tenant's share for 10 s per attempt, never a scan worker or another tenant.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance import clock
from appliance.store import Reader, Writer
from appliance.store.ops import Op, Statement
from appliance.webhooks import signing
from appliance.webhooks.egress import Destination, EgressError, EgressPolicy
from appliance.webhooks.secretbox import SecretBox
from appliance.webhooks.store import signing_secrets

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
TIMEOUT = 10.0
EXCERPT = 1024
JITTER = 0.2


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int | None = None
    excerpt: str | None = None
    duration_ms: int | None = None
    error: str | None = None
    final: bool = False  # no retry: there is nothing left to deliver to


def client_context(ca_file: str = "") -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class DeliveryEngine:
    def __init__(self, reader: Reader, writer: Writer, box: SecretBox, egress: EgressPolicy,
                 schedule: Sequence[float], context: ssl.SSLContext | None = None, concurrency: int = 64,
                 tenant_concurrency: int = 48, poll: float = 1.0) -> None:
        self._reader = reader
        self._writer = writer
        self._box = box
        self.egress = egress
        self.schedule = list(schedule)
        self._context = context
        self._limit = concurrency
        self._tenant_limit = tenant_concurrency
        self._poll = poll
        self._inflight: dict[str, str] = {}  # delivery id -> tenant id
        self._per_tenant: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        # Told the delivery's status after each recorded attempt (metrics).
        self.on_attempt: Callable[[str], None] | None = None

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="webhook-deliveries")
        self._wake.set()  # deliveries that came due while the appliance was down

    def _http(self) -> httpx.AsyncClient:
        """The client, made for the first send: httpx and the transport it builds (httpcore, h11,
        anyio) are a tenth of the appliance's start, and most starts have nothing to deliver. So is
        reading the system's CA store, when no ``context`` was given."""
        if self._client is None:
            import httpx

            if self._context is None:
                self._context = client_context()

            # No keep-alive: a pooled connection is keyed by address, and one verified for one name
            # must not carry another name's delivery. Proxies from the environment are never used.
            self._client = httpx.AsyncClient(
                verify=self._context, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(TIMEOUT),
                limits=httpx.Limits(max_connections=self._limit + 16, max_keepalive_connections=0))
        return self._client

    async def stop(self, grace: float = 2.0) -> None:
        """Stop sending; attempts still running after ``grace`` are abandoned and stay pending, to be
        sent again (same delivery id) at the next start."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    # -- scheduling ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 a cancel that lands as the wake event is set
            # is swallowed by wait_for, and this loop would outlive stop() (shutdown hung on it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self._start_due()
            except Exception:
                log.exception("webhook scheduling failed")

    def _start_due(self) -> None:
        free = self._limit - len(self._inflight)
        if free <= 0:
            return
        # Each tenant's oldest due rows, interleaved: tenant A's backlog cannot starve tenant B.
        rows = self._reader.all(
            "SELECT id, tenant_id FROM (SELECT id, tenant_id, next_attempt_at, row_number() OVER"
            " (PARTITION BY tenant_id ORDER BY next_attempt_at, id) AS n FROM webhook_deliveries"
            " WHERE status = 'pending' AND next_attempt_at <= ?) WHERE n <= ? ORDER BY n, next_attempt_at",
            (clock.now(), self._tenant_limit * 2))
        for row in rows:
            if free <= 0:
                break
            if row["id"] in self._inflight or self._per_tenant[row["tenant_id"]] >= self._tenant_limit:
                continue
            self._launch(row["id"], row["tenant_id"])
            free -= 1

    def _launch(self, delivery_id: str, tenant_id: str) -> asyncio.Task[None]:
        self._inflight[delivery_id] = tenant_id
        self._per_tenant[tenant_id] += 1
        task = asyncio.create_task(self._attempt_logged(delivery_id), name=f"delivery-{delivery_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        delivery_id = task.get_name().removeprefix("delivery-")
        tenant_id = self._inflight.pop(delivery_id, None)
        if tenant_id is not None:
            self._per_tenant[tenant_id] -= 1
            if self._per_tenant[tenant_id] <= 0:
                del self._per_tenant[tenant_id]
        self._wake.set()

    async def attempt_now(self, delivery_id: str, tenant_id: str) -> None:
        """One attempt of ``delivery_id`` right away, awaited (``POST /webhooks/:id/test``)."""
        if delivery_id not in self._inflight:
            await self._launch(delivery_id, tenant_id)

    async def _attempt_logged(self, delivery_id: str) -> None:
        try:
            await self.attempt(delivery_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery %s: attempt crashed", delivery_id)

    # -- one attempt -----------------------------------------------------------------------------
    async def attempt(self, delivery_id: str) -> None:
        row = self._reader.one("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,))
        if row is None or row["status"] != "pending":
            return
        secrets, url, error = self._target(row)
        result = Result(False, error=error, final=True)
        if error is None:
            try:
                destination = await asyncio.to_thread(self.egress.vet, url)
            except EgressError as exc:
                result = Result(False, error=f"refused by the egress policy: {exc}")
            else:
                body = row["payload"].encode()
                headers = signing.headers(row["event"], row["id"], int(time.time()), body, secrets)
                result = await self.send(destination, headers, body)
        await self._writer.write(*self._record(row, result))
        if self.on_attempt is not None:
            status = self._reader.scalar("SELECT status FROM webhook_deliveries WHERE id = ?", (row["id"],))
            if status is not None:
                self.on_attempt(status)
        if not result.ok:
            log.info("delivery %s (%s) attempt %d failed: %s", row["id"], row["event"], row["attempt"] + 1,
                     result.error)

    def _target(self, row: sqlite3.Row) -> tuple[list[str], str | None, str | None]:
        """(signing secrets, url, why it cannot be sent)."""
        if row["webhook_id"] is not None:
            hook = self._reader.one("SELECT * FROM webhooks WHERE id = ?", (row["webhook_id"],))
            if hook is None:
                return [], None, "the webhook was deleted"
            if not hook["is_active"] and row["event"] != "webhook.test":
                return [], None, "the webhook is not active"
            return signing_secrets(self._box, hook["id"], hook["secret"], hook["secret_old"],
                                   hook["secret_old_until"]), hook["url"], None
        tenant = self._reader.one("SELECT * FROM tenants WHERE id = ?", (row["tenant_id"],))
        if tenant is None or not tenant["callback_secret"]:
            return [], None, "the tenant has no callback secret"
        return signing_secrets(self._box, tenant["id"], tenant["callback_secret"], tenant["callback_secret_old"],
                               tenant["callback_secret_old_until"]), row["callback_url"], None

    async def send(self, destination: Destination, headers: dict[str, str], body: bytes) -> Result:
        """POST ``body`` to the vetted address, TLS verified for the URL's host; no redirects."""
        import httpx

        client = self._http()
        extensions = {"sni_hostname": destination.host} if destination.is_name else {}
        started = time.perf_counter()
        status: int | None = None
        raw = b""
        try:
            async with asyncio.timeout(TIMEOUT):
                request = client.build_request("POST", destination.connect_url, content=body,
                                                     headers={**headers, "Host": destination.host_header},
                                                     extensions=extensions)
                response = await client.send(request, stream=True)
                try:
                    status = response.status_code
                    async for chunk in response.aiter_raw():
                        raw += chunk
                        if len(raw) >= EXCERPT:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return self._result(started, status, raw, f"no answer within {TIMEOUT:g} s")
        except httpx.HTTPError as exc:
            return self._result(started, status, raw, f"{type(exc).__name__}: {exc}" if str(exc)
                                else type(exc).__name__)
        if 200 <= status < 300:
            return self._result(started, status, raw, None)
        if 300 <= status < 400:
            return self._result(started, status, raw, "redirect not followed")
        return self._result(started, status, raw, f"HTTP {status}")

    @staticmethod
    def _result(started: float, status: int | None, raw: bytes, error: str | None) -> Result:
        excerpt = raw[:EXCERPT].decode("utf-8", "replace") if raw else None
        return Result(error is None, status, excerpt, round((time.perf_counter() - started) * 1000), error)

    def _record(self, r: sqlite3.Row, result: Result) -> list[Op]:
        """The attempt's outcome, applied only if nobody recorded this attempt already."""
        now = clock.now()
        attempt = r["attempt"] + 1
        hook_id = r["webhook_id"]
        if result.ok:
            status, next_at = "succeeded", None
            hook = ("UPDATE webhooks SET consecutive_failures = 0 WHERE id = ?", (hook_id,))
        else:
            in_round = attempt - r["round_start"]
            if in_round <= r["retries"] and not result.final:
                delay = self.schedule[min(in_round, len(self.schedule)) - 1]
                status, next_at = "pending", now + delay * random.uniform(1 - JITTER, 1 + JITTER)
            else:
                status, next_at = "failed", None
            hook = ("UPDATE webhooks SET consecutive_failures = consecutive_failures + 1 WHERE id = ?", (hook_id,))
        update = ("UPDATE webhook_deliveries SET status = ?, attempt = ?, response_status = ?, response_excerpt = ?,"
                  " duration_ms = ?, error = ?, next_attempt_at = ?, delivered_at = ?"
                  " WHERE id = ? AND status = 'pending' AND attempt = ?",
                  (status, attempt, result.status, result.excerpt, result.duration_ms, result.error, next_at,
                   now if result.ok else None, r["id"], r["attempt"]))
        statements: list[Statement] = [update] if hook_id is None or result.final else [update, hook]
        return [Op(statements, guarded=True)]

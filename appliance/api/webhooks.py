"""``/webhooks`` (§6): CRUD, test, deliveries, redeliver, secret rotation."""
from __future__ import annotations

import sqlite3

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appliance import clock
from appliance.api.context import actor, authorize
from appliance.api.envelope import PAGE_PARAMS, check_query, ok, paged, read_json
from appliance.errors import ApiError, ValidationError
from appliance.store.ops import Op
from appliance.webhooks import store


def _webhook(request: Request, tenant_id: str) -> sqlite3.Row:
    """The tenant's webhook, else 404 — also for another tenant's."""
    row: sqlite3.Row | None = request.app.state.services.reader.one(
        "SELECT * FROM webhooks WHERE id = ? AND tenant_id = ?", (request.path_params["webhook_id"], tenant_id))
    if row is None:
        raise ApiError(404, "WEBHOOK_NOT_FOUND", "webhook not found")
    return row


def _reload(request: Request, webhook_id: str) -> sqlite3.Row:
    row: sqlite3.Row = request.app.state.services.reader.one("SELECT * FROM webhooks WHERE id = ?", (webhook_id,))
    return row


def _delivery(request: Request, delivery_id: str) -> sqlite3.Row:
    row: sqlite3.Row = request.app.state.services.reader.one("SELECT * FROM webhook_deliveries WHERE id = ?",
                                                             (delivery_id,))
    return row


async def create_webhook(request: Request) -> JSONResponse:
    services, grant = authorize(request, "webhooks:create")
    fields = store.parse_body(await read_json(request))
    await services.events.vet_url("url", fields["url"])
    webhook_id, secret, ops = store.create_ops(grant.tenant_id, fields, services.events.box, actor(grant))
    await services.writer.write(*ops)
    return ok({**store.webhook_json(_reload(request, webhook_id)), "secret": secret}, 201)


async def list_webhooks(request: Request) -> JSONResponse:
    services, grant = authorize(request, "webhooks:read")
    check_query(request, PAGE_PARAMS)
    items, pages = paged(request, services.reader, "webhooks", "tenant_id = ?", [grant.tenant_id],
                         "created_at DESC, id", store.webhook_json)
    return ok(items, pagination=pages)


async def get_webhook(request: Request) -> JSONResponse:
    _, grant = authorize(request, "webhooks:read")
    check_query(request, ())
    return ok(store.webhook_json(_webhook(request, grant.tenant_id)))


async def update_webhook(request: Request) -> JSONResponse:
    services, grant = authorize(request, "webhooks:update")
    row = _webhook(request, grant.tenant_id)
    fields = store.parse_body(await read_json(request), partial=True)
    if "url" in fields:
        await services.events.vet_url("url", fields["url"])
    await services.writer.write(*store.update_ops(row, fields, actor(grant)))
    return ok(store.webhook_json(_reload(request, row["id"])))


async def delete_webhook(request: Request) -> JSONResponse:
    services, grant = authorize(request, "webhooks:delete")
    row = _webhook(request, grant.tenant_id)
    await services.writer.write(*store.delete_ops(row, actor(grant)))
    return ok({"id": row["id"], "deleted": True})


async def rotate_secret(request: Request) -> JSONResponse:
    services, grant = authorize(request, "webhooks:update")
    row = _webhook(request, grant.tenant_id)
    secret, _, ops = store.rotate_ops(row, services.events.box, services.config["webhooks.secret_grace_hours"],
                                      actor(grant))
    await services.writer.write(*ops)
    return ok({**store.webhook_json(_reload(request, row["id"])), "secret": secret})


async def test_webhook(request: Request) -> JSONResponse:
    """Sends ``webhook.test`` once, now (no retries), and answers with the delivery."""
    services, grant = authorize(request, "webhooks:update")
    row = _webhook(request, grant.tenant_id)
    delivery_id = clock.new_id("dlv-")
    now = clock.now()
    data = {"webhook": {"id": row["id"], "name": row["name"], "url": row["url"]}}
    body = store.payload(delivery_id, store.TEST_EVENT, grant.tenant_id, data, now)
    insert = store.insert_delivery(delivery_id, grant.tenant_id, store.TEST_EVENT, body, now, 0,
                                   webhook_id=row["id"], due=False)
    await services.writer.write(Op([insert]))
    await services.events.deliveries.attempt_now(delivery_id, grant.tenant_id)
    return ok(store.delivery_json(_delivery(request, delivery_id)))


async def list_deliveries(request: Request) -> JSONResponse:
    services, grant = authorize(request, "webhooks:read")
    check_query(request, ("status", *PAGE_PARAMS))
    row = _webhook(request, grant.tenant_id)
    where, params = "webhook_id = ?", [row["id"]]
    status = request.query_params.get("status")
    if status is not None:
        if status not in ("pending", "succeeded", "failed"):
            raise ValidationError("status", "must be one of pending, succeeded, failed")
        where += " AND status = ?"
        params.append(status)
    items, pages = paged(request, services.reader, "webhook_deliveries", where, params, "created_at DESC, id",
                         store.delivery_json)
    return ok(items, pagination=pages)


async def redeliver(request: Request) -> JSONResponse:
    """The same delivery (same id, same body) again: one attempt now, then the retry schedule."""
    services, grant = authorize(request, "webhooks:update")
    row = _webhook(request, grant.tenant_id)
    delivery_id = request.path_params["delivery_id"]
    found = services.reader.one("SELECT * FROM webhook_deliveries WHERE id = ? AND webhook_id = ?",
                                (delivery_id, row["id"]))
    if found is None:
        raise ApiError(404, "DELIVERY_NOT_FOUND", "delivery not found")
    if found["status"] == "pending":
        raise ApiError(409, "CONFLICT", "delivery is still pending; it will be retried")
    retries = len(services.config["webhooks.retry_schedule"])
    changed = (await services.writer.write(Op([(
        "UPDATE webhook_deliveries SET status = 'pending', round_start = attempt, retries = ?, next_attempt_at = ?,"
        " error = NULL WHERE id = ? AND status != 'pending'", (retries, clock.now(), delivery_id))])))[0]
    if not changed:
        raise ApiError(409, "CONFLICT", "delivery is still pending; it will be retried")
    services.events.deliveries.wake()
    return ok(store.delivery_json(_delivery(request, delivery_id)), 202)


routes = [
    Route("/webhooks", create_webhook, methods=["POST"]),
    Route("/webhooks", list_webhooks, methods=["GET"]),
    Route("/webhooks/{webhook_id}", get_webhook, methods=["GET"]),
    Route("/webhooks/{webhook_id}", update_webhook, methods=["PATCH"]),
    Route("/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
    Route("/webhooks/{webhook_id}/test", test_webhook, methods=["POST"]),
    Route("/webhooks/{webhook_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/webhooks/{webhook_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", redeliver, methods=["POST"]),
]

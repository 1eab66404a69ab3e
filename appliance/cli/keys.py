"""``keys``: issue and retire API keys from the operator's shell (the raw key is printed once)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import click

from appliance import apikeys
from appliance.cli.common import cli_actor, data_dir_option, database, load_config, tenant_id
from appliance.credentials import SCOPES
from appliance.errors import ApiError
from appliance.store import apply_sync
from engines import SCAN_TYPES


@click.group()
def keys() -> None:
    """Create, list, rotate, revoke, suspend and reactivate API keys."""


def _emit(conn: sqlite3.Connection, key_id: str, raw: str | None, as_json: bool) -> None:
    data = apikeys.to_json(conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone())
    if raw is not None:
        data["key"] = raw
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"{data['id']}  {data['name']}  {data['status']}  scopes={','.join(data['scopes'])}")
    if raw is not None:
        click.echo(f"API key (shown once; store it now):\n{raw}")


@keys.command("create")
@data_dir_option
@click.option("--tenant", default="default", show_default=True)
@click.option("--name", required=True)
@click.option("--description")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="Repeatable. Default: scans:create/read/list/cancel, results:read, engines:read.")
@click.option("--scan-type", "scan_types", multiple=True, type=click.Choice(SCAN_TYPES),
              help="Repeatable. Default: every scan type.")
@click.option("--allow-ip", "allow_ips", multiple=True, help="IP or CIDR, v4 or v6; repeatable. Default: any.")
@click.option("--priority", "priorities", multiple=True, type=click.Choice(apikeys.PRIORITIES),
              help="Scan priorities the key may submit; repeatable. Default: all.")
@click.option("--rate-minute", type=int)
@click.option("--rate-hour", type=int)
@click.option("--rate-day", type=int)
@click.option("--expires-in-days", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with at least id and key.")
def keys_create(data_dir: Path, config_file: Path | None, tenant: str, name: str, description: str | None,
                scopes: tuple[str, ...], scan_types: tuple[str, ...], allow_ips: tuple[str, ...],
                priorities: tuple[str, ...], rate_minute: int | None, rate_hour: int | None, rate_day: int | None,
                expires_in_days: int | None, as_json: bool) -> None:
    """Create an API key and print it once.

    \b
    Examples:
      cix-appliance keys create --name ci-pipeline --scan-type nmap --allow-ip 10.1.0.0/16
      cix-appliance keys create --name admin2 --scope api-keys:read --scope api-keys:write --json
    """
    body: dict[str, Any] = {"name": name, "description": description, "expiresInDays": expires_in_days,
                            "rateLimitPerMinute": rate_minute, "rateLimitPerHour": rate_hour,
                            "rateLimitPerDay": rate_day}
    if scopes:
        body["scopes"] = list(scopes)
    if scan_types:
        body["allowedScanTypes"] = list(scan_types)
    if allow_ips:
        body["allowedIpAddresses"] = list(allow_ips)
    if priorities:
        body["allowedPriorities"] = list(priorities)
    try:
        spec = apikeys.parse_spec(body, SCAN_TYPES)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    with database(load_config(data_dir, config_file)) as conn:
        key_id, raw, ops = apikeys.create_ops(tenant_id(conn, tenant), spec, cli_actor())
        apply_sync(conn, ops)
        _emit(conn, key_id, raw, as_json)


@keys.command("list")
@data_dir_option
@click.option("--tenant", help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def keys_list(data_dir: Path, config_file: Path | None, tenant: str | None, as_json: bool) -> None:
    """List keys (never their secrets).

    \b
    Example:
      cix-appliance keys list --tenant default
    """
    with database(load_config(data_dir, config_file)) as conn:
        if tenant:
            rows = conn.execute("SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at",
                                (tenant_id(conn, tenant),)).fetchall()
        else:
            rows = conn.execute("SELECT * FROM api_keys ORDER BY created_at").fetchall()
    items = [apikeys.to_json(r) for r in rows]
    if as_json:
        click.echo(json.dumps(items))
        return
    for k in items:
        status = k["status"]
        if status == "active" and k["graceExpiresAt"]:
            status = f"rotating (until {k['graceExpiresAt']})"
        click.echo(f"{k['id']}  {k['prefix']}…  {k['name']}  {status}  last used {k['lastUsedAt'] or 'never'}")


def _key(conn: sqlite3.Connection, key_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    if row is None:
        raise click.ClickException(f"no API key {key_id!r} (see 'cix-appliance keys list')")
    return row


@keys.command("rotate")
@data_dir_option
@click.argument("key_id")
@click.option("--grace-hours", type=click.IntRange(0, 168), default=24, show_default=True,
              help="How long the old key keeps working.")
@click.option("--json", "as_json", is_flag=True)
def keys_rotate(data_dir: Path, config_file: Path | None, key_id: str, grace_hours: int, as_json: bool) -> None:
    """Issue a new key with KEY_ID's settings; KEY_ID stops working after the grace period.

    \b
    Example:
      cix-appliance keys rotate key-0d6f... --grace-hours 2
    """
    with database(load_config(data_dir, config_file)) as conn:
        row = _key(conn, key_id)
        try:
            new_id, raw, ops = apikeys.rotate_ops(row, grace_hours, cli_actor())
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
        if not apply_sync(conn, ops)[0]:  # rotated by someone else since we read it
            raise click.ClickException(f"{key_id} {apikeys.ALREADY_ROTATED}")
        _emit(conn, new_id, raw, as_json)


def _transition_command(action: str, doc: str):  # type: ignore[no-untyped-def]
    @data_dir_option
    @click.argument("key_id")
    def command(data_dir: Path, config_file: Path | None, key_id: str) -> None:
        with database(load_config(data_dir, config_file)) as conn:
            try:
                apply_sync(conn, apikeys.transition_ops(_key(conn, key_id), action, cli_actor()))
            except ApiError as exc:
                raise click.ClickException(exc.message) from None
            _emit(conn, key_id, None, False)
    command.__doc__ = doc
    return command


keys.command("revoke")(_transition_command("revoke", """Revoke KEY_ID at once (KEY_REVOKED from then on).

    \b
    Example:
      cix-appliance keys revoke key-0d6f...
    """))
keys.command("suspend")(_transition_command("suspend", """Suspend KEY_ID until reactivated (KEY_SUSPENDED).

    \b
    Example:
      cix-appliance keys suspend key-0d6f...
    """))
keys.command("reactivate")(_transition_command("reactivate", """Reactivate suspended KEY_ID.

    \b
    Example:
      cix-appliance keys reactivate key-0d6f...
    """))

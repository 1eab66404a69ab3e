"""``scans list|show|cancel``: the operator's view of every tenant's scans, from the database.

A cancel is the same lifecycle op the API applies (:func:`appliance.scanning.lifecycle.end`): the
scan is ``cancelled`` at once, its ``scan.cancelled`` event goes out to webhooks, and a running
scan's worker learns of it from its next heartbeat answer and stops the scanner.
"""
from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import click

from appliance.cli.common import data_dir_option, database, load_config, tenant_id
from appliance.scanning import lifecycle, model
from appliance.store import apply_sync


@click.group()
def scans() -> None:
    """Scans of every tenant: list, show one, cancel one."""


def _row(conn: sqlite3.Connection, scan_id: str) -> sqlite3.Row:
    try:
        uuid.UUID(scan_id)
    except ValueError:
        raise click.ClickException(f"{scan_id!r} is not a scan id") from None
    row: sqlite3.Row | None = conn.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
    if row is None:
        raise click.ClickException(f"no scan {scan_id}")
    return row


def _tenant_names(conn: sqlite3.Connection) -> dict[str, str]:
    return {r["id"]: r["name"] for r in conn.execute("SELECT id, name FROM tenants")}


@scans.command("list")
@data_dir_option
@click.option("--tenant", help="Only this tenant's scans (by name).")
@click.option("--status", type=click.Choice(lifecycle.STATUSES), help="Only scans in this status.")
@click.option("--scan-type", help="Only scans of this type (e.g. nmap).")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array of scan objects (plus tenant).")
def list_scans(data_dir: Path, config_file: Path | None, tenant: str | None, status: str | None,
               scan_type: str | None, limit: int, as_json: bool) -> None:
    """Newest scans first.

    \b
    Examples:
      cix-appliance scans list --status running
      cix-appliance scans list --tenant red-team --scan-type nmap --json
    """
    where: list[str] = []
    params: list[Any] = []
    with database(load_config(data_dir, config_file)) as conn:
        if tenant is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id(conn, tenant))
        for column, wanted in (("status", status), ("scan_type", scan_type)):
            if wanted is not None:
                where.append(f"{column} = ?")
                params.append(wanted)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = conn.execute(f"SELECT * FROM scans {clause} ORDER BY created_at DESC, id LIMIT ?",
                            [*params, limit]).fetchall()
        names = _tenant_names(conn)
    items = [{**model.scan_json(r), "tenant": names.get(r["tenant_id"])} for r in rows]
    if as_json:
        click.echo(json.dumps(items))
        return
    if not items:
        click.echo("No scans.")
        return
    click.echo(f"{'ID':<36}  {'TENANT':<12} {'TYPE':<9} {'STATUS':<9} {'PRIO':<8} {'CREATED':<24} "
               f"{'FINDINGS':>8}  TARGET")
    for i in items:
        click.echo(f"{i['id']:<36}  {(i['tenant'] or '-')[:12]:<12} {i['scanType']:<9} {i['status']:<9} "
                   f"{i['priority']:<8} {i['createdAt']:<24} {i['resultSummary']['total']:>8}  {i['target']}")


@scans.command("show")
@data_dir_option
@click.argument("scan_id")
@click.option("--json", "as_json", is_flag=True, help="The scan object as the API shows it (plus tenant).")
def show(data_dir: Path, config_file: Path | None, scan_id: str, as_json: bool) -> None:
    """One scan: settings, status, timing, result summary, error.

    \b
    Example:
      cix-appliance scans show 3f1c0c8e-1c1b-4d43-9a0e-2f7c1d6f4a10
    """
    with database(load_config(data_dir, config_file)) as conn:
        row = _row(conn, scan_id)
        tenant = _tenant_names(conn).get(row["tenant_id"])
    data = {**model.scan_json(row), "tenant": tenant}
    if as_json:
        click.echo(json.dumps(data))
        return
    for name, value in data.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        click.echo(f"{name + ':':<15} {'-' if value is None else value}")


@scans.command("cancel")
@data_dir_option
@click.argument("scan_id")
def cancel(data_dir: Path, config_file: Path | None, scan_id: str) -> None:
    """Cancel a queued or running scan, as ``POST /scans/:id/cancel`` does.

    A running scanner is stopped by its worker within about a heartbeat (a couple of seconds).

    \b
    Example:
      cix-appliance scans cancel 3f1c0c8e-1c1b-4d43-9a0e-2f7c1d6f4a10
    """
    with database(load_config(data_dir, config_file)) as conn:
        row = _row(conn, scan_id)
        if row["status"] in lifecycle.TERMINAL or not apply_sync(conn, [lifecycle.end(row["id"], "cancelled")])[0]:
            raise click.ClickException(f"scan {scan_id} has already finished ({row['status']})")
    click.echo(f"Scan {scan_id} cancelled (was {row['status']}).")

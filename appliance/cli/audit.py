"""``audit``: read the audit trail and check its hash chain."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from appliance import audit as audit_mod
from appliance import clock
from appliance.cli.common import data_dir_option, database, load_config, tenant_id


@click.group()
def audit() -> None:
    """List audit events and verify that none was edited or deleted."""


@audit.command("list")
@data_dir_option
@click.option("--tenant", help="Only this tenant's events (default: all, appliance-wide ones included).")
@click.option("--action", help="Only this action, e.g. webhook.created.")
@click.option("--actor", help="Only this actor, e.g. key:key-... or cli:root.")
@click.option("--since", help="ISO-8601 time; only events at or after it.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True, help="Newest N events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def audit_list(data_dir: Path, config_file: Path | None, tenant: str | None, action: str | None, actor: str | None,
               since: str | None, limit: int, as_json: bool) -> None:
    """Show audit events, newest first.

    \b
    Examples:
      cix-appliance audit list --action api_key.created --limit 20
      cix-appliance audit list --tenant default --since 2026-01-01 --json
    """
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    with database(load_config(data_dir, config_file)) as conn:
        if tenant:
            where.append("tenant_id = ?")
            params.append(tenant_id(conn, tenant))
        for value, column in ((action, "action"), (actor, "actor")):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if since:
            try:
                params.append(clock.parse_iso(since))
            except ValueError:
                raise click.ClickException(f"--since {since!r} is not an ISO-8601 time") from None
            where.append("created_at >= ?")
        rows = conn.execute(f"SELECT * FROM audit_events WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                            (*params, limit)).fetchall()
    items = [audit_mod.to_json(r) for r in rows]
    if as_json:
        click.echo(json.dumps(items))
        return
    for item in items:
        click.echo(f"{item['id']:>6}  {item['createdAt']}  {item['actor']}  {item['action']}  "
                   f"{item['resourceType']}:{item['resourceId'] or '-'}  {json.dumps(item['details'])}")


@audit.command("verify")
@data_dir_option
def audit_verify(data_dir: Path, config_file: Path | None) -> None:
    """Recompute the hash chain; exit 1 naming the first row that does not verify.

    \b
    Example:
      cix-appliance audit verify --data-dir /var/lib/cix-appliance
    """
    with database(load_config(data_dir, config_file)) as conn:
        verdict = audit_mod.verify_conn(conn)
    if not verdict.ok:
        click.echo(f"audit chain BROKEN: {verdict.problem}", err=True)
        sys.exit(1)
    click.echo(f"audit chain ok: {verdict.rows} rows, head {verdict.head or '-'}")

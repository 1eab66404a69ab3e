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
from appliance.signing import checkpoint
from appliance.signing.checkpoint import CheckpointObserver
from appliance.signing.keys import ALGORITHMS, KeyRing, SigningKeyError
from appliance.signing.signature import Trusted
from appliance.signing.verify import pinned_keys


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
        details = item["details"]
        if item["action"] == checkpoint.ACTION and isinstance(details, dict):  # not kilobytes of signatures
            details = {k: v for k, v in details.get("statement", {}).items() if k in ("digest", "keyIds")}
        click.echo(f"{item['id']:>6}  {item['createdAt']}  {item['actor']}  {item['action']}  "
                   f"{item['resourceType']}:{item['resourceId'] or '-'}  {json.dumps(details)}")


@audit.command("verify")
@data_dir_option
@click.option("--public-key", "public_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Believe only these public keys (PEM, repeatable) for checkpoints; default: DATA_DIR/signing.")
def audit_verify(data_dir: Path, config_file: Path | None, public_keys: tuple[Path, ...]) -> None:
    """Recompute the hash chain and check every signed checkpoint; exit 1 naming the first row that
    does not verify. Also shows the last signed checkpoint.

    \b
    Examples:
      cix-appliance audit verify --data-dir /var/lib/cix-appliance
      cix-appliance audit verify --public-key cix-appliance-keys.pem   # keys kept off the appliance
    """
    cfg = load_config(data_dir, config_file)
    try:
        trusted = trusted_keys(cfg.data_dir, public_keys)
    except (OSError, ValueError, SigningKeyError) as exc:
        raise click.ClickException(str(exc)) from None
    with database(cfg) as conn:
        checkpoints = CheckpointObserver(conn, trusted)
        verdict = audit_mod.verify_conn(conn, checkpoints)
        after = 0 if checkpoints.latest is None else conn.execute(
            "SELECT count(*) FROM audit_events WHERE id > ?", (checkpoints.latest.row_id,)).fetchone()[0]
    if not verdict.ok:
        click.echo(f"audit chain BROKEN: {verdict.problem}", err=True)
        sys.exit(1)
    click.echo(f"audit chain ok: {verdict.rows} rows, head {verdict.head or '-'}")
    latest = checkpoints.latest
    if latest is None:
        click.echo("no signed checkpoint yet (the server signs the head every audit.checkpoint_seconds and "
                   "when it stops; 'cix-appliance audit checkpoint' signs it now)")
        return
    signers = " and ".join(f"{a} key {k}" for a, k in zip(ALGORITHMS, latest.key_ids, strict=True))
    click.echo(f"last signed checkpoint: row {latest.row_id} signs rows 1-{latest.head_id}, "
               f"signed {latest.signed_at} by {signers}; {after} rows after it not yet signed")


@audit.command("checkpoint")
@data_dir_option
def audit_checkpoint(data_dir: Path, config_file: Path | None) -> None:
    """Sign the audit chain's head now (the server also does, every audit.checkpoint_seconds and
    when it stops), e.g. before taking a backup off the appliance.

    \b
    Example:
      cix-appliance audit checkpoint --data-dir /var/lib/cix-appliance
    """
    cfg = load_config(data_dir, config_file)
    with database(cfg) as conn:
        try:
            head = checkpoint.write_now(conn, KeyRing(cfg.data_dir))
        except SigningKeyError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo("nothing new to sign: the chain already ends with a checkpoint" if head is None
               else f"signed the audit chain up to row {head['id']}")


def trusted_keys(data_dir: Path, public_keys: tuple[Path, ...]) -> Trusted:
    """The pinned keys when given, else every key (current and retired) of the data dir."""
    pinned = pinned_keys(public_keys)
    if pinned is not None:
        return pinned
    keyring = KeyRing(data_dir)
    return Trusted.of([k.key() for k in keyring.public_keys()] if keyring.exists() else [],
                      source=f"in the key store ({keyring.directory})")

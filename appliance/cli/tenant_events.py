"""``tenants callback-secret`` and ``tenants set-quota``: a tenant's callback signing secret and its
monthly scan quota."""
from __future__ import annotations

from pathlib import Path

import click

from appliance import clock
from appliance.audit import audit_op
from appliance.cli.common import cli_actor, data_dir_option, database, load_config, tenant_id
from appliance.store import apply_sync
from appliance.store.ops import BUMP_EPOCH, Op
from appliance.webhooks.secretbox import SecretBox, new_secret


@click.command("callback-secret")
@data_dir_option
@click.argument("tenant")
@click.option("--rotate", is_flag=True, help="Make a new secret; the old one keeps signing during the grace period.")
@click.option("--grace-hours", type=click.IntRange(0, 720),
              help="Grace period of the old secret (default: webhooks.secret_grace_hours).")
def callback_secret(data_dir: Path, config_file: Path | None, tenant: str, rotate: bool,
                    grace_hours: int | None) -> None:
    """Print TENANT's callback secret (made if it has none), or rotate it with --rotate.

    Scans submitted with a callbackUrl are signed with it, exactly like webhooks.

    \b
    Examples:
      cix-appliance tenants callback-secret default
      cix-appliance tenants callback-secret default --rotate --grace-hours 2
    """
    cfg = load_config(data_dir, config_file)
    box = SecretBox.open(cfg.data_dir)
    with database(cfg) as conn:
        tid = tenant_id(conn, tenant)
        row = conn.execute("SELECT callback_secret FROM tenants WHERE id = ?", (tid,)).fetchone()
        if row["callback_secret"] and not rotate:
            click.echo(box.unseal(row["callback_secret"], tid))
            return
        secret = new_secret()
        grace = cfg["webhooks.secret_grace_hours"] if grace_hours is None else grace_hours
        until = clock.now() + grace * 3600 if grace and row["callback_secret"] else None
        action = "tenant.callback_secret_rotated" if row["callback_secret"] else "tenant.callback_secret_created"
        apply_sync(conn, [
            Op([("UPDATE tenants SET callback_secret = ?, callback_secret_old = ?, callback_secret_old_until = ?"
                 " WHERE id = ?", (box.seal(secret, tid), row["callback_secret"] if until else None, until, tid))]),
            audit_op(tid, cli_actor(), action, "tenant", tid, {"graceHours": grace if until else 0})])
    click.echo(secret)


@click.command("set-quota")
@data_dir_option
@click.argument("tenant")
@click.argument("scans", type=click.IntRange(0, 100_000_000), required=False)
@click.option("--default", "use_default", is_flag=True, help="Follow quotas.monthly_scans again.")
def set_quota(data_dir: Path, config_file: Path | None, tenant: str, scans: int | None, use_default: bool) -> None:
    """Limit TENANT to SCANS scan submissions per calendar month (UTC); 0 means no limit.

    Over it, POST /scans and template launches answer 429 QUOTA_EXCEEDED until the next month.

    \b
    Examples:
      cix-appliance tenants set-quota red-team 500
      cix-appliance tenants set-quota red-team --default
    """
    if (scans is None) == (not use_default):
        raise click.ClickException("give either SCANS or --default")
    with database(load_config(data_dir, config_file)) as conn:
        tid = tenant_id(conn, tenant)
        apply_sync(conn, [Op([("UPDATE tenants SET scan_quota = ? WHERE id = ?", (scans, tid)), BUMP_EPOCH]),
                          audit_op(tid, cli_actor(), "tenant.quota_set", "tenant", tid, {"monthlyScans": scans})])
    click.echo(f"{tenant}: monthly scan quota {'from config' if scans is None else scans or 'unlimited'}")

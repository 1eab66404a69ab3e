"""``tenants`` and ``targets``: who uses the appliance, and what each of them may scan."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import click

from appliance import clock
from appliance import tenants as tenants_mod
from appliance.cli.common import cli_actor, data_dir_option, database, load_config, tenant_id
from appliance.store import apply_sync


@click.group()
def tenants() -> None:
    """Create and list tenants."""


@tenants.command("create")
@data_dir_option
@click.argument("name")
def tenants_create(data_dir: Path, config_file: Path | None, name: str) -> None:
    """Create a tenant. Its target allowlist starts empty: it may scan nothing until allowed.

    \b
    Example:
      cix-appliance tenants create red-team
      cix-appliance targets allow --tenant red-team 10.20.0.0/16 lab.corp.internal
    """
    with database(load_config(data_dir, config_file)) as conn:
        try:
            new_id, ops = tenants_mod.create_ops(name, cli_actor())
            apply_sync(conn, ops)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        except sqlite3.IntegrityError:
            raise click.ClickException(f"a tenant named {name!r} already exists") from None
    click.echo(new_id)


@tenants.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def tenants_list(data_dir: Path, config_file: Path | None, as_json: bool) -> None:
    """List tenants.

    \b
    Example:
      cix-appliance tenants list --json
    """
    with database(load_config(data_dir, config_file)) as conn:
        rows = conn.execute("SELECT id, name, created_at FROM tenants ORDER BY created_at").fetchall()
    items = [{"id": r["id"], "name": r["name"], "createdAt": clock.iso(r["created_at"])} for r in rows]
    if as_json:
        click.echo(json.dumps(items))
        return
    for item in items:
        click.echo(f"{item['id']}  {item['name']}  {item['createdAt']}")


@click.group()
def targets() -> None:
    """A tenant's target allowlist and denylist (the config's global denylist always wins)."""


def _policy_command(kind: str, remove: bool, doc: str) -> Callable[..., None]:
    @data_dir_option
    @click.option("--tenant", default="default", show_default=True)
    @click.argument("entries", nargs=-1, required=True)
    def command(data_dir: Path, config_file: Path | None, tenant: str, entries: tuple[str, ...],
                force: bool = False) -> None:
        cfg = load_config(data_dir, config_file)
        adding = kind == "allow" and not remove
        try:
            wide = [problem for e in entries if (problem := tenants_mod.too_wide(e))] if adding else []
            warnings = tenants_mod.denylist_warnings(list(entries), cfg["targets.denylist"]) if adding else []
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        if wide and not force:
            raise click.ClickException(f"{wide[0]}: a tenant allowed that much may scan most of a network; "
                                       "pass --force if that is what you mean")
        for warning in [*wide, *warnings]:
            click.echo(f"warning: {warning}", err=True)
        with database(cfg) as conn:
            try:
                apply_sync(conn, tenants_mod.policy_ops(tenant_id(conn, tenant), kind, list(entries),
                                                        cli_actor(), remove=remove))
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None
        click.echo(f"{'removed from' if remove else 'added to'} {tenant}'s {kind}list: {' '.join(entries)}")
    command.__doc__ = doc
    if kind == "allow" and not remove:
        command = click.option("--force", is_flag=True,
                               help="Allow entries wider than a /8 (IPv6: /32).")(command)
    return command


targets.command("allow")(_policy_command("allow", False, """Allow a tenant to scan ENTRIES: IPs, CIDRs,
    domain suffixes (example.com also allows its subdomains), and for trivy path:/DIR (a directory and
    everything below it, symlinks resolved) and registry:HOST[:PORT] (images from that registry).

    Entries wider than a /8 (IPv6: /32) need --force; entries the global denylist (targets.denylist)
    overlaps are added with a warning, since those addresses stay denied.

    \b
    Example:
      cix-appliance targets allow --tenant default 10.20.0.0/16 staging.corp.internal
      cix-appliance targets allow --tenant ci path:/srv/builds registry:registry.corp.internal
    """))
targets.command("deny")(_policy_command("deny", False, """Forbid a tenant ENTRIES even inside its allowlist.

    \b
    Example:
      cix-appliance targets deny --tenant default 10.20.5.0/24
    """))
targets.command("remove")(_policy_command("allow", True, """Remove ENTRIES from a tenant's allowlist.

    \b
    Example:
      cix-appliance targets remove --tenant default 10.20.0.0/16
    """))
targets.command("undeny")(_policy_command("deny", True, """Remove ENTRIES from a tenant's denylist.

    \b
    Example:
      cix-appliance targets undeny --tenant default 10.20.5.0/24
    """))


@targets.command("list")
@data_dir_option
@click.option("--tenant", default="default", show_default=True)
def targets_list(data_dir: Path, config_file: Path | None, tenant: str) -> None:
    """Show a tenant's allowlist and denylist, and the global denylist.

    \b
    Example:
      cix-appliance targets list --tenant default
    """
    cfg = load_config(data_dir, config_file)
    with database(cfg) as conn:
        entries = tenants_mod.policy_entries(conn, tenant_id(conn, tenant))
    for kind in ("allow", "deny"):
        for entry in entries[kind]:
            click.echo(f"{kind}  {entry}")
    for entry in cfg["targets.denylist"]:
        click.echo(f"deny  {entry}  (global)")

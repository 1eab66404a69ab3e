"""``workers`` (on the appliance: tokens and zones of remote workers) and ``worker`` (on a worker
host: the worker process itself)."""
from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import click

from appliance import clock, logs
from appliance.cli.common import cli_actor, data_dir_option, database, load_config
from appliance.store import apply_sync
from appliance.workers import store


@click.group()
def workers() -> None:
    """Remote scan workers: add (prints a token once), list, revoke.

    A worker placed in a network segment gets zones (CIDRs or domain suffixes): scans of targets in
    a zone run only on that zone's workers; other scans run on zone-less workers and the embedded one.
    """


@workers.command("add")
@data_dir_option
@click.argument("name")
@click.option("--zone", "zones", multiple=True, metavar="CIDR|SUFFIX", help="A segment this worker scans (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, token} as one JSON object.")
def add(data_dir: Path, config_file: Path | None, name: str, zones: tuple[str, ...], as_json: bool) -> None:
    """Register a worker and print its token (shown once; only its hash is stored).

    \b
    Example:
      cix-appliance workers add dmz-1 --zone 10.20.0.0/16 --zone dmz.corp.internal
    """
    try:
        clean = store.normalize_zones(zones)
        row, ops = store.add_ops(name, clean, cli_actor())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    with database(load_config(data_dir, config_file)) as conn:
        if conn.execute("SELECT 1 FROM workers WHERE name = ?", (name,)).fetchone():
            raise click.ClickException(f"a worker named {name!r} exists already")
        apply_sync(conn, ops)
    if as_json:
        click.echo(json.dumps({"id": row["id"], "name": name, "token": row["token"], "zones": clean}))
        return
    click.echo(f"Worker {name} added (zones: {', '.join(clean) or 'none: default zone'}).")
    click.echo("Worker token (shown once; store it now):")
    click.echo(row["token"])


@workers.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def list_workers(data_dir: Path, config_file: Path | None, as_json: bool) -> None:
    """Workers with zones, last heartbeat, version, engines and running scans.

    \b
    Example:
      cix-appliance workers list
    """
    with database(load_config(data_dir, config_file)) as conn:
        rows = conn.execute("SELECT * FROM workers ORDER BY name").fetchall()
        running = dict(conn.execute("SELECT worker, count(*) FROM scans WHERE status = 'running'"
                                    " GROUP BY worker").fetchall())
    items = [{"id": r["id"], "name": r["name"], "zones": json.loads(r["zones"]),
              "status": "revoked" if r["revoked_at"] else "active", "lastSeenAt": clock.iso(r["last_seen_at"]),
              "version": r["version"], "engines": json.loads(r["engines"]), "running": running.get(r["name"], 0)}
             for r in rows]
    if as_json:
        click.echo(json.dumps(items))
        return
    if not items:
        click.echo("No workers. Add one with: cix-appliance workers add NAME --zone CIDR")
        return
    click.echo(f"{'NAME':<20} {'STATUS':<8} {'LAST SEEN':<21} {'RUNNING':>7}  {'VERSION':<9} ZONES / ENGINES")
    for i in items:
        zones, engines = ", ".join(i["zones"]) or "(default)", ", ".join(i["engines"]) or "-"
        click.echo(f"{i['name']:<20} {i['status']:<8} {i['lastSeenAt'] or 'never':<21} {i['running']:>7}  "
                   f"{i['version'] or '-':<9} {zones} / {engines}")


@workers.command("revoke")
@data_dir_option
@click.argument("name")
def revoke(data_dir: Path, config_file: Path | None, name: str) -> None:
    """Revoke a worker's token at once; its running scans are re-queued when their lease expires.

    \b
    Example:
      cix-appliance workers revoke dmz-1
    """
    with database(load_config(data_dir, config_file)) as conn:
        row = conn.execute("SELECT id FROM workers WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise click.ClickException(f"no worker named {name!r}")
        if not apply_sync(conn, store.revoke_ops(row["id"], name, cli_actor()))[0]:
            raise click.ClickException(f"worker {name} is revoked already")
    click.echo(f"Worker {name} revoked.")


def _default_work_dir() -> Path:
    return Path("/var/lib/cix-appliance-worker") if os.geteuid() == 0 else \
        Path.home() / ".local/share/cix-appliance-worker"


@click.command()
@click.option("--appliance", required=True, metavar="URL", help="The appliance's HTTPS base URL.")
@click.option("--token", envvar="CIX_WORKER_TOKEN", required=True,
              help="The worker token from 'workers add' (or $CIX_WORKER_TOKEN, which keeps it out of ps).")
@click.option("--queue-url", envvar="CIX_QUEUE_URL", required=True, metavar="URL",
              help="redis:// or rediss:// URL of the appliance's queue, password in it (or $CIX_QUEUE_URL).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA or certificate that signs the appliance's TLS certificate.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Scans this worker runs at once (also per engine).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=_default_work_dir,
              show_default="/var/lib/cix-appliance-worker", help="Scan work dirs and engine data.")
@click.option("--engine-path", "engine_paths", multiple=True, metavar="TYPE=PATH",
              help="Executable of an engine, when not on PATH (repeatable).")
@click.option("--resolver", default="127.0.0.1", show_default=True, metavar="IP",
              help="DNS server the OSINT engines' brute force asks (engines.resolver).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines as text or JSON objects (journald, SIEM).")
def worker(appliance: str, token: str, queue_url: str, ca_file: Path | None, concurrency: int, work_dir: Path,
           engine_paths: tuple[str, ...], resolver: str, log_level: str, log_format: str) -> None:
    """Run a remote scan worker (a sensor inside a network segment).

    It needs no data dir and no database: only the appliance's Redis queue and its HTTPS API.

    \b
    Example:
      CIX_WORKER_TOKEN=cix_wk_... cix-appliance worker --appliance https://scanner.corp:8443 \\
          --queue-url rediss://:secret@scanner.corp:6380/0 --ca-file /etc/cix/appliance-ca.pem
    """
    from appliance.workers.remote import WorkerError, WorkerOptions, run_worker

    os.umask(0o077)
    logs.configure(log_level, log_format)
    if not queue_url.startswith(("redis://", "rediss://")):
        raise click.BadParameter("must start with redis:// or rediss://", param_hint="--queue-url")
    try:
        ipaddress.ip_address(resolver)
    except ValueError:
        raise click.BadParameter(f"{resolver!r} is not an IP address", param_hint="--resolver") from None
    paths = {}
    for item in engine_paths:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"{item!r} is not TYPE=PATH", param_hint="--engine-path")
        paths[name] = path
    try:
        run_worker(WorkerOptions(appliance, token, queue_url, ca_file, concurrency, work_dir, paths,
                                 engine_settings={"engines.resolver": resolver}))
    except WorkerError as exc:
        raise click.ClickException(str(exc)) from None

"""``init``, ``serve`` and ``config``: making an appliance, running it, changing its settings."""
from __future__ import annotations

import json
import os
import shutil
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import click

from appliance import apikeys, logs, tls
from appliance import config as config_mod
from appliance import tenants as tenants_mod
from appliance.audit import audit_op
from appliance.cli.common import cli_actor, data_dir_option, database, load_config, require_initialized
from appliance.credentials import SCOPES
from appliance.signing.keys import KeyRing
from appliance.store import apply_sync
from appliance.webhooks import secretbox

if TYPE_CHECKING:
    from appliance.server import PQListener

_OWNED = ("appliance.db", "appliance.db-wal", "appliance.db-shm", "queue.db", "queue.db-wal",
          "queue.db-shm", tls.CERT_NAME, tls.KEY_NAME, config_mod.CONFIG_NAME, secretbox.KEY_NAME)


@click.command()
@data_dir_option
@click.option("--hostname", default="localhost", show_default=True,
              help="Name clients use to reach the appliance (put in the TLS certificate).")
@click.option("--allow-loopback", is_flag=True,
              help="Let the default tenant scan 127.0.0.0/8 and ::1 (tests, local targets).")
@click.option("--force", is_flag=True, help="Re-initialize an existing data dir: its database is deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print the admin key as one JSON object.")
def init(data_dir: Path, config_file: Path | None, hostname: str, allow_loopback: bool, force: bool,
         as_json: bool) -> None:
    """Create the data dir, database, TLS certificate, default tenant and first admin key.

    The admin key holds every scope and is printed once; only its hash is stored.

    \b
    Example:
      cix-appliance init --data-dir /var/lib/cix-appliance --hostname scanner.corp.internal
    """
    if data_dir.exists() and any(data_dir.iterdir()):
        if not force:
            raise click.ClickException(f"{data_dir} already holds an appliance; "
                                       "use --force to re-initialize it (deletes its database)")
        for name in _OWNED:
            (data_dir / name).unlink(missing_ok=True)
        shutil.rmtree(data_dir / "scans", ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    (data_dir / config_mod.CONFIG_NAME).write_text(config_mod.dumps({"server.hostname": hostname}))
    os.chmod(data_dir / config_mod.CONFIG_NAME, 0o600)
    cfg = load_config(data_dir, config_file)
    if not cfg["tls.cert_file"]:
        tls.make_self_signed(data_dir, hostname)
    cfg.db_path.touch(mode=0o600)
    secretbox.ensure_key(data_dir)
    KeyRing(data_dir).ensure()  # kept by --force: reports signed before a re-init still verify
    actor = cli_actor()
    with database(cfg) as conn:
        tenant_id, ops = tenants_mod.create_ops("default", actor)
        if allow_loopback:
            ops += tenants_mod.policy_ops(tenant_id, "allow", list(tenants_mod.LOOPBACK), actor)
        # The operator's key: every scope, and the contract's highest rate limits.
        admin = apikeys.KeySpec("admin", scopes=list(SCOPES), rate_minute=1_000, rate_hour=50_000,
                                rate_day=500_000)
        key_id, raw, key_ops = apikeys.create_ops(tenant_id, admin, actor)
        apply_sync(conn, [*ops, *key_ops])
    if as_json:
        click.echo(json.dumps({"dataDir": str(data_dir), "tenantId": tenant_id, "id": key_id, "key": raw}))
        return
    click.echo(f"Initialized {data_dir}")
    click.echo(f"TLS certificate: {tls.cert_paths(data_dir, cfg['tls.cert_file'], cfg['tls.key_file'])[0]}")
    click.echo("Admin API key (shown once; store it now):")
    click.echo(raw)


@click.command()
@data_dir_option
@click.option("--host", help="Address to listen on (default: server.host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: server.port).")
def serve(data_dir: Path, config_file: Path | None, host: str | None, port: int | None) -> None:
    """Run the HTTPS API (TLS 1.3 only) with its embedded scan queue and workers.

    SIGTERM stops taking requests, lets in-flight ones finish, hands running scans back to the queue
    and exits 0.

    \b
    Example:
      cix-appliance serve --data-dir /var/lib/cix-appliance --port 8443
    """
    from appliance.app import create_app  # the server stack is only loaded by the command that needs it
    from appliance.httplimits import Limits
    from appliance.server import Listen, bind, run

    cfg = load_config(data_dir, config_file)
    require_initialized(cfg)
    logs.configure(cfg["logging.level"], cfg["logging.format"])
    cert, key = tls.cert_paths(data_dir, cfg["tls.cert_file"], cfg["tls.key_file"])
    for path in (cert, key):
        if not path.exists():
            raise click.ClickException(f"TLS file {path} is missing (set tls.cert_file/tls.key_file or re-run init)")
    try:
        tls.server_context(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise click.ClickException(f"TLS certificate {cert} or key {key} cannot be used: {exc}") from None
    listen_host, listen_port = host or cfg["server.host"], port or cfg["server.port"]
    try:
        sock = bind(listen_host, listen_port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen_host}:{listen_port}: "
                                   f"{exc.strerror or exc}") from None
    pq = _pq_listener(cfg, listen_host, cert, key) if cfg["server.pq_port"] else None
    limits = Limits(header_timeout=cfg["server.header_timeout_seconds"],
                    handshake_timeout=cfg["server.handshake_timeout_seconds"],
                    max_connections=cfg["server.max_connections"])
    bound_host, bound_port = sock.getsockname()[:2]
    sock.close()  # it proved the port free; granian binds its own socket
    status = run(create_app(cfg), Listen(bound_host, bound_port, cert, key, limits,
                                         cfg["server.shutdown_grace_seconds"], cfg["logging.level"],
                                         cfg["server.io_threads"], pq))
    if status:
        raise SystemExit(status)


def _pq_listener(cfg: config_mod.Config, host: str, cert: Path, key: Path) -> PQListener:
    """The server.pq_port listener (see appliance/pqtls.py), on the same address as the main one."""
    from appliance.pqtls import PQTLSError, server_context
    from appliance.server import PQListener, bind

    try:
        context = server_context(cert, key, cfg["tls.pq_only"])
    except PQTLSError as exc:
        raise click.ClickException(f"server.pq_port: {exc}") from None
    try:
        return PQListener(bind(host, cfg["server.pq_port"]), context)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{cfg['server.pq_port']} (server.pq_port): "
                                   f"{exc.strerror or exc}") from None


@click.group()
def config() -> None:
    """Read and change settings in DATA_DIR/config.toml (see config.example.toml)."""


@config.command("get")
@data_dir_option
@click.argument("key", required=False)
def config_get(data_dir: Path, config_file: Path | None, key: str | None) -> None:
    """Print one setting (or all of them) as TOML literals.

    \b
    Example:
      cix-appliance config get server.port
    """
    cfg = load_config(data_dir, config_file)
    names = [key] if key else sorted(config_mod.KEYS)
    for name in names:
        if name not in config_mod.KEYS:
            raise click.ClickException(f"{name}: unknown setting")
        value = config_mod.dump_value(cfg[name])
        click.echo(value if key else f"{name} = {value}")


@config.command("set")
@data_dir_option
@click.argument("key")
@click.argument("value")
def config_set(data_dir: Path, config_file: Path | None, key: str, value: str) -> None:
    """Set KEY to VALUE, a TOML literal; the server reads it at its next start.

    \b
    Examples:
      cix-appliance config set server.port 9443
      cix-appliance config set targets.denylist '["169.254.0.0/16", "10.0.0.0/8"]'
      cix-appliance config set engines.concurrency '{nmap = 4}'
    """
    cfg = load_config(data_dir, config_file)
    require_initialized(cfg)
    try:
        stored = config_mod.set_value(config_file or data_dir / config_mod.CONFIG_NAME, key, value)
    except config_mod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    with database(cfg) as conn:
        apply_sync(conn, [audit_op(None, cli_actor(), "config.changed", "config", key, {"value": stored})])
    click.echo(f"{key} = {config_mod.dump_value(stored)}")

"""What every command shares: the data dir option, loading config, a database connection."""
from __future__ import annotations

import contextlib
import getpass
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from appliance import config as config_mod
from appliance.store import connect, migrate


def default_data_dir() -> Path:
    env = os.environ.get("CIX_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/cix-appliance")
    return Path.home() / ".local/share/cix-appliance"


def data_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                      help="Config file to use instead of DATA_DIR/config.toml.")(fn)
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=default_data_dir, show_default="$CIX_DATA_DIR or /var/lib/cix-appliance",
                        help="Where the appliance keeps its database, queue, certificate and config.")(fn)


def load_config(data_dir: Path, config_file: Path | None) -> config_mod.Config:
    try:
        return config_mod.load(data_dir, config_file)
    except config_mod.ConfigError as exc:
        raise click.ClickException(f"invalid config: {exc}") from None


def require_initialized(cfg: config_mod.Config) -> None:
    if not cfg.db_path.exists():
        raise click.ClickException(f"{cfg.data_dir} is not initialized: run 'cix-appliance init' first")


@contextlib.contextmanager
def database(cfg: config_mod.Config) -> Iterator[sqlite3.Connection]:
    """The appliance database for a CLI process (stdlib sqlite3, like the server; never apsw)."""
    require_initialized(cfg)
    conn = connect(cfg.db_path, cfg["storage.busy_timeout_ms"])
    try:
        migrate(conn)
        yield conn
    finally:
        conn.close()


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry inside some containers
        return f"cli:uid-{os.getuid()}"


def tenant_id(conn: sqlite3.Connection, name: str) -> str:
    row = conn.execute("SELECT id FROM tenants WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise click.ClickException(f"no tenant named {name!r} (see 'cix-appliance tenants list')")
    return str(row["id"])

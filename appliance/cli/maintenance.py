"""``backup`` and ``check``: apsw, in this separate CLI process only.

The server process uses stdlib sqlite3; apsw bundles its own SQLite, and two SQLite libraries on one
file in one process drop each other's POSIX locks (a committed write was seen to vanish). So these
commands never import the server stack, and the server never imports apsw.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance.cli.common import data_dir_option, load_config, require_initialized


@click.command()
@data_dir_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
def backup(data_dir: Path, config_file: Path | None, dest: Path, force: bool) -> None:
    """Copy the database to DEST with SQLite's online backup API; safe while the server runs.

    \b
    Example:
      cix-appliance backup /srv/backups/cix-$(date +%F).db
    """
    import apsw

    cfg = load_config(data_dir, config_file)
    require_initialized(cfg)
    if not dest.parent.is_dir():
        raise click.ClickException(f"cannot write {dest}: folder {dest.parent} does not exist")
    if dest.exists() and not force:
        raise click.ClickException(f"{dest} exists; use --force to overwrite it")
    try:
        dest.unlink(missing_ok=True)
        ok = _copy(cfg.db_path, dest, cfg["storage.busy_timeout_ms"])
    except (OSError, apsw.Error) as exc:
        raise click.ClickException(f"cannot write {dest}: {exc}") from None
    if not ok:
        raise click.ClickException(f"backup written to {dest} failed its integrity check")
    dest.chmod(0o600)
    click.echo(f"backed up {cfg.db_path} to {dest}")


def _copy(source_path: Path, dest: Path, busy_timeout_ms: int) -> bool:
    """Online backup of ``source_path`` into ``dest``; True when the copy passes its integrity check."""
    import apsw

    source = apsw.Connection(str(source_path), flags=apsw.SQLITE_OPEN_READONLY)
    source.set_busy_timeout(busy_timeout_ms)
    try:
        target = apsw.Connection(str(dest))
    except BaseException:
        source.close()
        raise
    try:
        with target.backup("main", source, "main") as step, \
                click.progressbar(length=100, label="backing up", file=sys.stderr) as bar:
            done = 0
            while not step.done:
                step.step(256)
                percent = 100 if not step.pagecount else int(100 * (step.pagecount - step.remaining) / step.pagecount)
                bar.update(percent - done)
                done = percent
        return bool(target.execute("PRAGMA integrity_check").fetchall() == [("ok",)])
    finally:
        target.close()
        source.close()


@click.command()
@data_dir_option
def check(data_dir: Path, config_file: Path | None) -> None:
    """Run SQLite's integrity and foreign-key checks on the database and the queue.

    \b
    Example:
      cix-appliance check --data-dir /var/lib/cix-appliance
    """
    import apsw

    cfg = load_config(data_dir, config_file)
    require_initialized(cfg)
    failed = False
    for path in (cfg.db_path, cfg.queue_path):
        if not path.exists():
            continue
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(cfg["storage.busy_timeout_ms"])
        try:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            problems = [p for p in problems if p != "ok"]
            problems += [f"foreign key violation in {r[0]}" for r in conn.execute("PRAGMA foreign_key_check")]
        finally:
            conn.close()
        for problem in problems:
            click.echo(f"{path.name}: {problem}", err=True)
        failed = failed or bool(problems)
        click.echo(f"{path.name}: {'FAILED' if problems else 'ok'}")
    if failed:
        sys.exit(1)

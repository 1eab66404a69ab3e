"""``engines``: what each scanner is, and the offline data bundles the operator imports for them."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from appliance import clock
from appliance.audit import audit_op
from appliance.cli.common import cli_actor, data_dir_option, database, load_config
from appliance.engine_data import KINDS, BundleError, import_bundle
from appliance.store import apply_sync
from engines import build_registry
from engines.base import Engine
from engines.offline_data import age_seconds

# Below this a progress bar is more noise than help.
_PROGRESS_FROM = 8 << 20


@click.group()
def engines() -> None:
    """Scanners and their offline data (vulnerability DB, templates, wordlists)."""


@engines.command("import")
@data_dir_option
@click.argument("kind", type=click.Choice(tuple(KINDS)))
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--sha256", help="Expected SHA-256 of SOURCE (a file); the import fails on a mismatch.")
@click.option("--version", "version", help="Version label (default: the bundle's own, else the import time).")
@click.option("--scan-type", "scan_types", multiple=True,
              help="Only for this scan type (a wordlist serves harvester and sublist3r).")
def engines_import(data_dir: Path, config_file: Path | None, kind: str, source: Path, sha256: str | None,
                   version: str | None, scan_types: tuple[str, ...]) -> None:
    """Import offline data: verify SOURCE, store it versioned, make it current.

    \b
    KIND and SOURCE:
      trivy-db          tar(.gz) of a trivy cache's db/ folder (db/trivy.db + db/metadata.json)
      nuclei-templates  a directory or tar(.gz) of nuclei templates (YAML with id: and info:)
      wordlist          text, one DNS label per line (DNS brute force of harvester and sublist3r)

    \b
    The two newest versions are kept. Examples:
      cix-appliance engines import trivy-db trivy-db-2026-11-28.tar.gz --sha256 3f5a...
      cix-appliance engines import nuclei-templates ./our-templates/
      cix-appliance engines import wordlist dns-names.txt
    """
    cfg = load_config(data_dir, config_file)
    with database(cfg) as conn:
        size = source.stat().st_size if source.is_file() else sum(
            p.stat().st_size for p in source.rglob("*") if p.is_file())
        started = time.monotonic()
        try:
            if size >= _PROGRESS_FROM:
                bar: Any = click.progressbar(length=size, label=f"importing {source.name}", show_eta=True,
                                             file=sys.stderr)
                with bar:
                    results = import_bundle(cfg.engine_data_dir, kind, source, sha256, version,
                                            scan_types or None, bar.update)
            else:
                results = import_bundle(cfg.engine_data_dir, kind, source, sha256, version, scan_types or None)
        except BundleError as exc:
            raise click.ClickException(f"{source}: {exc}") from None
        elapsed = time.monotonic() - started
        apply_sync(conn, [audit_op(None, cli_actor(), "engine_data.imported", "engine_data",
                                   f"{r.scan_type}/{r.kind}",
                                   {"version": r.version, "sha256": r.sha256, "size": r.size,
                                    "source": source.name, "pruned": list(r.pruned)})
                          for r in results])
    for r in results:
        summary = ", ".join(f"{k} {v}" for k, v in r.summary.items() if not isinstance(v, list))
        click.echo(f"{r.scan_type}: {r.kind} {r.version} is current ({_size(r.size)}"
                   + (f"; {summary}" if summary else "") + f") in {r.path}")
        if r.pruned:
            click.echo(f"{r.scan_type}: removed old {r.kind} versions: {', '.join(r.pruned)}")
    click.echo(f"imported in {elapsed:.1f} s", err=True)


@engines.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def engines_list(data_dir: Path, config_file: Path | None, as_json: bool) -> None:
    """Each scan type: installed?, version, what is missing, and its offline data with age.

    \b
    Example:
      cix-appliance engines list
    """
    cfg = load_config(data_dir, config_file)
    items: list[dict[str, Any]] = []
    for scanner in build_registry(cfg["engines.paths"], cfg.engine_data_dir, cfg.engine_settings()).values():
        found = scanner.probe()
        data = [_data_json(d) for d in scanner.data_status()]
        items.append({"scanType": scanner.name, "available": found.available, "version": found.version,
                      "path": found.path, "missing": list(found.missing), "offlineData": data,
                      "adapter": isinstance(scanner, Engine)})
    if as_json:
        click.echo(json.dumps(items))
        return
    for item in items:
        state = "available" if item["available"] else "unavailable"
        click.echo(f"{item['scanType']:<10} {state:<11} {item['version'] or '-':<10} {item['path'] or ''}")
        for problem in item["missing"]:
            click.echo(f"{'':<10} missing: {problem}")
        for d in item["offlineData"]:
            if d["missing"]:
                continue
            click.echo(f"{'':<10} data: {d['name']} {d['version']}  {_size(d['size'] or 0)}  "
                       f"imported {d['updatedAt']} ({_age(d['ageSeconds'])} ago)  {d['path']}")


def _data_json(status: Any) -> dict[str, Any]:
    return {"name": status.name, "required": status.required, "version": status.version, "path": status.path,
            "size": status.size, "updatedAt": clock.iso(status.updated_at), "ageSeconds": age_seconds(status),
            "missing": status.missing}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds // length} {unit}"
    return f"{seconds} s"

"""``signing-key show|rotate`` and ``verify``: the keys that sign reports and audit checkpoints, and
checking a signed report offline (no data dir, no network)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from appliance import clock
from appliance.audit import audit_op
from appliance.cli.common import cli_actor, data_dir_option, database, load_config
from appliance.signing import verify as verify_mod
from appliance.signing.keys import KeyRing, PublicKeyInfo, SigningKeyError
from appliance.store import apply_sync

_NO_KEYS = ("has no signing keys yet; they are made by 'cix-appliance init' and by the server's first start "
            "(or run 'cix-appliance signing-key rotate')")


@click.group("signing-key")
def signing_key() -> None:
    """The Ed25519 + ML-DSA-65 key pair that signs reports and audit checkpoints."""


def _line(info: PublicKeyInfo) -> str:
    retired = f"retired {clock.iso(info.retired_at)}" if info.retired_at else "current"
    return f"{info.key_id}  {info.algorithm:<9}  created {clock.iso(info.created_at)}  {retired}"


@signing_key.command("show")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, as GET /api/v1/signing-key answers.")
@click.option("--pem", is_flag=True, help="Only the public keys, as PEM blocks: the file auditors pin.")
def show(data_dir: Path, config_file: Path | None, as_json: bool, pem: bool) -> None:
    """List every public key, current and retired (retired keys still verify older reports).

    \b
    Examples:
      cix-appliance signing-key show
      cix-appliance signing-key show --pem > cix-appliance-keys.pem   # give this to your auditors
    """
    keyring = KeyRing(load_config(data_dir, config_file).data_dir)
    if not keyring.exists():
        raise click.ClickException(f"{data_dir} {_NO_KEYS}")
    try:
        keys = keyring.public_keys()
    except SigningKeyError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([k.json() for k in reversed(keys)], indent=2))
    elif pem:
        click.echo("".join(k.pem for k in keys), nl=False)
    else:
        for info in reversed(keys):
            click.echo(_line(info))


@signing_key.command("rotate")
@data_dir_option
def rotate(data_dir: Path, config_file: Path | None) -> None:
    """Make a new key pair and retire the current one; a running server signs with the new pair at
    once. Retired public keys stay listed so that older reports still verify; their private keys are
    deleted. Written to the audit trail.

    \b
    Example:
      cix-appliance signing-key rotate --data-dir /var/lib/cix-appliance
    """
    cfg = load_config(data_dir, config_file)
    keyring = KeyRing(cfg.data_dir)
    with database(cfg) as conn:
        try:
            retired: list[PublicKeyInfo] = []
            if keyring.ensure():
                new = keyring.current()
            else:
                retired, new = keyring.rotate()
        except SigningKeyError as exc:
            raise click.ClickException(str(exc)) from None
        apply_sync(conn, [audit_op(None, cli_actor(), "signing_key.rotated", "signing_key",
                                   ",".join(k.key_id for k in new),
                                   {"new": [k.key_id for k in new], "retired": [k.key_id for k in retired]})])
    for info in retired:
        click.echo(f"retired  {_line(info)}")
    for info in new:
        click.echo(f"new      {_line(info)}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", "public_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM file of the appliance's public keys (repeatable). Without it, only integrity is proven.")
@click.option("--signature", "signature", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A detached signature (GET /scans/:id/results/signature) over FILE's bytes.")
def verify(file: Path, public_keys: tuple[Path, ...], signature: Path | None) -> None:
    """Check a signed report (or a file and its detached signature) offline: exit 0 when both the
    Ed25519 and the ML-DSA-65 signature verify and the content is unchanged, else exit 1 saying what
    failed (which finding or member was changed, when the report can tell).

    Needs no data dir and no network.

    \b
    Examples:
      cix-appliance verify scan-report.json --public-key cix-appliance-keys.pem
      cix-appliance verify results.json --signature results.sig.json --public-key cix-appliance-keys.pem
    """
    try:
        pinned = verify_mod.pinned_keys(public_keys)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"--public-key: {exc}") from None
    data = file.read_bytes()
    if signature is not None:
        result = verify_mod.verify_detached(data, signature.read_bytes(), pinned)
    else:
        result = verify_mod.verify_report(data, pinned)
    if not result.ok:
        click.echo(f"{file}: NOT VERIFIED: {result.message}", err=True)
        sys.exit(1)
    click.echo(f"{file}: verified: {result.message}")
    if not result.pinned:
        click.echo(f"warning: {verify_mod.INTEGRITY_ONLY}", err=True)

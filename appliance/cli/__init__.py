"""``cix-appliance``: set up, run and administer the appliance.

Every command takes ``--data-dir`` (default ``$CIX_DATA_DIR``, else /var/lib/cix-appliance for root,
else ~/.local/share/cix-appliance). Errors are one line on stderr and exit status 1.
"""
from __future__ import annotations

import os

import click

from appliance import __version__
from appliance.cli import audit, engines, keys, maintenance, scans, setup, signing, tenant_events, tenants, workers


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cix-appliance")
def cli() -> None:
    """Self-hosted Cert-IX Scan API appliance.

    \b
    First run:
      cix-appliance init --hostname scanner.example.internal
      cix-appliance serve
    """
    # Everything the appliance writes (database, queue and their -wal/-shm, backups, scan output,
    # scanners' own files) holds tenants' data: owner-only, whoever starts us and with what umask.
    os.umask(0o077)


for command in (setup.init, setup.serve, setup.config, tenants.tenants, tenants.targets, keys.keys,
                maintenance.backup, maintenance.check, workers.workers, workers.worker, audit.audit,
                engines.engines, scans.scans, signing.signing_key, signing.verify):
    cli.add_command(command)
tenants.tenants.add_command(tenant_events.callback_secret)
tenants.tenants.add_command(tenant_events.set_quota)


def main() -> None:
    cli(prog_name="cix-appliance")

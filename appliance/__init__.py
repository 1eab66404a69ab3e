"""cix-appliance: the Cert-IX Scan API (/api/v1), self-hosted."""

__version__ = "0.1.0"

"""Scan engines: one module per scanner, all behind the protocol in :mod:`engines.base`, found by
:mod:`engines.registry`."""
from engines.base import Engine, Scanner
from engines.registry import SCAN_TYPES, build_registry

__all__ = ["SCAN_TYPES", "Engine", "Scanner", "build_registry"]

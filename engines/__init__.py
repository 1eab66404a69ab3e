"""Scan engines: one module per scanner, all behind the protocol in :mod:`engines.base`.

``build_registry`` returns every scan type the contract knows, in a fixed order; those without an
adapter yet are plain :class:`~engines.base.Scanner` entries that report what is missing.
"""
from __future__ import annotations

from collections.abc import Mapping

from engines.base import Engine, Scanner
from engines.nmap import NmapEngine

# scanType -> (title, binary) for scanners whose adapter is not written yet.
_PLANNED = {
    "zap": ("OWASP ZAP", "zap.sh"),
    "trivy": ("Trivy", "trivy"),
    "nuclei": ("Nuclei", "nuclei"),
    "nikto": ("Nikto", "nikto"),
    "sqlmap": ("SQLMap", "sqlmap"),
    "wapiti": ("Wapiti", "wapiti"),
    "theharvester": ("theHarvester", "harvester_windows"),
    "sublist3r": ("Sublist3r", "sublist3r"),
    "sentinel": ("Sentinel (multi-engine orchestration)", "sentinel"),
}
SCAN_TYPES = ("nmap", *_PLANNED)


def build_registry(executables: Mapping[str, str] | None = None) -> dict[str, Scanner]:
    """One object per scan type; ``executables`` maps scan types to configured binary paths."""
    paths = dict(executables or {})
    registry: dict[str, Scanner] = {"nmap": NmapEngine(paths.get("nmap"))}
    for scan_type, (title, binary) in _PLANNED.items():
        registry[scan_type] = Scanner(scan_type, title, binary, paths.get(scan_type))
    return registry


__all__ = ["SCAN_TYPES", "Engine", "Scanner", "build_registry"]

"""Finds the engine adapters: every module of the ``engines`` package that defines an
:class:`~engines.base.Engine` subclass with a ``name``. A new scanner is one new module.

The contract's ten scan types are always listed, in the contract's order; a scan type without an
adapter module is a plain :class:`~engines.base.Scanner` that says what is missing.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engines.base import Engine, Scanner

# The contract's scan types (§4) with their display names and the binary each one runs.
CONTRACT = {
    "nmap": ("Nmap", "nmap"),
    "zap": ("OWASP ZAP", "zap.sh"),
    "trivy": ("Trivy", "trivy"),
    "nuclei": ("Nuclei", "nuclei"),
    "nikto": ("Nikto", "nikto"),
    "sqlmap": ("SQLMap", "sqlmap"),
    "wapiti": ("Wapiti", "wapiti"),
    "harvester": ("theHarvester", "harvester_windows"),
    "sublist3r": ("Sublist3r", "sublist3r"),
    "sentinel": ("Sentinel (multi-engine orchestration)", "sentinel"),
}
SCAN_TYPES = tuple(CONTRACT)
_NOT_ENGINES = frozenset({"base", "registry"})


def engine_classes() -> dict[str, type[Engine]]:
    """scanType → adapter class, from the modules of this package."""
    package = importlib.import_module("engines")
    found: dict[str, type[Engine]] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name in _NOT_ENGINES or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"engines.{module_info.name}")
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, Engine) and obj.__module__ == module.__name__
                    and not inspect.isabstract(obj) and isinstance(getattr(obj, "name", None), str)):
                if obj.name in found:
                    raise RuntimeError(f"two adapters for scan type {obj.name!r}")
                found[obj.name] = obj
    return found


def build_registry(executables: Mapping[str, str] | None = None, data_root: Path | None = None,
                   settings: Mapping[str, Any] | None = None) -> dict[str, Scanner]:
    """One object per scan type. ``executables`` maps scan types to configured binary paths;
    ``data_root`` holds each engine's imported offline data in a folder named after it; ``settings``
    are the ``engines.*`` config keys, handed to each adapter's :meth:`Engine.configure`."""
    paths = dict(executables or {})
    classes = engine_classes()
    registry: dict[str, Scanner] = {}
    for scan_type in (*SCAN_TYPES, *sorted(set(classes) - set(SCAN_TYPES))):
        data_dir = data_root / scan_type if data_root is not None else None
        cls = classes.get(scan_type)
        if cls is not None:
            engine = cls(paths.get(scan_type), data_dir)
            engine.configure(settings or {})
            registry[scan_type] = engine
        else:
            title, binary = CONTRACT[scan_type]
            registry[scan_type] = Scanner(scan_type, title, binary, paths.get(scan_type), data_dir)
    return registry


def target_types(registry: Mapping[str, Scanner]) -> tuple[str, ...]:
    """Every ``targetType`` some engine accepts."""
    return tuple(sorted({kind for scanner in registry.values() for kind in scanner.target_types}))


def probe_all(registry: Mapping[str, Scanner]) -> None:
    """Find every scanner and read its version at once: each probe runs a ``--version`` that may take
    a second (a Python scanner's start-up), so they run side by side; results are cached by each."""
    with ThreadPoolExecutor(max_workers=max(1, len(registry))) as pool:
        list(pool.map(lambda scanner: scanner.probe(), registry.values()))

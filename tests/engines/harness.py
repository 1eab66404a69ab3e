"""Runs one engine the way a worker does (ScanSpec + ProcessControl), without the appliance around it:
for engine tests that need a real scanner but not the API."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.scanning.runner import ProcessControl
from engines.base import Engine, Finding, Outcome, RunResult, ScanSpec


@dataclasses.dataclass
class EngineRun:
    result: RunResult
    findings: list[Finding]
    outcome: Outcome
    progress: list[int]
    pids: list[int]


def run_engine(engine: Engine, workdir: Path, target: str, target_type: str, options: dict[str, Any] | None = None,
               timeout: int = 300, addresses: tuple[str, ...] = (), stop: Callable[[], bool] = lambda: False,
               data_dir: Path | None = None) -> EngineRun:
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    found = engine.probe()
    assert found.available, found.missing
    spec = ScanSpec("test-scan", target, target_type, engine.validate(options or {}), timeout, workdir,
                    found.path or engine.binary, addresses, data_dir if data_dir is not None else engine.data_dir)
    progress: list[int] = []
    pids: list[int] = []

    def tick() -> None:
        value = engine.progress(spec)
        if value is not None:
            progress.append(value)

    control = ProcessControl(workdir, timeout, stop, tick, pids.append, progress.append, kill_grace=2.0,
                             tick_seconds=0.5)
    try:
        result = engine.run(spec, control)
    finally:
        control.close()
    findings = list(engine.parse(spec))
    return EngineRun(result, findings, engine.outcome(spec, result.returncode or 0, result.stderr_tail),
                     progress, pids)

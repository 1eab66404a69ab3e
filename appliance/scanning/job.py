"""The job a scan task receives: everything needed to run one scan, already authorized.

It travels through the queue (on Redis, to other hosts), so it is plain JSON and is checked field by
field when read back. A worker never trusts it for *what* to scan: the appliance's answer to the
claim carries the authoritative job and freshly vetted addresses.
"""
from __future__ import annotations

import dataclasses
from typing import Any

_FIELDS = {"scan_id": str, "tenant_id": str, "scan_type": str, "target": str, "target_type": str,
           "options": dict, "timeout": int, "priority": str, "zone": str}


class JobError(ValueError):
    """A queued message that is not a well-formed job."""


@dataclasses.dataclass(frozen=True)
class Job:
    scan_id: str
    tenant_id: str
    scan_type: str
    target: str
    target_type: str
    options: dict[str, Any]
    timeout: int
    priority: str
    zone: str = ""  # "" is the default zone: the embedded worker and zone-less remote workers
    addresses: tuple[str, ...] = ()  # vetted addresses, for engines that connect to the target
    max_findings: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy costs more than the rest of a submission's queueing;
        # every caller serializes the dict at once.
        data = {name: getattr(self, name) for name in _ALL_FIELDS}
        data["addresses"] = list(self.addresses)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Job:
        if not isinstance(data, dict):
            raise JobError("a job is a JSON object")
        for name, kind in _FIELDS.items():
            if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool):
                raise JobError(f"job field {name} must be {kind.__name__}")
        addresses = data.get("addresses", [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise JobError("job field addresses must be a list of strings")
        max_findings = data.get("max_findings")
        if max_findings is not None and (not isinstance(max_findings, int) or isinstance(max_findings, bool)):
            raise JobError("job field max_findings must be an integer")
        return cls(**{name: data[name] for name in _FIELDS}, addresses=tuple(addresses), max_findings=max_findings)


_ALL_FIELDS = tuple(f.name for f in dataclasses.fields(Job))

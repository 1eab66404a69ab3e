"""Nuclei results (``-jsonl``: one ``ResultEvent`` per line; ``-je``: the same as a JSON array) →
normalized findings. A line cut short by a cancel is skipped; the lines before it count."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engines.base import Finding, extract_cves

SEVERITY = {"critical": "critical", "high": "high", "medium": "medium", "low": "low", "info": "info",
            "unknown": "info"}
EVIDENCE_MAX = 4000
MAX_REFERENCES = 20
# Dropped from raw: the template's whole text, server paths, and bulky request/response pairs.
_RAW_SKIP = frozenset({"template-encoded", "template-path", "template", "request", "response", "info",
                       "curl-command"})


def events(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = []
        yield from (i for i in items if isinstance(i, dict))
        return
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            yield item


def parse_file(path: Path, rename: tuple[str, str] | None = None, host: str | None = None) -> Iterator[Finding]:
    """``rename``: (scanned origin, the target's origin) to report URLs under the name the client gave;
    ``host``: that name."""
    for event in events(path):
        yield to_finding(event, rename, host)


def _ids(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value or [] if v]


def to_finding(event: dict[str, Any], rename: tuple[str, str] | None = None, host: str | None = None) -> Finding:
    info = event.get("info") or {}
    classification = info.get("classification") or {}
    template = str(event.get("template-id") or "unknown")
    matcher = event.get("matcher-name") or event.get("extractor-name")
    url = event.get("matched-at") or event.get("url")
    if url and rename and str(url).startswith(rename[0]):
        url = rename[1] + str(url)[len(rename[0]):]
    ip = event.get("ip") or None
    where = host or _host_of(str(event.get("host") or "")) or None
    try:
        port = int(event["port"]) if event.get("port") else None
    except (TypeError, ValueError):
        port = None
    for hostport in (event.get("host"), event.get("matched-at")):  # network/ssl events: "name:port"
        tail = str(hostport or "").rsplit(":", 1)
        if port is None and len(tail) == 2 and tail[1].isdigit() and "://" not in tail[0]:
            port = int(tail[1])
    cves = [c.upper() for c in _ids(classification.get("cve-id"))] or extract_cves(info.get("name"))
    cwes = [c.upper() for c in _ids(classification.get("cwe-id"))]
    cvss = None
    if classification.get("cvss-score") is not None:
        cvss = {"score": classification.get("cvss-score"), "vector": classification.get("cvss-metrics")}
    evidence = []
    if matcher:
        evidence.append(f"matcher: {matcher}")
    if event.get("extracted-results"):
        evidence.append("extracted: " + ", ".join(map(str, event["extracted-results"])))
    if event.get("matched-line"):
        evidence.append(f"line: {event['matched-line']}")
    if event.get("curl-command"):
        evidence.append(str(event["curl-command"]))
    refs = _ids(info.get("reference"))[:MAX_REFERENCES]
    return Finding(
        f"nuclei.{template}" + (f".{matcher}" if matcher else ""), str(info.get("name") or template),
        SEVERITY.get(str(info.get("severity") or "").lower(), "info"), host=where, ip=ip, port=port,
        protocol=event.get("type") or None, url=str(url) if url else None,
        # Without a matcher name, an extractor-only template (tls-version) tells its results apart by value.
        parameter=None if matcher or not event.get("extracted-results") else ",".join(
            map(str, event["extracted-results"]))[:200], cve=cves, cwe=cwes, cvss=cvss,
        description=info.get("description") or None, evidence="\n".join(evidence)[:EVIDENCE_MAX] or None,
        remediation=info.get("remediation") or None, references=refs,
        raw={"templateId": template, "tags": info.get("tags"), "author": info.get("author"),
             **{k: v for k, v in event.items() if k not in _RAW_SKIP}})


def _host_of(value: str) -> str:
    """``host`` is ``name``, ``name:port``, ``[v6]:port`` or a URL, depending on the protocol."""
    if "://" in value:
        return value.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value

"""Reads OWASP ZAP reports: the "traditional" JSON report (``/OTHER/core/other/jsonreport/``, what the
adapter fetches) and the equivalent XML report (``OWASPZAPReport``), both into normalized findings.

One finding per alert instance (rule, URL, method, parameter). ZAP's numbers are strings: ``riskcode``
0-3 = info/low/medium/high; ``confidence`` 0 = false positive (dropped), 1 low, 2 medium, 3 high,
4 confirmed; ``cweid`` "-1"/"0" = none.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engines.base import Finding, extract_cves
from engines.web import clip, html_text

_RISK = {"3": "high", "2": "medium", "1": "low", "0": "info"}
_CONFIDENCE = {"4": "high", "3": "high", "2": "medium", "1": "low"}
_URL_RE = re.compile(r"https?://[^\s<>\"']+")

UrlMap = Callable[[str | None], str | None]


def load_report(path: Path) -> dict[str, Any] | None:
    """The report as the JSON report's structure, whichever of the two formats ``path`` holds."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data.lstrip().startswith(b"<"):
        return _from_xml(data)
    try:
        report = json.loads(data)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def _from_xml(data: bytes) -> dict[str, Any] | None:
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    sites = []
    for site in root.iter("site"):
        alerts = []
        for item in site.iterfind("alerts/alertitem"):
            alert: dict[str, Any] = {child.tag: (child.text or "") for child in item if child.tag != "instances"}
            alert["instances"] = [{c.tag: (c.text or "") for c in inst} for inst in item.iterfind("instances/instance")]
            if not alert["instances"] and alert.get("uri"):  # reports before 2.8 had one instance inline
                alert["instances"] = [{k: alert.get(k, "") for k in ("uri", "method", "param", "attack", "evidence")}]
            alerts.append(alert)
        sites.append({f"@{k}": v for k, v in site.attrib.items()} | {"alerts": alerts})
    return {f"@{k}": v for k, v in root.attrib.items()} | {"site": sites}


def parse_report(path: Path, public_url: UrlMap | None = None, host: str | None = None,
                 ip: str | None = None) -> Iterator[Finding]:
    """Findings of a ZAP report. ``public_url`` maps the URLs ZAP saw (at the vetted address) back to
    the client's name; ``host``/``ip`` override the site's (same reason)."""
    report = load_report(path)
    if report is None:
        return
    sites = report.get("site")
    for site in sites if isinstance(sites, list) else [sites] if isinstance(sites, dict) else []:
        port_text = str(site.get("@port") or "")
        port = int(port_text) if port_text.isdigit() else None
        for alert in site.get("alerts") or []:
            if isinstance(alert, dict):
                yield from _alert_findings(alert, host or site.get("@host"), ip, port, public_url)


def _alert_findings(alert: dict[str, Any], host: str | None, ip: str | None, port: int | None,
                    public_url: UrlMap | None) -> Iterator[Finding]:
    confidence = _CONFIDENCE.get(str(alert.get("confidence", "2")))
    if confidence is None:
        return  # "0": ZAP (or a reviewer) marked it a false positive
    rule = str(alert.get("alertRef") or alert.get("pluginid") or "unknown")
    name = str(alert.get("name") or alert.get("alert") or f"ZAP rule {rule}")
    cweid = str(alert.get("cweid") or "")
    cwe = [f"CWE-{cweid}"] if cweid.isdigit() and int(cweid) > 0 else []
    description = html_text(alert.get("desc")) or None
    solution = html_text(alert.get("solution")) or None
    references = list(dict.fromkeys(_URL_RE.findall(str(alert.get("reference") or ""))))
    other = html_text(alert.get("otherinfo"))
    instances = [i for i in alert.get("instances") or [] if isinstance(i, dict)] or [{}]
    for inst in instances:
        uri = str(inst.get("uri") or "") or None
        url = public_url(uri) if public_url is not None else uri
        param = str(inst.get("param") or "") or None
        parts = [f"{label}: {inst[key]}" for key, label in (("method", "method"), ("param", "parameter"),
                 ("attack", "attack"), ("evidence", "evidence")) if inst.get(key)]
        inst_other = html_text(inst.get("otherinfo")) or other
        if inst_other:
            parts.append(inst_other)
        text = " ".join(x for x in (name, description or "", inst_other) if x)
        yield Finding(
            f"zap.{rule}", name, _RISK.get(str(alert.get("riskcode")), "info"), confidence,
            host=host, ip=ip, port=port, protocol="tcp", url=url, parameter=param, cve=extract_cves(text),
            cwe=cwe, description=description, evidence=clip("\n".join(parts)), remediation=solution,
            references=references,
            raw={"pluginid": alert.get("pluginid"), "alertRef": alert.get("alertRef"),
                 "method": inst.get("method"), "wascid": alert.get("wascid"), "sourceid": alert.get("sourceid"),
                 "riskdesc": alert.get("riskdesc")})

"""Trivy's JSON report (``--format json``, SchemaVersion 2) → normalized findings.

One finding per vulnerable package and advisory, per failed misconfiguration check, per secret and
per license. Identity (the fingerprint's fields) leaves out line numbers where it can, so that a
finding keeps its fingerprint when unrelated lines move: a misconfiguration is (check, file,
resource), a vulnerability (advisory, file, package). Secrets have nothing else that tells two
of them apart, so their line is part of it.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engines.base import Finding

SEVERITY = {"CRITICAL": "critical", "HIGH": "high", "MEDIUM": "medium", "LOW": "low", "UNKNOWN": "info"}
# Contract severity → trivy's, for ``--severity``.
TRIVY_SEVERITY = {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW", "info": "UNKNOWN"}
MAX_REFERENCES = 20
EVIDENCE_MAX = 4000


def load(path: Path) -> dict[str, Any] | None:
    """The report, or None when it is missing, empty or cut short (trivy writes it at the end)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def parse_report(report: dict[str, Any]) -> Iterator[Finding]:
    artifact = str(report.get("ArtifactName") or "") or None
    for result in report.get("Results") or []:
        if not isinstance(result, dict):
            continue
        target = str(result.get("Target") or "") or None
        for vuln in result.get("Vulnerabilities") or []:
            if vuln.get("Status") != "not_affected":  # the vendor says this package is not vulnerable
                yield _vulnerability(vuln, artifact, target, result)
        for misconf in result.get("Misconfigurations") or []:
            if misconf.get("Status", "FAIL") == "FAIL":  # PASS entries only come with --include-non-failures
                yield _misconfiguration(misconf, artifact, target)
        for secret in result.get("Secrets") or []:
            yield _secret(secret, artifact, target)
        for lic in result.get("Licenses") or []:
            yield _license(lic, artifact, target)


def _severity(value: Any) -> str:
    return SEVERITY.get(str(value or "").upper(), "info")


def _refs(item: dict[str, Any]) -> list[str]:
    refs = [item["PrimaryURL"]] if item.get("PrimaryURL") else []
    refs += [r for r in item.get("References") or [] if isinstance(r, str)]
    return list(dict.fromkeys(refs))[:MAX_REFERENCES]


def _cvss(vuln: dict[str, Any]) -> dict[str, Any] | None:
    """The score of the source trivy took the severity from, else NVD's, else any; v4 before v3."""
    sources = vuln.get("CVSS") or {}
    order = [vuln.get("SeveritySource"), "nvd", *sources]
    for name in order:
        entry = sources.get(name) if name else None
        if not isinstance(entry, dict):
            continue
        for version in ("V40", "V3"):
            if entry.get(f"{version}Score") is not None:
                return {"score": entry[f"{version}Score"], "vector": entry.get(f"{version}Vector"),
                        "source": name}
    return None


def _vulnerability(vuln: dict[str, Any], artifact: str | None, target: str | None,
                   result: dict[str, Any]) -> Finding:
    vid = str(vuln.get("VulnerabilityID") or "unknown")
    pkg = str(vuln.get("PkgName") or "?")
    installed = vuln.get("InstalledVersion") or ""
    fixed = vuln.get("FixedVersion")
    evidence = f"{pkg} {installed}".strip() + (f" (fixed in {fixed})" if fixed else " (no fixed version)")
    if vuln.get("PkgPath"):
        evidence += f"\npath: {vuln['PkgPath']}"
    return Finding(
        f"trivy.vuln.{vid}", f"{vid}: {pkg} {installed}".rstrip() + (f" — {vuln['Title']}" if vuln.get("Title")
                                                                     else ""),
        _severity(vuln.get("Severity")), host=artifact, url=target, parameter=pkg + (
            f"@{vuln['PkgPath']}" if vuln.get("PkgPath") else ""),
        cve=[vid.upper()] if vid.upper().startswith("CVE-") else [],
        cwe=[c for c in vuln.get("CweIDs") or [] if isinstance(c, str)], cvss=_cvss(vuln),
        description=vuln.get("Description"), evidence=evidence,
        remediation=f"Upgrade {pkg} to {fixed}" if fixed else None, references=_refs(vuln),
        raw={"class": result.get("Class"), "type": result.get("Type"), "pkgName": pkg,
             "installedVersion": installed, "fixedVersion": fixed, "status": vuln.get("Status"),
             "severitySource": vuln.get("SeveritySource"), "dataSource": (vuln.get("DataSource") or {}).get("ID"),
             "publishedDate": vuln.get("PublishedDate")})


def _misconfiguration(item: dict[str, Any], artifact: str | None, target: str | None) -> Finding:
    check = str(item.get("ID") or item.get("AVDID") or "unknown")
    cause = item.get("CauseMetadata") or {}
    lines = ((cause.get("Code") or {}).get("Lines")) or []
    code = "\n".join(f"{ln.get('Number')}: {ln.get('Content')}" for ln in lines
                     if isinstance(ln, dict) and ln.get("IsCause"))
    where = f"lines {cause['StartLine']}-{cause.get('EndLine', cause['StartLine'])}" if cause.get("StartLine") else ""
    evidence = "\n".join(x for x in (item.get("Message"), where, code) if x)
    return Finding(
        f"trivy.misconfig.{check}", str(item.get("Title") or check), _severity(item.get("Severity")),
        host=artifact, url=target, parameter=cause.get("Resource") or None,
        description=item.get("Description"), evidence=evidence[:EVIDENCE_MAX] or None,
        remediation=item.get("Resolution"), references=_refs(item),
        raw={"id": check, "avdid": item.get("AVDID"), "type": item.get("Type"),
             "namespace": item.get("Namespace"), "provider": cause.get("Provider"),
             "service": cause.get("Service"), "startLine": cause.get("StartLine")})


def _secret(item: dict[str, Any], artifact: str | None, target: str | None) -> Finding:
    rule = str(item.get("RuleID") or "unknown")
    line = item.get("StartLine")
    # Match is already redacted by trivy (``GITHUB_PAT=*****``): the secret itself is never stored.
    return Finding(
        f"trivy.secret.{rule}", f"Secret: {item.get('Title') or rule}", _severity(item.get("Severity")),
        host=artifact, url=target, parameter=f"line {line}" if line else None,
        evidence=(f"line {line}: " if line else "") + str(item.get("Match") or ""),
        remediation="Remove the secret from the artifact and revoke it: it must be treated as leaked.",
        cwe=["CWE-798"],
        raw={"ruleId": rule, "category": item.get("Category"), "startLine": line, "endLine": item.get("EndLine")})


def _license(item: dict[str, Any], artifact: str | None, target: str | None) -> Finding:
    name = str(item.get("Name") or "unknown")
    where = item.get("PkgName") or item.get("FilePath") or target
    return Finding(
        f"trivy.license.{name}", f"License {name} ({item.get('Category') or 'unknown'}) in {where}",
        _severity(item.get("Severity")), host=artifact, url=target, parameter=item.get("PkgName") or None,
        evidence=f"{name} in {where}", references=[item["Link"]] if item.get("Link") else [],
        confidence="high" if float(item.get("Confidence") or 1.0) >= 0.9 else "medium",
        raw={"category": item.get("Category"), "pkgName": item.get("PkgName"), "filePath": item.get("FilePath")})

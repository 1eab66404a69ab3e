"""Unit tests of the trivy adapter: options, argv, data requirements, parser and outcome on real reports."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engines.base import ScanSpec
from engines.options import OptionError
from engines.trivy import REPORT, TrivyEngine
from engines.trivy_report import load, parse_report
from tests.engines.bundles import import_fake_trivy_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines" / "trivy"


def spec(tmp_path: Path, options: dict | None = None, target: str = "/srv/builds/app",
         target_type: str = "filesystem", data_dir: Path | None = None) -> ScanSpec:
    return ScanSpec("scan-1", target, target_type, options or {}, 600, tmp_path, "/opt/trivy", data_dir=data_dir)


def findings_of(name: str) -> list:
    report = load(FIXTURES / name)
    assert report is not None
    return list(parse_report(report))


# -- options and argv ---------------------------------------------------------------------------
def test_options_are_normalized_and_allowlisted():
    engine = TrivyEngine()
    assert engine.validate({"scanners": "secret,misconfig,secret"}) == {"scanners": "secret,misconfig"}
    assert engine.validate({"severity": "critical,high"}) == {"severity": "critical,high"}
    for bad in ({"scanners": "vuln,rbac"}, {"scanners": "vuln --exit-code 1"}, {"severity": "urgent"},
                {"template": "x"}, {"severity": "HIGH;rm"}):
        with pytest.raises(OptionError):
            engine.validate(bad)


def test_argv_is_offline_and_maps_severities(tmp_path):
    engine = TrivyEngine()
    argv = engine.build_argv(spec(tmp_path, engine.validate({"scanners": "misconfig,secret",
                                                              "severity": "high,info"})))
    assert argv[:2] == ["/opt/trivy", "filesystem"]
    for flag in ("--skip-db-update", "--skip-java-db-update", "--skip-check-update", "--offline-scan",
                 "--disable-telemetry", "--skip-version-check"):
        assert flag in argv
    assert argv[argv.index("--severity") + 1] == "HIGH,UNKNOWN"
    assert argv[argv.index("--scanners") + 1] == "misconfig,secret"
    assert argv[argv.index("--cache-dir") + 1].startswith(str(tmp_path))
    assert argv[-2:] == ["--", "/srv/builds/app"]


def test_argv_per_target_kind(tmp_path):
    engine = TrivyEngine()
    image = engine.build_argv(spec(tmp_path, target="registry.lab.test/app:1.0", target_type="image"))
    assert image[1] == "image" and image[-4:] == ["--image-src", "remote", "--", "registry.lab.test/app:1.0"]
    tarball = engine.build_argv(spec(tmp_path, target="/srv/builds/app.tar", target_type="image"))
    assert tarball[-2:] == ["--input", "/srv/builds/app.tar"]
    assert engine.build_argv(spec(tmp_path, target="/srv/builds/repo", target_type="repository"))[1] == "repository"


def test_symlinked_target_is_scanned_at_its_resolved_path(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    argv = TrivyEngine().build_argv(spec(tmp_path, target=str(tmp_path / "link")))
    assert argv[-1] == str(real)


def test_infer_target_type():
    engine = TrivyEngine()
    assert engine.infer_target_type("/srv/builds/app") == "filesystem"
    assert engine.infer_target_type("/srv/builds/app.tar.gz") == "image"
    assert engine.infer_target_type("registry.lab.test/team/app:1.2") == "image"
    assert engine.infer_target_type("alpine:3.19") == "image"


# -- offline data -------------------------------------------------------------------------------
def test_vulnerability_scans_need_the_imported_db(tmp_path):
    engine = TrivyEngine(data_dir=tmp_path / "engine-data" / "trivy")
    assert engine.data_status()[0].missing and not engine.data_status()[0].required
    assert engine.missing_data(engine.validate({})) == [
        "trivy-db: not imported (cix-appliance engines import trivy-db ...)"]
    assert engine.missing_data(engine.validate({"scanners": "misconfig,secret"})) == []
    import_fake_trivy_db(tmp_path / "engine-data", tmp_path)
    assert engine.missing_data(engine.validate({})) == []
    assert engine.data_status()[0].version == "v2-20261128T060000Z"


def test_prepare_links_the_current_db_into_the_scan_cache(tmp_path):
    root = tmp_path / "engine-data"
    import_fake_trivy_db(root, tmp_path)
    engine = TrivyEngine(data_dir=root / "trivy")
    work = tmp_path / "work"
    work.mkdir()
    engine.prepare(spec(work, engine.validate({}), data_dir=root / "trivy"))
    link = work / "trivy-cache" / "db"
    assert link.is_symlink() and (link / "trivy.db").is_file() and (link / "metadata.json").is_file()
    assert link.readlink().parent.name == "v2-20261128T060000Z"  # resolved once, not via current

    other = tmp_path / "work2"
    other.mkdir()
    engine.prepare(spec(other, engine.validate({"scanners": "secret"}), data_dir=root / "trivy"))
    assert not (other / "trivy-cache" / "db").exists()


# -- parser -------------------------------------------------------------------------------------
def test_misconfigurations_vulnerabilities_and_secrets():
    found = findings_of("dd-misconfigurations_and_secrets.json")
    by_rule = {f.rule_id: f for f in found}
    assert len(found) == 5
    vuln = by_rule["trivy.vuln.CVE-2021-33503"]
    assert vuln.severity == "high" and vuln.cve == ["CVE-2021-33503"] and vuln.cwe == ["CWE-400"]
    assert vuln.url == "requirements.txt" and vuln.host == "." and vuln.parameter == "urllib3"
    assert vuln.cvss == {"score": 7.5, "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", "source": "nvd"}
    assert vuln.remediation == "Upgrade urllib3 to 1.26.5" and "1.26.3 (fixed in 1.26.5)" in vuln.evidence
    assert vuln.references[0] == "https://avd.aquasec.com/nvd/cve-2021-33503"
    misconf = by_rule["trivy.misconfig.DS002"]
    assert (misconf.severity, misconf.url, misconf.title) == ("high", "Dockerfile", "Image user should not be 'root'")
    assert misconf.remediation.startswith("Add 'USER")
    secrets = [f for f in found if f.rule_id == "trivy.secret.github-pat"]
    assert {(s.url, s.parameter, s.severity) for s in secrets} == {("Dockerfile", "line 24", "critical"),
                                                                   ("secret.txt", "line 1", "critical")}
    assert all("*****" in s.evidence for s in secrets)
    assert len({f.fingerprint("trivy") for f in found}) == len(found)


def test_image_report_with_os_and_language_packages():
    found = findings_of("dd-scheme_2_many_vulns.json")
    assert len(found) == 5 and {f.host for f in found} == {"teamdojo:latest"}
    freetype = next(f for f in found if "freetype" in f.title)
    assert freetype.parameter == "freetype@app/libs/freetype-2.9.1-r2"
    assert freetype.severity == "medium" and freetype.cvss["score"] == 6.5  # nvd: the severity source


def test_cvss_v4_from_the_severity_source():
    vuln = findings_of("dd-cvssv4_severity_source.json")[0]
    assert vuln.cvss == {"score": 6.3, "vector": "CVSS:4.0/AV:N/AC:L/AT:P/PR:N/UI:N/VC:L/VI:L/VA:N/SC:N/SI:N/SA:N",
                         "source": "ghsa"}


def test_not_affected_is_dropped_and_unknown_ids_are_no_cve():
    found = findings_of("dd-all_statuses.json")
    assert len(found) == 7 and "trivy.vuln.CVE-2019-18276" not in {f.rule_id for f in found}
    temp = next(f for f in found if f.rule_id == "trivy.vuln.TEMP-0841856-B18BAF")
    assert temp.cve == [] and temp.severity == "low"


def test_clean_report_has_no_findings():
    assert findings_of("dd-scheme_2_no_vuln.json") == []


def test_license_findings():
    report = {"SchemaVersion": 2, "ArtifactName": "/srv/app", "Results": [{
        "Target": "Python", "Class": "license", "Licenses": [
            {"Severity": "HIGH", "Category": "restricted", "PkgName": "gpl-lib", "FilePath": "", "Name": "GPL-3.0",
             "Confidence": 1, "Link": ""}]}]}
    (lic,) = parse_report(report)
    assert (lic.rule_id, lic.severity, lic.parameter) == ("trivy.license.GPL-3.0", "high", "gpl-lib")


# -- outcome ------------------------------------------------------------------------------------
def test_outcome_comes_from_the_report(tmp_path):
    engine = TrivyEngine()
    s = spec(tmp_path, {"scanners": "misconfig"}, target=str(tmp_path))
    assert not engine.outcome(s, 0, "").success  # exit 0 and no report: failed
    (tmp_path / REPORT).write_text('{"SchemaVersion": 2, "Results": [')  # cut short
    assert list(engine.parse(s)) == [] and not engine.outcome(s, 0, "").success
    shutil.copy(FIXTURES / "dd-scheme_2_no_vuln.json", tmp_path / REPORT)
    assert engine.outcome(s, 1, "").success


def test_missing_db_at_run_time_is_engine_unavailable(tmp_path):
    stderr = "FATAL\tFatal error\trun error: --skip-db-update cannot be specified on the first run"
    outcome = TrivyEngine().outcome(spec(tmp_path, {"scanners": "vuln"}), 1, stderr)
    assert outcome.error_code == "ENGINE_UNAVAILABLE" and "trivy-db" in outcome.message

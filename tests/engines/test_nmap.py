"""Unit tests of the nmap adapter: options, argv, parser, progress and outcome on recorded reports."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import engines.nmap as nmap_mod
from engines.base import ScanSpec
from engines.nmap import NmapEngine, parse_file
from engines.options import OptionError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines" / "nmap"


@pytest.fixture
def engine() -> NmapEngine:
    return NmapEngine("/usr/bin/nmap")


@pytest.fixture
def raw_ok(monkeypatch):
    monkeypatch.setattr(nmap_mod, "has_raw_socket_capability", lambda: True)


@pytest.fixture
def raw_missing(monkeypatch):
    monkeypatch.setattr(nmap_mod, "has_raw_socket_capability", lambda: False)


def spec(tmp_path: Path, options: dict | None = None, target: str = "127.0.0.1",
         target_type: str = "ip") -> ScanSpec:
    return ScanSpec("scan-1", target, target_type, options or {}, 600, tmp_path, "/usr/bin/nmap")


def spec_with_report(tmp_path: Path, fixture: str) -> ScanSpec:
    shutil.copy(FIXTURES / fixture, tmp_path / "nmap.xml")
    return spec(tmp_path)


def write_report(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "nmap.xml"
    path.write_text('<?xml version="1.0"?>\n<nmaprun scanner="nmap">\n' + body + "\n</nmaprun>\n")
    return path


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ports, canonical", [
    ("80", "80"),
    ("22,80,8000-8100", "22,80,8000-8100"),
    ("8000-8100,80,22,80", "22,80,8000-8100"),
    ("80,81,82-90,85", "80-90"),
    ("1-65535", "1-65535"),
    ("443-443", "443"),
])
def test_ports_are_normalized(engine, ports, canonical):
    assert engine.validate({"ports": ports}) == {"ports": canonical}


@pytest.mark.parametrize("ports", ["80 -oX /tmp/x", "0", "70000", "1-", "a", "80\n81", "-p1", "",
                                   "90-80", "80,,81", "80;id", "80,"])
def test_bad_ports_are_rejected(engine, ports):
    with pytest.raises(OptionError) as err:
        engine.validate({"ports": ports})
    assert err.value.field == "options.ports"


def test_ports_must_be_a_string(engine):
    with pytest.raises(OptionError, match=r"options\.ports"):
        engine.validate({"ports": 80})


@pytest.mark.parametrize("scripts, canonical", [
    ("http-title", "http-title"),
    ("default", "default"),
    ("vuln,http-title,ssl-cert,http-title", "vuln,http-title,ssl-cert"),
    ("http-robots.txt", "http-robots.txt"),
])
def test_allowed_scripts(engine, scripts, canonical):
    assert engine.validate({"scripts": scripts}) == {"scripts": canonical}


@pytest.mark.parametrize("scripts", ["../../x", "vulners", "http-*", "/tmp/evil.nse", "external",
                                     "intrusive", "broadcast", "nosuchscript", "http-title,vulners",
                                     "default or external", "HTTP-TITLE", "--script-args=x"])
def test_disallowed_scripts_are_rejected(engine, scripts):
    with pytest.raises(OptionError) as err:
        engine.validate({"scripts": scripts})
    assert err.value.field == "options.scripts"


def test_category_expression_excludes_unsafe_scripts():
    expr = nmap_mod.script_expression("http-title,vuln")
    named, category = expr.split(",")
    assert named == "http-title"
    assert category.startswith("vuln and safe and not (")
    for unsafe in ("external", "broadcast", "intrusive", "dos", "exploit", "brute", "malware",
                   "fuzzer", "http-slowloris-check"):
        assert unsafe in category


def test_unknown_option_is_rejected(engine):
    with pytest.raises(OptionError) as err:
        engine.validate({"args": "-sS"})
    assert err.value.field == "options.args"


def test_ports_and_top_ports_are_exclusive(engine):
    with pytest.raises(OptionError) as err:
        engine.validate({"ports": "80", "topPorts": 100})
    assert err.value.field == "options.topPorts"


@pytest.mark.parametrize("options, field", [
    ({"topPorts": 0}, "options.topPorts"),
    ({"topPorts": 65536}, "options.topPorts"),
    ({"topPorts": True}, "options.topPorts"),
    ({"topPorts": "100"}, "options.topPorts"),
    ({"hostTimeout": 0}, "options.hostTimeout"),
    ({"hostTimeout": 86401}, "options.hostTimeout"),
    ({"serviceDetection": 1}, "options.serviceDetection"),
    ({"osDetection": "true"}, "options.osDetection"),
    ({"timing": "T6"}, "options.timing"),
    ({"timing": "4"}, "options.timing"),
    ({"technique": "xmas"}, "options.technique"),
])
def test_ill_typed_or_out_of_range_options(engine, options, field):
    with pytest.raises(OptionError) as err:
        engine.validate(options)
    assert err.value.field == field


@pytest.mark.parametrize("options, field", [
    ({"technique": "syn"}, "options.technique"),
    ({"technique": "udp"}, "options.technique"),
    ({"osDetection": True}, "options.osDetection"),
])
def test_raw_socket_features_need_the_capability(engine, raw_missing, options, field):
    with pytest.raises(OptionError) as err:
        engine.validate(options)
    assert err.value.field == field
    assert "CAP_NET_RAW" in err.value.message


@pytest.mark.parametrize("options", [{"technique": "syn"}, {"technique": "udp"},
                                     {"osDetection": True, "technique": "syn"}])
def test_raw_socket_features_with_the_capability(engine, raw_ok, options):
    assert engine.validate(options) == options


def test_connect_scan_needs_no_capability(engine, raw_missing):
    assert engine.validate({"technique": "connect", "osDetection": False}) == {
        "technique": "connect", "osDetection": False}


def test_capability_check_reads_this_process():
    # This suite runs as root or with a known CapEff; the function must agree with /proc.
    status = Path("/proc/self/status").read_text()
    cap_eff = int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)
    assert nmap_mod.has_raw_socket_capability() is bool(cap_eff & (1 << 13))


# -- argv ---------------------------------------------------------------------------------------
def test_default_argv(engine, tmp_path):
    argv = engine.build_argv(spec(tmp_path))
    assert all(isinstance(a, str) for a in argv)
    assert argv[0] == "/usr/bin/nmap"
    assert argv[-2:] == ["--", "127.0.0.1"]
    assert argv[argv.index("-oX") + 1] == str(tmp_path / "nmap.xml")
    assert {"-sT", "-T4", "-sV", "--version-light", "-n", "-Pn", "--stats-every"} <= set(argv)
    assert "--noninteractive" not in argv  # it silences --stats-every, so progress would never move
    assert argv[argv.index("--stats-every") + 1] == "2s"
    assert "-O" not in argv and "--script" not in argv and "-p" not in argv


def test_full_argv(engine, tmp_path, raw_ok):
    options = engine.validate({"ports": "8000-8100,22", "timing": "T2", "serviceDetection": False,
                               "osDetection": True, "scripts": "http-title,default",
                               "technique": "syn", "hostTimeout": 300})
    argv = engine.build_argv(spec(tmp_path, options, "192.0.2.0/24", "network"))
    assert argv[argv.index("-p") + 1] == "22,8000-8100"
    assert argv[argv.index("--host-timeout") + 1] == "300s"
    assert argv[argv.index("--script") + 1].startswith("http-title,default and safe and not (")
    assert {"-sS", "-T2", "-O"} <= set(argv)
    assert "-sV" not in argv
    assert "-Pn" not in argv  # network targets keep host discovery
    assert argv[-2:] == ["--", "192.0.2.0/24"]


def test_top_ports_and_udp(engine, tmp_path, raw_ok):
    argv = engine.build_argv(spec(tmp_path, {"topPorts": 100, "technique": "udp"}, "example.lan",
                                  "domain"))
    assert argv[argv.index("--top-ports") + 1] == "100"
    assert "-sU" in argv and "-Pn" in argv


def test_privileged_flag_only_for_non_root_raw_scans(engine, tmp_path, monkeypatch):
    monkeypatch.setattr("engines.nmap.os.geteuid", lambda: 1000)
    assert "--privileged" in engine.build_argv(spec(tmp_path, {"technique": "syn"}))
    assert "--privileged" not in engine.build_argv(spec(tmp_path, {"technique": "connect"}))
    monkeypatch.setattr("engines.nmap.os.geteuid", lambda: 0)
    assert "--privileged" not in engine.build_argv(spec(tmp_path, {"technique": "syn"}))


def test_argv_carries_no_smuggled_flags(engine, tmp_path):
    options = engine.validate({"ports": "80,443", "scripts": "ssl-cert"})
    argv = engine.build_argv(spec(tmp_path, options))
    flags = [a for a in argv[1:-1] if a.startswith("-")]
    assert "-oJ" not in flags and flags.count("-oX") == 1
    for arg in argv:
        if arg not in (argv[argv.index("--script") + 1], str(tmp_path / "nmap.xml")):
            assert " " not in arg and "\n" not in arg


# -- parser ---------------------------------------------------------------------------------------
def test_parse_connect_scan():
    findings = list(parse_file(FIXTURES / "nmap-sT-sV.xml"))
    by_port = {f.port: f for f in findings}
    assert set(by_port) == {5001, 8000}
    http = by_port[8000]
    assert http.rule_id == "nmap.open-port"
    assert http.title == "Open port 8000/tcp http SimpleHTTPServer 0.6"
    assert (http.severity, http.confidence) == ("info", "high")
    assert (http.host, http.ip, http.protocol) == ("localhost", "127.0.0.1", "tcp")
    assert http.url == "http://localhost:8000/"
    assert "cpe: cpe:/a:python:simplehttpserver:0.6" in http.evidence
    assert "extrainfo: Python 3.11.7" in http.evidence
    assert http.raw["service"]["product"] == "SimpleHTTPServer"
    assert http.raw["cpe"] == ["cpe:/a:python:simplehttpserver:0.6"]
    assert http.raw["reason"] == "syn-ack"
    unknown = by_port[5001]
    assert unknown.title == "Open port 5001/tcp commplex-link"
    assert unknown.confidence == "low"  # conf="3": guessed from the port table
    assert unknown.url is None


def test_parse_scripts():
    findings = list(parse_file(FIXTURES / "nmap-sS-sV-sC.xml"))
    rules = sorted(f.rule_id for f in findings)
    assert rules == ["nmap.open-port", "nmap.open-port", "nmap.script.fingerprint-strings",
                     "nmap.script.http-server-header", "nmap.script.http-title"]
    assert 22 not in {f.port for f in findings}  # closed
    header = next(f for f in findings if f.rule_id == "nmap.script.http-server-header")
    assert header.title == "http-server-header on 8000/tcp"
    assert header.evidence == "SimpleHTTP/0.6 Python/3.11.7"
    assert (header.port, header.protocol, header.severity, header.cve) == (8000, "tcp", "info", [])
    strings = next(f for f in findings if f.rule_id == "nmap.script.fingerprint-strings")
    assert strings.port == 5001 and strings.evidence.startswith("GetRequest:")
    assert len(strings.evidence) <= nmap_mod.EVIDENCE_MAX


def test_parse_truncated_report_does_not_raise():
    assert list(parse_file(FIXTURES / "nmap-cancel-sigterm-truncated.xml")) == []


def test_parse_keeps_complete_hosts_of_a_truncated_report(tmp_path):
    data = (FIXTURES / "nmap-sT-sV.xml").read_text()
    cut = data.index("<runstats>") + 20
    (tmp_path / "nmap.xml").write_text(data[:cut])
    assert sorted(f.port for f in parse_file(tmp_path / "nmap.xml")) == [5001, 8000]
    (tmp_path / "nmap.xml").write_text(data[:data.index('portid="8000"')])
    assert list(parse_file(tmp_path / "nmap.xml")) == []  # the host was cut: nothing half-read


def test_parse_missing_empty_and_garbage_reports(tmp_path):
    assert list(parse_file(tmp_path / "nmap.xml")) == []
    (tmp_path / "nmap.xml").write_bytes(b"")
    assert list(parse_file(tmp_path / "nmap.xml")) == []
    (tmp_path / "nmap.xml").write_bytes(b"<nmaprun><host></nmaprun>\x00garbage")
    assert list(parse_file(tmp_path / "nmap.xml")) == []


def test_parse_vulnerable_script_host_down_and_hostscript(tmp_path):
    path = write_report(tmp_path, """
<host><status state="up" reason="user-set"/><address addr="192.0.2.5" addrtype="ipv4"/>
<address addr="00:11:22:33:44:55" addrtype="mac"/><hostnames></hostnames>
<ports>
<port protocol="tcp" portid="443"><state state="open" reason="syn-ack"/>
<service name="http" tunnel="ssl" product="nginx" method="probed" conf="10"/>
<script id="ssl-heartbleed"
 output="&#xa;  VULNERABLE:&#xa;  The Heartbleed Bug&#xa;    State: VULNERABLE&#xa;    IDs:  CVE:CVE-2014-0160">
<table key="CVE-2014-0160"><elem key="state">VULNERABLE</elem></table></script>
<script id="ssl-poodle" output="&#xa;  State: NOT VULNERABLE">
<table key="x"><elem key="state">NOT VULNERABLE</elem></table></script>
<script id="http-title" output="VULNERABLE CVE-2020-0001 notes"/>
</port>
<port protocol="udp" portid="161"><state state="open|filtered" reason="no-response"/></port>
<port protocol="tcp" portid="9"><state state="open" reason="syn-ack"/></port>
</ports>
<hostscript><script id="smb-os-discovery" output="OS: Windows"/></hostscript>
</host>
<host><status state="down" reason="no-response"/><address addr="192.0.2.6" addrtype="ipv4"/></host>
""")
    findings = list(parse_file(path))
    by_rule = {f.rule_id: f for f in findings}
    assert {f.port for f in findings if f.rule_id == "nmap.open-port"} == {443, 9}
    bleed = by_rule["nmap.script.ssl-heartbleed"]
    assert (bleed.severity, bleed.cve, bleed.url) == ("high", ["CVE-2014-0160"], "https://192.0.2.5:443/")
    assert by_rule["nmap.script.ssl-poodle"].severity == "info"
    # Text a target controls (a page title) names a CVE but does not make a VULNERABLE state.
    assert by_rule["nmap.script.http-title"].severity == "medium"
    bare = next(f for f in findings if f.port == 9)
    assert (bare.title, bare.confidence, bare.evidence) == ("Open port 9/tcp", "medium", None)
    smb = by_rule["nmap.script.smb-os-discovery"]
    assert (smb.title, smb.port, smb.ip, smb.host) == ("smb-os-discovery on 192.0.2.5", None,
                                                      "192.0.2.5", "192.0.2.5")
    down = by_rule["nmap.host-down"]
    assert (down.title, down.ip, down.severity) == ("Host down: 192.0.2.6", "192.0.2.6", "info")


def test_os_detection(tmp_path):
    path = write_report(tmp_path, """<host><status state="up"/><address addr="127.0.0.1" addrtype="ipv4"/>
<ports></ports><os><portused state="open" proto="tcp" portid="80"/>
<osmatch name="Linux 5.0 - 5.2" accuracy="96" line="1"><osclass vendor="Linux" accuracy="96">
<cpe>cpe:/o:linux:linux_kernel:5</cpe></osclass></osmatch>
<osmatch name="Linux 3.1" accuracy="95" line="2"><osclass vendor="Linux" accuracy="95"/></osmatch>
</os></host>""")
    [os_finding] = parse_file(path)
    assert (os_finding.rule_id, os_finding.title, os_finding.confidence) == (
        "nmap.os", "OS: Linux 5.0 - 5.2", "high")
    assert os_finding.evidence == "Linux 5.0 - 5.2 (96%)\nLinux 3.1 (95%)"
    assert os_finding.raw["osmatch"][0]["cpe"] == ["cpe:/o:linux:linux_kernel:5"]


def test_ipv6_url_is_bracketed(tmp_path):
    path = write_report(tmp_path, """<host><status state="up"/><address addr="::1" addrtype="ipv6"/>
<ports><port protocol="tcp" portid="80"><state state="open"/><service name="http" conf="10"/></port>
</ports></host>""")
    assert [f.url for f in parse_file(path)] == ["http://[::1]:80/"]


def test_fingerprints_are_stable_and_distinct():
    first = [f.fingerprint("nmap") for f in parse_file(FIXTURES / "nmap-sS-sV-sC.xml")]
    second = [f.fingerprint("nmap") for f in parse_file(FIXTURES / "nmap-sS-sV-sC.xml")]
    assert first == second
    assert len(set(first)) == len(first)
    ports = {f.port: f.fingerprint("nmap") for f in parse_file(FIXTURES / "nmap-sT-sV.xml")}
    assert ports[5001] != ports[8000]


def test_engine_parse_reads_the_workdir(engine, tmp_path):
    assert [f.port for f in engine.parse(spec_with_report(tmp_path, "nmap-sT-sV.xml"))] == [5001, 8000]


# -- progress -----------------------------------------------------------------------------------
def test_progress_from_partial_report(engine, tmp_path):
    data = (FIXTURES / "nmap-sT-progress.xml").read_text()
    (tmp_path / "nmap.xml").write_text(data[:data.index('percent="49.45"') + 40])
    assert engine.progress(spec(tmp_path)) == 49
    (tmp_path / "nmap.xml").write_text(data)
    assert engine.progress(spec(tmp_path)) == 96


def test_progress_unknown_and_capped(engine, tmp_path):
    assert engine.progress(spec(tmp_path)) is None
    shutil.copy(FIXTURES / "nmap-cancel-sigterm-truncated.xml", tmp_path / "nmap.xml")
    assert engine.progress(spec(tmp_path)) is None
    (tmp_path / "nmap.xml").write_text('<taskprogress task="x" percent="100.00" remaining="0"/>')
    assert engine.progress(spec(tmp_path)) == 99


# -- outcome ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["nmap-sT-sV.xml", "nmap-sS-sV-sC.xml", "nmap-sT-progress.xml"])
def test_outcome_success(engine, tmp_path, fixture):
    result = engine.outcome(spec_with_report(tmp_path, fixture), 0, "")
    assert (result.success, result.error_code, result.message) == (True, None, None)


def test_outcome_truncated(engine, tmp_path):
    result = engine.outcome(spec_with_report(tmp_path, "nmap-cancel-sigterm-truncated.xml"), -15, "")
    assert (result.success, result.error_code) == (False, "ENGINE_ERROR")
    assert "report is incomplete" in result.message


def test_outcome_missing_and_empty_report(engine, tmp_path):
    result = engine.outcome(spec(tmp_path), 1, "")
    assert not result.success and result.error_code == "ENGINE_ERROR"
    assert "no report" in result.message
    (tmp_path / "nmap.xml").write_text("")
    assert "no report" in engine.outcome(spec(tmp_path), 0, "").message


def test_outcome_quitting(engine, tmp_path):
    stderr = "You requested a scan type which requires root privileges.\nQUITTING!\n"
    result = engine.outcome(spec_with_report(tmp_path, "nmap-sT-sV.xml"), 1, stderr)
    assert (result.success, result.error_code) == (False, "ENGINE_ERROR")
    assert result.message == "You requested a scan type which requires root privileges."


def test_outcome_error_in_runstats(engine, tmp_path):
    write_report(tmp_path, '<runstats><finished exit="error" errormsg="NSE: failed to initialize'
                           ' the script engine:&#xa;trace"/><hosts up="0" down="0" total="0"/></runstats>')
    result = engine.outcome(spec(tmp_path), 1, "")
    assert not result.success
    assert result.message == "NSE: failed to initialize the script engine:"


def test_outcome_no_host_scanned(engine, tmp_path):
    write_report(tmp_path, '<runstats><finished exit="success"/><hosts up="0" down="0" total="0"/>'
                           '</runstats>')
    result = engine.outcome(spec(tmp_path), 0, 'Failed to resolve "nosuch.lan".\nWARNING: No targets '
                                               'were specified, so 0 hosts scanned.\n')
    assert not result.success
    assert result.message == 'no host was scanned: Failed to resolve "nosuch.lan".'


TIMED_OUT_HOST = """<host starttime="1" endtime="2" timedout="true"><status state="up" reason="user-set"/>
<address addr="127.0.0.1" addrtype="ipv4"/><hostnames></hostnames></host>"""


def test_timed_out_host(engine, tmp_path):
    write_report(tmp_path, TIMED_OUT_HOST + '<runstats><finished exit="success"/>'
                                           '<hosts up="1" down="0" total="1"/></runstats>')
    [finding] = engine.parse(spec(tmp_path))
    assert (finding.rule_id, finding.title, finding.ip) == ("nmap.host-timeout",
                                                            "Host timed out: 127.0.0.1", "127.0.0.1")
    result = engine.outcome(spec(tmp_path), 0, "")
    assert not result.success and "hostTimeout" in result.message


def test_some_hosts_timed_out_is_still_success(engine, tmp_path):
    other = TIMED_OUT_HOST.replace(' timedout="true"', "").replace("127.0.0.1", "127.0.0.2")
    write_report(tmp_path, TIMED_OUT_HOST + other + '<runstats><finished exit="success"/>'
                                                   '<hosts up="2" down="0" total="2"/></runstats>')
    assert engine.outcome(spec(tmp_path), 0, "").success


def test_outcome_message_is_short(engine, tmp_path):
    result = engine.outcome(spec(tmp_path), 1, "x" * 5000 + "\nQUITTING!")
    assert len(result.message) <= 300


def test_engine_metadata(engine):
    assert (engine.name, engine.title, engine.binary) == ("nmap", "Nmap", "nmap")
    assert engine.target_types == {"host", "ip", "domain", "network"}
    assert engine.default_timeout == 3600
    schema = engine.option_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"ports", "topPorts", "timing", "serviceDetection",
                                         "osDetection", "scripts", "technique", "hostTimeout"}
    assert schema["properties"]["timing"]["default"] == "T4"


def test_hostname_is_scanned_at_its_vetted_address(engine, tmp_path):
    vetted = spec(tmp_path, {}, "app.lab.test", "host")
    vetted.addresses = ("2001:db8::5", "192.0.2.5")
    argv = engine.build_argv(vetted)
    assert argv[-2:] == ["--", "192.0.2.5"] and "-6" not in argv  # IPv4 first, as nmap itself prefers
    vetted.addresses = ("2001:db8::5",)
    argv = engine.build_argv(vetted)
    assert argv[-2:] == ["--", "2001:db8::5"] and "-6" in argv
    unresolved = spec(tmp_path, {}, "app.lab.test", "host")
    assert engine.build_argv(unresolved)[-1] == "app.lab.test"


def test_findings_keep_the_hostname_when_nmap_got_an_address(engine, tmp_path):
    (tmp_path / "nmap.xml").write_text(
        '<?xml version="1.0"?><nmaprun><host><status state="up" reason="user-set"/>'
        '<address addr="127.0.0.1" addrtype="ipv4"/><hostnames/><ports>'
        '<port protocol="tcp" portid="8000"><state state="open" reason="syn-ack"/></port>'
        '</ports></host><runstats><finished exit="success"/><hosts up="1" down="0" total="1"/></runstats>'
        '</nmaprun>')
    by_address = spec(tmp_path)
    assert [(f.host, f.ip) for f in engine.parse(by_address)] == [("127.0.0.1", "127.0.0.1")]
    by_name = spec(tmp_path, {}, "app.lab.test", "host")
    by_name.addresses = ("127.0.0.1",)
    assert [(f.host, f.ip) for f in engine.parse(by_name)] == [("app.lab.test", "127.0.0.1")]

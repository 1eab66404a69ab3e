"""theHarvester and Sublist3r for real, inside a network namespace that has only a loopback interface.

How the isolation works: each test starts ``unshare -rn python -m tests.engines.netns_osint`` — a new
user and network namespace for that whole process tree. Inside it the helper brings ``lo`` up, serves
the test zone ``lab.test`` on 127.0.0.1:53 (``tests/engines/lab_dns.py``), imports the wordlist and runs
the engine exactly as a worker does, scanner processes and the appliance's own brute force alike. The
helper refuses to run if it sees any interface but ``lo``. The host's resolver address from
/etc/resolv.conf has no route there, so the tools' passive sources fail at once: no packet leaves the
machine.
"""
from __future__ import annotations

import pytest

from tests.engines.bundles import LAB_WORDS
from tests.engines.live import require, run_in_netns, unshare_works

pytestmark = [pytest.mark.data_engines,
              pytest.mark.skipif(not unshare_works(), reason="unshare -rn is not permitted here")]
ZONE_NAMES = {f"{n}.lab.test" for n in ("www", "mail", "admin", "dev", "api", "vpn")}  # ns1 is not in the words


@pytest.mark.parametrize("engine, binary", [("harvester", "harvester_windows"), ("sublist3r", "sublist3r")])
def test_brute_force_finds_the_zone(tmp_path, engine, binary):
    out = run_in_netns({"engine": engine, "executable": require(binary), "workdir": str(tmp_path),
                        "options": {"bruteforce": True}, "words": list(LAB_WORDS)})
    assert out["outcome"]["success"], out
    found = {f["host"]: f for f in out["findings"]}
    assert set(found) == ZONE_NAMES, out  # NXDOMAIN words (blog, shop, ...) are not reported
    assert found["mail.lab.test"]["ip"] == "127.0.0.2"
    assert all(f["rule_id"] == f"{engine}.subdomain" and f["severity"] == "info" for f in out["findings"])
    assert out["dns_queries"] >= len(LAB_WORDS) and out["groups_alive"] == []


@pytest.mark.parametrize("engine, binary", [("harvester", "harvester_windows"), ("sublist3r", "sublist3r")])
def test_passive_sources_offline_find_nothing_and_succeed(tmp_path, engine, binary):
    out = run_in_netns({"engine": engine, "executable": require(binary), "workdir": str(tmp_path),
                        "options": {}, "words": list(LAB_WORDS)})
    assert out["outcome"]["success"], out
    assert out["findings"] == [] and out["groups_alive"] == []


@pytest.mark.parametrize("engine, binary, options", [
    ("harvester", "harvester_windows", {"bruteforce": True, "passive": False}),
    ("sublist3r", "sublist3r", {"bruteforce": True, "passive": False}),
])
def test_cancel_stops_a_long_brute_force(tmp_path, engine, binary, options):
    out = run_in_netns({"engine": engine, "executable": require(binary), "workdir": str(tmp_path),
                        "options": options, "generate_words": 20000, "stop_after": 2, "dns_delay": 0.02})
    assert out["result"]["stopped"], out
    assert out["elapsed"] < 10, out  # stopped within a few seconds of the cancel
    assert out["groups_alive"] == []

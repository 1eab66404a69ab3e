"""Issue 10, targets: IPv6 forms of IPv4 addresses pass no check the IPv4 address would fail (item 7)."""
from __future__ import annotations

import ipaddress

import pytest

from appliance.targets import Policy, parse_policy_entry, parse_target
from tests.conftest import run_cli_async, serve_in_process

DENY = ["0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "fe80::/10", "ff00::/8"]


@pytest.mark.parametrize("target", [
    "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::169.254.169.254", "64:ff9b::a9fe:a9fe",
    "::ffff:169.254.0.0/112", "http://[::ffff:169.254.169.254]/latest/meta-data/",
])
def test_embedded_ipv4_is_checked_as_ipv4(target):
    # as reported: an allowlist covering ::ffff:0:0/96 (here ::/0) let the metadata address through
    policy = Policy.build(["::/0"], DENY)
    problem = policy.check(parse_target(target, None))
    assert problem is not None and "denylist" in problem and "169.254." in problem


def test_resolved_addresses_and_policy_entries_are_normalised_too():
    policy = Policy.build(["::/0", "127.0.0.0/8"], DENY)
    mapped = ipaddress.ip_address("::ffff:169.254.169.254")
    assert "denylist" in (policy.check_addresses([mapped], name_allowed=True) or "")
    # an IPv6-written deny entry denies the IPv4 host it reaches, and an allow entry allows it
    assert parse_policy_entry("::ffff:10.0.0.0/104").text == "10.0.0.0/8"
    assert "denylist" in (Policy.build(["10.0.0.0/8"], ["::ffff:10.1.0.0/112"]).check(
        parse_target("10.1.0.5", None)) or "")
    assert Policy.build(["64:ff9b::10.0.0.0/104"], []).check(parse_target("10.2.3.4", None)) is None
    # a deny entry that covers a whole embedding prefix denies all of IPv4
    assert "denylist" in (Policy.build(["10.0.0.0/8"], ["::/0"]).check(parse_target("10.2.3.4", None)) or "")
    # ::/0 allows IPv6, not the IPv4 internet behind the mapped prefix
    assert "allowlist" in (Policy.build(["::/0"], []).check(parse_target("::ffff:192.0.2.1", None)) or "")
    assert Policy.build(["::/0"], []).check(parse_target("2001:db8::1", None)) is None
    assert policy.check(parse_target("::ffff:127.0.0.1", None)) is None


@pytest.mark.anyio
async def test_api_refuses_a_mapped_metadata_address(data_dir, admin_key):
    await run_cli_async("targets", "allow", "--force", "--tenant", "default", "::/0", "--data-dir", str(data_dir))
    async with serve_in_process(data_dir) as c:
        for target in ("::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"):
            response = await c.post("/api/v1/scans", json={"scanType": "nmap", "target": target},
                                    headers={"X-API-Key": admin_key})
            assert response.status_code == 403 and response.json()["code"] == "TARGET_NOT_ALLOWED", response.text

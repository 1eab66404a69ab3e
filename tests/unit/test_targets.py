import ipaddress

import pytest

from appliance.targets import Policy, TargetError, parse_policy_entry, parse_target


@pytest.mark.parametrize("text, kind, value", [
    ("127.0.0.1", "ip", "127.0.0.1"),
    ("::1", "ip", "::1"),
    ("127.0.0.0/30", "network", "127.0.0.0/30"),
    ("127.0.0.5/24", "network", "127.0.0.0/24"),
    ("Scanme.Lab.Test.", "host", "scanme.lab.test"),
    ("https://app.lab.test:8443/x?y=1", "url", "https://app.lab.test:8443/x?y=1"),
])
def test_parse_and_infer(text, kind, value):
    target = parse_target(text, None)
    assert (target.type, target.value) == (kind, value)


@pytest.mark.parametrize("text, kind", [
    ("-oX", None), ("a b", None), ("host\nother", None), ("192.0.2.0/8", None), ("a;b", "domain"),
    ("http://u:p@h/", "url"), ("ftp://h/", "url"), ("192.0.2.256", "ip"), ("", None), ("x" * 300, "domain"),
    ("1.2.3", "domain"), ("127.0.0.1", "domain"),
])
def test_bad_targets(text, kind):
    with pytest.raises(TargetError):
        parse_target(text, kind)


def test_policy_allow_deny_and_suffixes():
    policy = Policy.build(["127.0.0.0/8", "lab.test"], ["127.0.0.9", "secret.lab.test"])
    assert policy.check(parse_target("127.0.0.1", None)) is None
    assert "denylist" in policy.check(parse_target("127.0.0.9", None))
    assert "allowlist" in policy.check(parse_target("192.0.2.1", None))
    assert policy.check(parse_target("www.lab.test", None), resolve=False) is None
    assert "denylist" in policy.check(parse_target("a.secret.lab.test", None), resolve=False)
    assert "allowlist" in policy.check(parse_target("evil-lab.test", None), resolve=False)
    assert "denylist" in policy.check(parse_target("127.0.0.8/29", None))  # overlaps a denied address
    # a name that resolves into a denied address is refused even when the name is allowed
    assert "denylist" in policy.check_addresses([ipaddress.ip_address("127.0.0.9")], name_allowed=True)


def test_empty_allowlist_allows_nothing():
    policy = Policy.build([], [])
    assert policy.check(parse_target("127.0.0.1", None)) is not None
    assert policy.check(parse_target("localhost", None)) is not None


def test_localhost_resolves_against_cidrs():
    assert Policy.build(["127.0.0.0/8", "::1"], []).check(parse_target("localhost", None)) is None


def test_policy_entries():
    assert parse_policy_entry("*.Example.com").suffix == "example.com"
    assert str(parse_policy_entry("192.0.2.3/8").network) == "192.0.0.0/8"
    assert parse_policy_entry("path:/srv/builds/").path == "/srv/builds"
    assert parse_policy_entry("registry:Registry.Example.com:5000").registry == "registry.example.com:5000"
    for bad in ("path:etc", "path:/srv/../etc", "path:/srv//x", "registry:http://x", "files:/srv", "a b"):
        with pytest.raises(ValueError):
            parse_policy_entry(bad)

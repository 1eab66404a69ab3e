"""SSRF: webhook and callback URLs must pass the egress policy at creation and again, after DNS, at
every delivery attempt; the delivery connects to the address it vetted, with the name as SNI/Host."""
from __future__ import annotations

import ipaddress

import pytest

from appliance.webhooks.egress import EgressError, EgressPolicy
from tests.events.common import events_app, new_scan, run_to, scan_body, services
from tests.events.receiver import NAME, Receiver
from tests.helpers import await_for

pytestmark = pytest.mark.anyio
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def receiver(tmp_path):
    with Receiver(tmp_path / "rx") as r:
        yield r


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/h", "https://[::1]/h", "https://169.254.169.254/latest/meta-data/", "https://10.0.0.5/h",
    "https://192.168.1.1/h", "https://172.16.0.1/h", "https://100.100.100.200/h", "https://[fd00:ec2::254]/h",
    "https://[::ffff:127.0.0.1]/h", "https://0.0.0.0/h", "https://224.0.0.1/h", "https://localhost/h",
])
def test_internal_addresses_are_refused_by_default(url):
    with pytest.raises(EgressError):
        EgressPolicy().vet(url)


@pytest.mark.parametrize("url, problem", [
    ("http://203.0.113.9/h", "https"), ("https://user:pw@203.0.113.9/h", "credentials"), ("ftp://x/h", "https"),
    ("https:///h", "host"), ("https://a b/h", "spaces"), ("https://x:99999/h", "port"),
])
def test_malformed_urls_are_refused(url, problem):
    with pytest.raises(EgressError, match=problem):
        EgressPolicy(resolver=lambda host, port: [ipaddress.ip_address("8.8.8.8")]).vet(url)


def test_allowed_and_denied_networks():
    policy = EgressPolicy(allowed=["127.0.0.0/8", "10.0.0.0/8"], denied=["10.9.0.0/16", "8.8.8.0/24"])
    assert policy.vet("https://127.0.0.1:8443/h").address == LOOPBACK
    assert policy.vet("https://10.1.2.3/h").connect_url == "https://10.1.2.3:443/h"
    for url in ("https://10.9.1.1/h", "https://8.8.8.8/h", "https://[::1]/h", "https://169.254.169.254/"):
        with pytest.raises(EgressError):
            policy.vet(url)
    assert EgressPolicy().check_address(ipaddress.ip_address("8.8.4.4")) is None


def test_every_address_a_name_resolves_to_must_pass():
    mixed = EgressPolicy(resolver=lambda host, port: [ipaddress.ip_address("8.8.8.8"), LOOPBACK])
    with pytest.raises(EgressError, match=r"resolves to 127\.0\.0\.1"):
        mixed.vet("https://hooks.example/h")
    with pytest.raises(EgressError, match="does not resolve"):
        EgressPolicy(resolver=lambda host, port: []).vet("https://nowhere.example/h")
    dest = EgressPolicy(resolver=lambda host, port: [ipaddress.ip_address("8.8.8.8")]).vet(
        "https://hooks.example:8443/a?b=1")
    assert (dest.connect_url, dest.host_header, dest.is_name) == ("https://8.8.8.8:8443/a?b=1", "hooks.example:8443",
                                                                  True)


async def test_creation_refuses_ssrf_targets_naming_url(data_dir, admin_key, receiver, own_port):
    async with events_app(data_dir, admin_key, receiver, webhooks__allowed_networks=[]) as client:
        for url in (receiver.url(), "https://169.254.169.254/latest/meta-data/", f"https://localhost:{receiver.port}/h",
                    "http://203.0.113.10/h"):
            response = await client.post("/api/v1/webhooks", json={"name": "x", "url": url})
            assert response.status_code == 400, url
            assert response.json()["code"] == "VALIDATION_ERROR"
            assert response.json()["details"][0]["field"] == "url", url
        scan = await client.post("/api/v1/scans", json=scan_body(own_port, callbackUrl=receiver.url("/cb")))
        assert scan.status_code == 400 and scan.json()["details"][0]["field"] == "callbackUrl"
        assert (await client.get("/api/v1/webhooks")).json()["pagination"]["total"] == 0
        assert (await client.get("/api/v1/scans")).json()["pagination"]["total"] == 0
        # PATCH is checked the same way.
        services(client).events.egress.allowed = (ipaddress.ip_network("127.0.0.0/8"),)
        hook = (await client.post("/api/v1/webhooks", json={"name": "x", "url": receiver.url()})).json()["data"]
        moved = await client.patch(f"/api/v1/webhooks/{hook['id']}", json={"url": "https://169.254.169.254/x"})
        assert moved.status_code == 400 and moved.json()["details"][0]["field"] == "url"


async def test_dns_is_checked_again_at_delivery_and_the_vetted_address_is_used(data_dir, admin_key, receiver):
    answers = {NAME: [LOOPBACK]}
    async with events_app(data_dir, admin_key, receiver) as client:
        services(client).events.egress.resolver = lambda host, port: answers.get(host, [])
        url = receiver.url(host=NAME)
        hook = (await client.post("/api/v1/webhooks", json={"name": "n", "url": url})).json()["data"]
        assert hook["url"] == url
        # The name now points at the metadata service: the attempt is refused, nothing is sent.
        answers[NAME] = [ipaddress.ip_address("169.254.169.254")]
        refused = (await client.post(f"/api/v1/webhooks/{hook['id']}/test")).json()["data"]
        assert refused["status"] == "failed" and "egress policy" in refused["error"]
        assert receiver.received == []
        answers[NAME] = [LOOPBACK]
        await run_to(client, await new_scan(client))
        await await_for(lambda: receiver.received, 10, 0.05, "delivery by name")
    item = receiver.received[0]
    assert item.sni == NAME  # TLS verified for the name, connected to the vetted address
    assert item.headers["Host"] == f"{NAME}:{receiver.port}"


async def test_an_untrusted_certificate_fails_the_delivery(data_dir, admin_key, receiver):
    async with events_app(data_dir, admin_key, None) as client:  # no webhooks.ca_file: the test CA is unknown
        hook = (await client.post("/api/v1/webhooks", json={"name": "x", "url": receiver.url()})).json()["data"]
        result = (await client.post(f"/api/v1/webhooks/{hook['id']}/test")).json()["data"]
    assert result["status"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in result["error"]
    assert receiver.received == []

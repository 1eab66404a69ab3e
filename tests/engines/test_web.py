"""The URL-target helper the web engines share: where they connect, what they call the host."""
from __future__ import annotations

from pathlib import Path

import pytest

from engines.base import ScanSpec
from engines.web import UnvettedTarget, html_text, web_target


def spec(target: str, addresses: tuple[str, ...] = ()) -> ScanSpec:
    return ScanSpec("s", target, "url", {}, 60, Path("/tmp"), "/bin/true", addresses)


def test_literal_ip_url_is_used_as_is():
    t = web_target(spec("http://127.0.0.1:8080/app/?x=1#frag"))
    assert (t.host, t.port, t.address, t.vhost, t.ip) == ("127.0.0.1", 8080, None, None, "127.0.0.1")
    assert t.connect_url == "http://127.0.0.1:8080/app/?x=1"
    assert t.url == "http://127.0.0.1:8080/app/?x=1"


def test_a_name_is_scanned_at_its_vetted_address_and_kept_as_host():
    t = web_target(spec("https://Shop.Example.test/login?next=/", ("2001:db8::5", "192.0.2.7")))
    assert t.address == "192.0.2.7"  # IPv4 first
    assert t.connect_url == "https://192.0.2.7/login?next=/"
    assert "shop.example.test" not in t.connect_url
    assert (t.vhost, t.host_header, t.port, t.ip) == ("shop.example.test", "shop.example.test", 443, "192.0.2.7")
    assert t.origin == "https://shop.example.test"


def test_ipv6_only_name_and_explicit_port():
    t = web_target(spec("http://v6.example.test:8443/", ("2001:db8::5",)))
    assert t.connect_url == "http://[2001:db8::5]:8443/"
    assert t.host_header == "v6.example.test:8443"


def test_a_name_without_vetted_addresses_is_not_scanned():
    with pytest.raises(UnvettedTarget, match="did not resolve to a vetted address"):
        web_target(spec("http://shop.example.test/"))


def test_non_http_urls_are_refused():
    with pytest.raises(UnvettedTarget):
        web_target(spec("ftp://127.0.0.1/"))


def test_scanner_urls_are_mapped_back_to_the_name():
    t = web_target(spec("http://shop.example.test:8080/", ("192.0.2.7",)))
    assert t.public_url("http://192.0.2.7:8080/item?id=1") == "http://shop.example.test:8080/item?id=1"
    assert t.public_url("/item") == "http://shop.example.test:8080/item"
    # Another host or port is left alone: it is not the target.
    assert t.public_url("http://192.0.2.7:9090/x") == "http://192.0.2.7:9090/x"
    assert t.public_url("http://other.test:8080/x") == "http://other.test:8080/x"
    assert t.path_url("/item?id=1") == "http://shop.example.test:8080/item"


def test_html_text():
    assert html_text("<p>One &amp; two</p><p>three</p>") == "One & two\nthree"
    assert html_text(None) == ""

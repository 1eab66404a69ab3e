"""What the web-application engines (nikto, sqlmap, wapiti, zap) share: the URL target and the vetted
address it is scanned at, and small report helpers.

The appliance vets a URL by its host. When the host is a name, the worker resolves it, checks every
address against the tenant's policy and hands the engine those addresses (``spec.addresses``); the
scanner must connect to one of them and never look the name up again, or a DNS change between the
check and the scan could point it somewhere else. So the scanner is given the URL with its host
replaced by the vetted address, and the name travels in the ``Host`` header (and is put back into
the URLs of the findings). A literal-IP URL is used as it is.
"""
from __future__ import annotations

import html
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from engines.base import Outcome, RunResult, ScanSpec

MESSAGE_MAX = 300
EVIDENCE_MAX = 4000
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TAG_RE = re.compile(r"<[^>]+>")


class UnvettedTarget(ValueError):
    """A URL whose host is a name that the worker could not resolve to a vetted address."""


@dataclass(frozen=True)
class WebTarget:
    """A ``url`` target split into what the client named and where the scanner connects."""

    url: str  # the client's URL, fragment dropped
    scheme: str
    host: str  # the URL's host: a lower-case name, or an IP literal (no brackets)
    port: int
    explicit_port: bool
    address: str | None  # the vetted address to connect to when ``host`` is a name, else None
    path: str  # path + query, at least "/"

    @property
    def ip(self) -> str | None:
        """The address scanned: the vetted one, or the URL's literal IP."""
        return self.address if self.address is not None else (self.host if _is_ip(self.host) else None)

    @property
    def vhost(self) -> str | None:
        """The name to send as ``Host`` when the scanner connects to an address, else None."""
        return self.host if self.address is not None else None

    @property
    def host_header(self) -> str:
        return self.host + (f":{self.port}" if self.explicit_port else "")

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` as the client wrote it: the base of the findings' URLs."""
        return f"{self.scheme}://{_netloc(self.host, self.port if self.explicit_port else None)}"

    @property
    def connect_origin(self) -> str:
        host = self.address if self.address is not None else self.host
        return f"{self.scheme}://{_netloc(host, self.port if self.explicit_port else None)}"

    @property
    def connect_url(self) -> str:
        """The URL handed to the scanner: the client's, at the vetted address."""
        return self.connect_origin + self.path

    def public_url(self, url: str | None) -> str | None:
        """A URL the scanner reported, with the vetted address put back to the client's name."""
        if not url:
            return url
        if url.startswith("/"):
            return self.origin + url
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return url
        scanned = self.address if self.address is not None else self.host
        if (parts.hostname or "").lower() == scanned and (port or _DEFAULT_PORTS.get(parts.scheme)) == self.port:
            return urlunsplit((parts.scheme, self.origin.split("://", 1)[1], parts.path or "/", parts.query, ""))
        return url

    def path_url(self, path: str | None) -> str:
        """The finding URL of a path on the target (query dropped: it varies between scans)."""
        return self.origin + (path or "/").split("?", 1)[0]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def web_target(spec: ScanSpec) -> WebTarget:
    """The target of a web scan; raises :class:`UnvettedTarget` for a name without vetted addresses
    (the scanner would have to resolve it itself)."""
    parts = urlsplit(spec.target)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnvettedTarget("the target must be an http:// or https:// URL")
    host = (parts.hostname or "").lower()
    port = parts.port
    address = None
    if not _is_ip(host):
        if not spec.addresses:
            raise UnvettedTarget(f"{host} did not resolve to a vetted address; not scanned")
        # IPv4 first: like the nmap adapter, and what most scanners handle best.
        address = next((a for a in spec.addresses if ":" not in a), spec.addresses[0])
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return WebTarget(urlunsplit((scheme, parts.netloc, parts.path, parts.query, "")), scheme, host,
                     port or _DEFAULT_PORTS[scheme], port is not None, address, path)


def refused(message: str) -> RunResult:
    """The run result of a scan the adapter declined to start; ``outcome()`` reports ``message``."""
    return RunResult(None, False, False, message, 0.0)


def failed(message: str) -> Outcome:
    return Outcome(False, "ENGINE_ERROR", message[:MESSAGE_MAX])


def read_tail(path: Path, size: int = 65536) -> str:
    """The last ``size`` bytes of a log the runner wrote, as text ("" when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:MESSAGE_MAX]


def html_text(text: str | None) -> str:
    """Plain text of a scanner's HTML snippet (ZAP's descriptions): tags dropped, entities kept
    readable, paragraphs as lines."""
    if not text:
        return ""
    text = re.sub(r"</p>\s*<p>|<br\s*/?>|</li>\s*<li>", "\n", text)
    return html.unescape(_TAG_RE.sub("", text)).strip()


def clip(text: str | None, limit: int = EVIDENCE_MAX) -> str | None:
    if not text:
        return None
    return text if len(text) <= limit else text[:limit] + "…"

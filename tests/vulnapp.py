"""A deliberately vulnerable web application for the live web-engine tests (stdlib only).

It listens on 127.0.0.1 only. What the scanners must find:

* ``GET /item?id=1`` — SQL injection in a query parameter (the id is pasted into an SQLite query; SQL
  errors come back verbatim with status 500, as a careless app would show them);
* ``POST /lookup`` (form field ``name``, linked from ``/``) — SQL injection in a form body;
  A ``sleep(`` in the id stalls the answer for seconds, as a MySQL back end would (time-based blind
  injection): it keeps time-based attacks slow enough to cancel a scan in the middle of them;
* ``GET /search?q=`` — reflected XSS (``q`` is echoed unescaped);
* no security headers at all (no X-Frame-Options, CSP, X-Content-Type-Options), and an old-looking
  ``Server: Apache/2.2.8 (Ubuntu)`` banner.

``python tests/vulnapp.py [--port N]`` runs it by hand (for benchmarks); tests use :func:`vuln_app`.
"""
from __future__ import annotations

import argparse
import contextlib
import html
import http.server
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

BANNER = "Apache/2.2.8 (Ubuntu)"
SLEEP_SECONDS = 6
_ROWS = [(1, "lamp", 12.5), (2, "chair", 40.0), (3, "desk", 120.0)]

INDEX = """<!doctype html>
<html><head><title>Vuln shop</title></head><body>
<h1>Vuln shop</h1>
<ul>
<li><a href="/item?id=1">lamp</a></li>
<li><a href="/item?id=2">chair</a></li>
<li><a href="/search?q=desk">search for a desk</a></li>
</ul>
<form action="/lookup" method="post">
<input type="text" name="name" value="lamp"><input type="submit" value="Look up">
</form>
</body></html>
"""


def _db() -> sqlite3.Connection:
    """A fresh in-memory database per request: nothing an attack does survives it."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?)", _ROWS)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT, password TEXT)")
    conn.execute("INSERT INTO users VALUES (1, 'admin', 'hunter2')")
    return conn


class VulnHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection. Nikto 2.1.5 stalls on keep-alive connections a
    # handler leaves open after odd requests, and runs into -maxtime.
    protocol_version = "HTTP/1.0"

    def version_string(self) -> str:
        return BANNER

    def log_message(self, format: str, *args: object) -> None:
        pass

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            self.server.hosts_seen.add(self.headers.get("Host", ""))  # type: ignore[attr-defined]
        return ok

    def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _query(self, sql: str) -> None:
        conn = _db()
        try:
            rows = conn.execute(sql).fetchall()
        except sqlite3.Error as exc:  # the vulnerability's tell: the raw SQL error
            self._send(500, f"<html><body><h1>Internal Server Error</h1><pre>sqlite3.OperationalError: "
                            f"{html.escape(str(exc))}\nquery: {html.escape(sql)}</pre></body></html>")
            return
        finally:
            conn.close()
        items = "".join(f"<li>{html.escape(str(r[1]))}: {html.escape(str(r[2]))}</li>" for r in rows)
        self._send(200, f"<html><body><ul>{items}</ul></body></html>")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/":
            self._send(200, INDEX)
        elif parts.path == "/item":
            if "sleep(" in query.get("id", [""])[0].lower():
                time.sleep(SLEEP_SECONDS)  # as a MySQL back end would: time-based blind injection
            self._query(f"SELECT id, name, price FROM items WHERE id = {query.get('id', ['1'])[0]}")
        elif parts.path == "/search":
            q = query.get("q", [""])[0]
            self._send(200, f"<html><body><p>Results for {q}</p></body></html>")  # reflected, unescaped
        elif parts.path == "/robots.txt":
            self._send(200, "User-agent: *\nDisallow:\n", "text/plain")
        else:
            self._send(404, "<html><body>Not found</body></html>")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        if urlsplit(self.path).path == "/lookup":
            name = form.get("name", [""])[0]
            self._query(f"SELECT id, name, price FROM items WHERE name = '{name}'")
        else:
            self._send(404, "<html><body>Not found</body></html>")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[VulnHandler]) -> None:
        super().__init__(address, handler)
        self.hosts_seen: set[str] = set()  # every Host header received: the vhost tests check it

    def handle_error(self, request: object, client_address: object) -> None:
        """Silent: scanners drop connections mid-request on purpose."""


@dataclass
class VulnApp:
    port: int
    hosts_seen: set[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@contextlib.contextmanager
def vuln_app(port: int = 0) -> Iterator[VulnApp]:
    """Serve the app on 127.0.0.1 in a thread."""
    server = _Server(("127.0.0.1", port), VulnHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield VulnApp(server.server_address[1], server.hosts_seen)
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    with _Server(("127.0.0.1", args.port), VulnHandler) as httpd:
        print(f"vulnapp on http://127.0.0.1:{httpd.server_address[1]}/", flush=True)
        httpd.serve_forever()

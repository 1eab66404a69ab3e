"""A stand-in for ``zap.sh`` in the ZAP adapter's tests: it parses ZAP's daemon arguments, serves the
few API calls the adapter makes on 127.0.0.1 (checking the API key on every one), logs each call as
a JSON line, and answers ``/OTHER/core/other/jsonreport/`` with a real recorded ZAP report.

The tests write a small executable that calls :func:`main` with a config (``mode``, ``report``,
``log``) and hand it to the adapter as its executable. Modes:

* ``ok``: scans progress 50 % per status call; the target answered (3 messages).
* ``unreachable``: the spider finds nothing: no message for the target.
* ``slow``: spider and active scan stay at 10 % until stopped (for cancel and deadline tests).
* ``crash``: exits with status 3 before the API comes up.

Like the real ZAP (a JVM behind a shell script), it leaves a child process running, so the tests
can check that the adapter ends the whole process group.
"""
from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

VERSION = "2.16.1"


class _State:
    def __init__(self, config: dict[str, Any], key: str) -> None:
        self.config = config
        self.key = key
        self.mode = config.get("mode", "ok")
        self.polls: dict[str, int] = {}
        self.stopped: set[str] = set()
        self.lock = threading.Lock()

    def log(self, entry: dict[str, Any]) -> None:
        with self.lock, open(self.config["log"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def status(self, component: str) -> int:
        if component in self.stopped:
            return 100
        if self.mode == "slow":
            return 10
        self.polls[component] = self.polls.get(component, 0) + 1
        return min(100, 50 * self.polls[component])


def _handler(state: _State, server_box: list[http.server.HTTPServer]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            key_ok = self.headers.get("X-ZAP-API-Key") == state.key
            state.log({"path": parts.path, "params": params, "key_ok": key_ok,
                       "key_in_query": "apikey" in params})
            if not key_ok:
                self._json(403, {"code": "bad_api_key", "message": "Missing or invalid API key"})
                return
            call = parts.path.strip("/").split("/")
            if call[0] == "OTHER" and call[-1] == "jsonreport":
                data = Path(state.config["report"]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            component, name = call[1], call[3]
            if name == "version":
                self._json(200, {"version": VERSION})
            elif component in ("spider", "ascan") and name == "scan":
                self._json(200, {"scan": "7"})
            elif component in ("spider", "ascan") and name == "status":
                self._json(200, {"status": str(state.status(component))})
            elif component in ("spider", "ascan") and name == "stop":
                state.stopped.add(component)
                self._json(200, {"Result": "OK"})
            elif name == "recordsToScan":
                self._json(200, {"recordsToScan": "0"})
            elif name == "numberOfMessages":
                self._json(200, {"numberOfMessages": "0" if state.mode == "unreachable" else "3"})
            elif name == "shutdown":
                self._json(200, {"Result": "OK"})
                threading.Thread(target=server_box[0].shutdown, daemon=True).start()
            else:  # accessUrl, setOptionMaxDepth, addRule, importUrl
                self._json(200, {"Result": "OK"})

    return Handler


def main(argv: list[str], config: dict[str, Any]) -> int:
    if argv == ["-version"]:
        print(VERSION)
        return 0
    flags = [a for a in argv if a in ("-daemon", "-silent")]
    rest = [a for a in argv if a not in flags]
    args = {rest[i]: rest[i + 1] for i in range(0, len(rest) - 1, 2)}
    configs = [rest[i + 1] for i in range(len(rest) - 1) if rest[i] == "-config"]
    key = next(c.split("=", 1)[1] for c in configs if c.startswith("api.key="))
    state = _State(config, key)
    state.log({"argv": argv})
    if state.mode == "crash":
        return 3
    Path(args["-dir"]).mkdir(parents=True, exist_ok=True)
    # What the JVM under zap.sh would be: a process of the same group that outlives nothing.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    state.log({"child": child.pid})
    time.sleep(float(config.get("startup_delay", 0.3)))
    box: list[http.server.HTTPServer] = []
    server = http.server.ThreadingHTTPServer((args["-host"], int(args["-port"])), _handler(state, box))
    box.append(server)
    server.serve_forever()
    child.kill()
    child.wait()
    state.log({"exit": 0})
    return 0


def write_executable(path: Path, config: dict[str, Any]) -> Path:
    """An executable ``zap.sh`` at ``path`` running this fake with ``config``."""
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                    f"import fake_zap\nsys.exit(fake_zap.main(sys.argv[1:], {config!r}))\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def calls(log: Path) -> list[dict[str, Any]]:
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]

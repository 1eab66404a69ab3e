"""Runs one OSINT engine inside the network namespace this process was started in (``unshare -rn``):
loopback up, the lab DNS server on 127.0.0.1:53, the wordlist imported, the engine run exactly as a
worker runs it (:func:`tests.engines.harness.run_engine`). Prints one JSON object with what happened.

Usage: ``unshare -rn python -m tests.engines.netns_osint '<json>'`` with keys engine, executable,
workdir, options, words (or generate_words: a count), stop_after (seconds, optional), dns_delay
(seconds per query, optional).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from appliance.engine_data import import_bundle
from appliance.scanning.runner import group_alive
from engines.harvester import HarvesterEngine
from engines.osint import OsintEngine
from engines.sublist3r import Sublist3rEngine
from tests.engines.harness import run_engine
from tests.engines.lab_dns import LabDns, loopback_up, only_loopback

ENGINES: dict[str, type[OsintEngine]] = {"harvester": HarvesterEngine, "sublist3r": Sublist3rEngine}


def main(args: dict) -> dict:
    if not only_loopback():
        return {"error": "not in a loopback-only network namespace; refusing to run"}
    loopback_up()
    work = Path(args["workdir"])
    data_root = work / "engine-data"
    words = work / "words.txt"
    wanted = args.get("words") or [f"w{i}" for i in range(args["generate_words"])]
    words.write_text("\n".join(wanted) + "\n")
    import_bundle(data_root, "wordlist", words)
    engine = ENGINES[args["engine"]](args["executable"], data_root / args["engine"])
    engine.configure({"engines.resolver": "127.0.0.1"})
    delay = args.get("dns_delay")
    started = time.monotonic()
    stop_after = args.get("stop_after")
    with LabDns(delay=(lambda: time.sleep(delay)) if delay else None) as dns_server:
        run = run_engine(engine, work / "scan", "lab.test", "domain", args.get("options") or {},
                         timeout=args.get("timeout", 240),
                         stop=(lambda: time.monotonic() - started > stop_after) if stop_after else (lambda: False))
        queries = dns_server.queries
    return {
        "findings": [{"rule_id": f.rule_id, "host": f.host, "ip": f.ip, "evidence": f.evidence,
                      "severity": f.severity} for f in run.findings],
        "outcome": {"success": run.outcome.success, "code": run.outcome.error_code, "message": run.outcome.message},
        "result": {"stopped": run.result.stopped, "timed_out": run.result.timed_out,
                   "duration": run.result.duration, "stderr": run.result.stderr_tail[-2000:]},
        "elapsed": time.monotonic() - started, "dns_queries": queries,
        "groups_alive": [pid for pid in run.pids if group_alive(pid)],
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))

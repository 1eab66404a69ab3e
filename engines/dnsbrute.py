"""The appliance's own DNS brute force: ``<word>.<domain>`` for each word of the imported wordlist,
asked of one resolver (``engines.resolver``) with dnspython.

Sublist3r's brute force cannot be used offline (it has no resolver option, falls back to public
resolvers, and hung after its last query in every test), so the OSINT engines call this instead. It
runs in the worker's thread with a small pool of resolver threads and polls the stop flag between
answers: a cancel ends it within one query lifetime (:data:`QUERY_LIFETIME`).

A wildcard zone would make every word "exist": a random label is asked first, and names that answer
with exactly the wildcard's addresses are not reported.
"""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dns.resolver

QUERY_LIFETIME = 2.0
WORKERS = 16
RESULTS = "dnsbrute.jsonl"


@dataclass
class BruteResult:
    queried: int = 0
    found: int = 0
    errors: int = 0  # timeouts and refusals: the resolver did not answer
    stopped: bool = False
    timed_out: bool = False
    wildcard: tuple[str, ...] = ()


def make_resolver(server: str, port: int = 53) -> dns.resolver.Resolver:
    # dnspython is imported by the scans that query, not with the engines at every start, where it was
    # the largest single import (its resolver brings the async, DoH and DoQ machinery along).
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)  # never /etc/resolv.conf: only the configured server
    resolver.nameservers = [server]
    resolver.port = port
    resolver.lifetime = QUERY_LIFETIME
    resolver.timeout = QUERY_LIFETIME
    resolver.cache = None
    return resolver


def lookup(resolver: dns.resolver.Resolver, name: str) -> tuple[list[str] | None, bool]:
    """(addresses, answered): None addresses when the name does not exist; answered is False when the
    resolver gave no usable answer (timeout, refusal, server failure)."""
    import dns.exception
    import dns.rdatatype
    import dns.resolver

    addresses: list[str] = []
    exists = False
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None, True
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoAnswer):
            return None, False
        except dns.exception.DNSException:
            return None, False
        exists = True  # NOERROR: the name exists, with or without records of this type
        addresses += [r.to_text() for r in answer]
    return (sorted(set(addresses)) if exists and addresses else None), True


def brute_force(domain: str, words: Iterable[str], server: str, out: Path, should_stop: Callable[[], bool],
                seconds_left: Callable[[], float], progress: Callable[[int], None] | None = None,
                total: int | None = None, workers: int = WORKERS, port: int = 53) -> BruteResult:
    """Ask ``server`` for every ``<word>.<domain>``; one JSON line per name found is appended to ``out``,
    and a last ``{"done": ...}`` line when every word was asked."""
    resolver = make_resolver(server, port)
    result = BruteResult()
    wildcard, _ = lookup(resolver, f"cix-{secrets.token_hex(8)}.{domain}")
    result.wildcard = tuple(wildcard or ())
    started = time.monotonic()
    with open(out, "a", encoding="utf-8") as sink, ThreadPoolExecutor(workers, "dnsbrute") as pool:
        pending: dict[Future[tuple[list[str] | None, bool]], str] = {}
        word_iter = iter(words)
        exhausted = False
        while True:
            while not exhausted and len(pending) < workers * 4:
                word = next(word_iter, None)
                if word is None:
                    exhausted = True
                    break
                name = f"{word}.{domain}"
                pending[pool.submit(lookup, resolver, name)] = name
            if not pending:
                break
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                addresses, answered = future.result()
                result.queried += 1
                result.errors += 0 if answered else 1
                if addresses and tuple(addresses) != result.wildcard:
                    result.found += 1
                    sink.write(json.dumps({"name": name, "addresses": addresses, "resolver": server}) + "\n")
            if should_stop():
                result.stopped = True
            elif seconds_left() <= 0:
                result.timed_out = True
            if result.stopped or result.timed_out:
                for future in pending:
                    future.cancel()  # queued ones never run; running ones end within QUERY_LIFETIME
                break
            if progress is not None and total:
                progress(min(99, result.queried * 100 // total))
        if not (result.stopped or result.timed_out):
            sink.write(json.dumps({"done": True, "queried": result.queried, "found": result.found,
                                   "errors": result.errors, "wildcard": list(result.wildcard),
                                   "seconds": round(time.monotonic() - started, 2)}) + "\n")
    return result


def read_results(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(names found, the closing summary or None when the run did not finish); tolerates a cut line."""
    found: list[dict[str, Any]] = []
    summary = None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return [], None
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("done"):
            summary = item
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            found.append(item)
    return found, summary

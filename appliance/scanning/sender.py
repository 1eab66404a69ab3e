"""Findings batches sent with a few in flight: the scan task's way of reporting findings (and the
bench's, which must measure the real path).

Sent one at a time, a batch's whole round trip (encoding, the network, the appliance's checks and
its commit) was the limit, and the appliance's event loop, its writer thread and the worker each
waited for the others. With up to ``depth`` batches in flight the three overlap, and the writer
commits the batches that queue up meanwhile in one transaction.

Order does not matter to the result: every batch carries its ``first_seq``, findings are listed by
seq, and of two findings with one fingerprint the lower seq is kept whichever was committed first
(:data:`appliance.scanning.model._INSERT`). A lost lease stops the sending: nothing more is
submitted, and the batches still in flight are refused by the appliance as well.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from engines.base import Finding

Send = Callable[[list[Finding], int], bool]  # (batch, first_seq) -> False: the lease is lost


def send_batches(send: Send, findings: Iterable[Finding], batch: int, depth: int,
                 limit: int | None = None) -> tuple[int, bool]:
    """Sends ``findings`` (at most ``limit``) in batches of ``batch``, at most ``depth`` unanswered at a
    time; returns ``(stored, lease kept)``. A send that raises stops the sending; its error is raised
    once every batch in flight has been answered, so nothing is still being sent afterwards."""
    pending: collections.deque[tuple[Future[bool], int]] = collections.deque()
    stored, kept = 0, True
    error: BaseException | None = None

    def settle(wait_for: int) -> None:
        """Collects answers, oldest first, until at most ``wait_for`` batches are in flight."""
        nonlocal stored, kept, error
        while len(pending) > wait_for:
            future, size = pending.popleft()
            try:
                if future.result():
                    stored += size
                else:
                    kept = False
            except Exception as exc:  # raised once the rest are in (finally below)
                error = error or exc

    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="findings-sender") as pool:
        try:
            chunk: list[Finding] = []
            submitted = 0
            for finding in findings:
                if limit is not None and submitted + len(chunk) >= limit:
                    break
                chunk.append(finding)
                if len(chunk) >= batch:
                    pending.append((pool.submit(send, chunk, submitted), len(chunk)))
                    submitted += len(chunk)
                    chunk = []
                    settle(depth - 1)
                    if not kept or error is not None:
                        break
            if chunk:  # the last, short batch (or the one the limit cut); empty after a stop
                pending.append((pool.submit(send, chunk, submitted), len(chunk)))
        finally:
            settle(0)  # also when the parser raised: no batch is left sending behind the caller
    if error is not None:
        raise error
    return stored, kept

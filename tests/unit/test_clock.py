"""Ids: random scan ids as uuid4 makes them, from a pool of random bytes that a fork never shares."""
from __future__ import annotations

import os
import uuid

from appliance import clock


def test_new_ids_are_random_version_4_uuids() -> None:
    ids = [clock.new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:2000]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    # Every random bit varies: no bit of the 122 is stuck at 0 or 1 across the ids.
    values = [uuid.UUID(t).int for t in ids[:2000]]
    fixed = (0xF << 76) | (0b11 << 62)
    ones = zeros = 0
    for value in values:
        ones |= value
        zeros |= ~value
    assert (ones & zeros) | fixed == (1 << 128) - 1
    assert clock.new_id("scan_").startswith("scan_")


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    clock.new_id()  # the pool is filled in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids go back to the parent
        os.close(read)
        os.write(write, ",".join(clock.new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    parent = [clock.new_id() for _ in range(10)]
    assert len(child) == 10 and not set(child) & set(parent)


def test_unique_ids_are_uuid_shaped_and_differ_between_makers() -> None:
    first, second = clock.unique_ids(), clock.unique_ids()
    ids = [first() for _ in range(1000)] + [second() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)

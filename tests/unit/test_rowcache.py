"""appliance/store/rowcache.py: rows kept only until something is committed."""
from __future__ import annotations

from appliance.store.rowcache import RowCache


class Db:
    def __init__(self) -> None:
        self.commits = 0
        self.version = 1
        self.loads = 0
        self.value: tuple[str, ...] | None = ("queued",)

    def load(self) -> tuple[str, ...] | None:
        self.loads += 1
        return self.value


def cache(db: Db, limit: int = 4096) -> RowCache:
    return RowCache(lambda: db.commits, lambda: db.version, limit)


def test_a_row_is_read_once_until_the_writer_commits():
    db = Db()
    rows = cache(db)
    assert rows.read("a", db.load) == ("queued",) and rows.read("a", db.load) == ("queued",)
    assert db.loads == 1
    db.value, db.commits = ("running",), 1  # any commit, whatever it changed
    assert rows.read("a", db.load) == ("running",) and db.loads == 2


def test_a_commit_during_the_read_is_not_hidden_by_it():
    db = Db()
    rows = cache(db)

    def load_while_committing() -> tuple[str, ...]:
        db.commits += 1  # committed on the writer's thread while this read ran: the row may be old
        return ("queued",)

    rows.read("a", load_while_committing)
    db.value = ("running",)
    assert rows.read("a", db.load) == ("running",)


def test_another_process_commit_is_seen_at_the_next_check():
    db = Db()
    rows = cache(db)
    rows.check_external()
    rows.read("a", db.load)
    rows.check_external()  # nothing changed: still cached
    assert rows.read("a", db.load) == ("queued",) and db.loads == 1
    db.value, db.version = ("cancelled",), 2  # a CLI process committed; the writer did not
    assert rows.read("a", db.load) == ("queued",)  # until the check (every 0.5 s in the server)
    rows.check_external()
    assert rows.read("a", db.load) == ("cancelled",)


def test_missing_rows_are_not_kept_and_the_cache_is_bounded():
    db = Db()
    rows = cache(db, limit=2)
    db.value = None
    assert rows.read("gone", db.load) is None and rows.read("gone", db.load) is None and db.loads == 2
    db.value = ("x",)
    for key in ("a", "b", "c"):
        rows.read(key, db.load)
    assert len(rows._rows) <= 2

"""SQLite storage: schema and migrations, the one writer, thread-local readers."""
from appliance.store.db import connect, migrate
from appliance.store.ops import Op, apply_sync
from appliance.store.reader import Reader
from appliance.store.writer import Writer

__all__ = ["Op", "Reader", "Writer", "apply_sync", "connect", "migrate"]

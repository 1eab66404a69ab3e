"""Signing in a running appliance: the key ring, report origins and the audit checkpoint loop.
Built once by :class:`appliance.services.Services` as ``services.signing``."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from appliance import __version__
from appliance.signing import checkpoint
from appliance.signing.keys import KeyRing
from appliance.signing.report import Origin

if TYPE_CHECKING:
    from appliance.services import Services

log = logging.getLogger(__name__)


class SigningService:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.keyring = KeyRing(services.config.data_dir)
        self.interval = services.config["audit.checkpoint_seconds"]
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if await asyncio.to_thread(self.keyring.ensure):  # the first start of an older data dir
            log.info("created the signing keys in %s", self.keyring.directory)
        await asyncio.to_thread(self.keyring.public_keys)  # a broken key store stops the start, loudly
        self._task = asyncio.create_task(self._loop(), name="audit-checkpoints")

    async def stop(self) -> None:
        """Cancel the loop and sign the head once more: the last rows of a run are covered too.
        Called before the writer stops."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.checkpoint()
        except Exception:
            log.exception("the audit checkpoint at shutdown failed")

    async def checkpoint(self) -> bool:
        """Sign the audit chain's head if rows were added since the last checkpoint."""
        async with self._lock:
            head = checkpoint.unsigned(self.s.reader.one(checkpoint.HEAD_SQL))
            if head is None:
                return False
            op = await asyncio.to_thread(checkpoint.checkpoint_op, self.keyring, head)
            await self.s.writer.write(op)
            log.info("audit checkpoint: signed row %s", head["id"])
            return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.checkpoint()
            except Exception:
                log.exception("audit checkpoint failed")

    async def origin(self, scan_type: str) -> Origin:
        """Who made a report: this appliance, and the scanner installed for ``scan_type`` (the first
        probe runs the scanner's ``--version``: off the event loop)."""
        engine = self.s.engines.get(scan_type)
        version = None
        if engine is not None:
            version = (await asyncio.to_thread(engine.probe)).version
        return Origin(self.s.config["server.hostname"], __version__,
                      engine.title if engine is not None else None, version)

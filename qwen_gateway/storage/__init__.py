"""Storage: conversation history (SQLite | MySQL), the durable outbox in front of it, objects (folder | OSS).

``build_storage(settings)`` picks the engines from the settings; ``async with storage:`` migrates (best effort:
the gateway starts even while the database is away) and runs the outbox drainer until the block ends.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qwen_gateway.errors import StorageError
from qwen_gateway.storage.history import (
    Channel,
    HistoryRejected,
    HistoryStore,
    HistoryUnavailable,
    Message,
    TurnRecord,
    TurnStatus,
)
from qwen_gateway.storage.mysql_history import MySQLHistoryStore
from qwen_gateway.storage.objects import (
    InvalidObjectKey,
    LocalObjectStore,
    ObjectAccessDenied,
    ObjectKind,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreTimeout,
    ObjectStoreUnavailable,
    StoredObject,
    load_signing_secret,
    new_object_key,
)
from qwen_gateway.storage.oss import OssObjectStore
from qwen_gateway.storage.outbox import Outbox, OutboxStatus
from qwen_gateway.storage.sqlite_history import SQLiteHistoryStore

if TYPE_CHECKING:
    from qwen_gateway.config import Settings

__all__ = [
    "Channel",
    "HistoryRejected",
    "HistoryStore",
    "HistoryUnavailable",
    "InvalidObjectKey",
    "LocalObjectStore",
    "Message",
    "MySQLHistoryStore",
    "ObjectAccessDenied",
    "ObjectKind",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreTimeout",
    "ObjectStoreUnavailable",
    "OssObjectStore",
    "Outbox",
    "OutboxStatus",
    "SQLiteHistoryStore",
    "Storage",
    "StoredObject",
    "TurnRecord",
    "TurnStatus",
    "build_storage",
    "new_object_key",
]

log = logging.getLogger("qwen_gateway.storage")


@dataclass
class Storage:
    """The storage services the gateway passes to its routes and voice pipeline.

    Attributes:
        history: read the conversation (``recent_messages`` for chat context, ``conversation``, delete).
        outbox: write turns (``submit``), never ``history.append_turn`` directly.
        objects: uploaded audio/images and spoken answers.
    """

    history: HistoryStore
    outbox: Outbox
    objects: ObjectStore
    #: seconds :meth:`start` waits for the first migration before starting anyway.
    start_timeout: float = 5.0
    #: seconds each probe of :meth:`check` may take.
    probe_timeout: float = 2.0

    async def start(self) -> None:
        """Migrate the history schema (a failure is logged: the drainer migrates once the database is back),
        open the journal and start its drainer."""
        try:
            async with asyncio.timeout(self.start_timeout):
                await self.history.migrate()
        except (StorageError, TimeoutError) as exc:
            log.warning(
                "history database not ready at start (%s); turns are journaled until it is",
                type(exc).__name__,
            )
        await self.outbox.start()

    async def aclose(self) -> None:
        """Stop the drainer and close everything (journaled turns stay for the next start)."""
        try:
            await self.outbox.aclose()
        finally:
            try:
                await self.history.aclose()
            finally:
                await self.objects.aclose()

    async def __aenter__(self) -> Storage:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def status(self) -> dict[str, Any]:
        """What ``/health`` shows about storage (no I/O): engines and the journal backlog."""
        outbox = self.outbox.status()
        return {
            "history": self.history.engine,
            "objects": self.objects.engine,
            "journal_backlog": outbox.backlog,
            "journal_dead_letters": outbox.dead_letters,
            "history_writes_ok": outbox.healthy,
            "history_failing_since": outbox.failing_since,
            "drainer_running": outbox.draining,
        }

    async def check(self) -> dict[str, bool]:
        """Ping the history database and the object store (each bounded by ``probe_timeout``)."""

        async def ok(probe: Any) -> bool:
            try:
                async with asyncio.timeout(self.probe_timeout):
                    await probe()
            except (StorageError, TimeoutError):
                return False
            return True

        history, objects = await asyncio.gather(ok(self.history.ping), ok(self.objects.ping))
        return {"history": history, "objects": objects}


def build_storage(settings: Settings) -> Storage:
    """The storage the settings describe.

    History: MySQL/MariaDB when ``DB_HOST`` is set, else SQLite at ``settings.sqlite_path``. Objects: OSS when
    ``BUCKET`` and the access keys are set, else a folder at ``settings.objects_dir`` served at ``/objects/``
    (links signed with ``QG_OBJECT_SIGNING_KEY``, else a secret kept in the data dir). Journal at ``settings.journal_path``.
    """
    history: HistoryStore
    if settings.uses_mysql:
        history = MySQLHistoryStore.from_settings(settings)
    else:
        history = SQLiteHistoryStore(settings.sqlite_path)
    objects: ObjectStore
    if settings.uses_oss:
        objects = OssObjectStore.from_settings(settings)
    else:
        base = settings.public_url or f"http://{settings.host}:{settings.port}"
        objects = LocalObjectStore(
            settings.objects_dir,
            base,
            settings.object_signing_key.encode()
            or load_signing_secret(settings.data_dir / "object-signing.key"),
        )
    outbox = Outbox(settings.journal_path, history)
    return Storage(history=history, outbox=outbox, objects=objects)

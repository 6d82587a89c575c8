"""History in an SQLite file (the embedded default): WAL mode, one worker thread, versioned migrations."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from qwen_gateway.storage._history_rows import (
    HistorySql,
    assemble_turns,
    message_rows,
    messages_oldest_first,
    turn_values,
    utc_naive,
)
from qwen_gateway.storage._sqlite import SqliteThread, transaction
from qwen_gateway.storage.history import (
    HistoryRejected,
    HistoryUnavailable,
    Message,
    TurnRecord,
)
from qwen_gateway.storage.migrations import MIGRATIONS, latest_version

__all__ = ["SQLiteHistoryStore"]

log = logging.getLogger("qwen_gateway.storage.sqlite_history")

T = TypeVar("T")

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

_SQL = HistorySql.with_placeholder("?")


def _to_db_time(value: datetime) -> str:
    return utc_naive(value).strftime(_TIME_FORMAT)


def _from_db_time(value: str) -> datetime:
    return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)


class SQLiteHistoryStore:
    """:class:`~qwen_gateway.storage.history.HistoryStore` over an SQLite file.

    Args:
        path: the database file (created with its folder when missing).
        timeout: seconds any one operation may take (a lock held by another process included).
    """

    engine = "sqlite"

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._db = SqliteThread(
            self.path,
            synchronous="NORMAL",
            busy_timeout=timeout,
            call_timeout=timeout,
            name="qg-history",
        )
        self._migrated = False

    def __repr__(self) -> str:
        return f"SQLiteHistoryStore({str(self.path)!r})"

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._db.call(fn)
        except TimeoutError:
            raise HistoryUnavailable(
                f"SQLite history: no answer within {self._timeout:g}s"
            ) from None
        except sqlite3.IntegrityError as exc:
            raise HistoryRejected(f"SQLite history refused the record: {exc}") from exc
        except (sqlite3.DataError, OverflowError) as exc:
            raise HistoryRejected(f"SQLite history refused the record: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise HistoryUnavailable(f"SQLite history failed: {exc}") from exc

    # ------------------------------------------------------------------ schema
    async def migrate(self) -> None:
        if self._migrated:
            return
        applied = await self._call(self._migrate)
        if applied:
            log.info(
                "history schema (sqlite) migrated to version %d: %s", latest_version(), applied
            )
        self._migrated = True

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> list[int]:
        # Tables are rebuilt by some versions: foreign keys are off while they are (a pragma that only takes
        # effect outside a transaction), and checked before the commit.
        conn.execute("PRAGMA foreign_keys=OFF")
        try:
            return SQLiteHistoryStore._migrate_unchecked(conn)
        finally:
            conn.execute("PRAGMA foreign_keys=ON")

    @staticmethod
    def _migrate_unchecked(conn: sqlite3.Connection) -> list[int]:
        with transaction(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            applied: list[int] = []
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                for statement in migration.sqlite:
                    conn.execute(statement)
                conn.execute(
                    _SQL.record_migration,
                    (migration.version, migration.name, _to_db_time(datetime.now(UTC))),
                )
                applied.append(migration.version)
            if applied:
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise sqlite3.IntegrityError(f"migration broke foreign keys: {broken[:5]}")
            newer = [v for v in done if v > latest_version()]
        if newer:
            log.warning("history schema has versions %s newer than this code knows", sorted(newer))
        return applied

    # ------------------------------------------------------------------ writes
    async def append_turn(self, turn: TurnRecord) -> bool:
        return await self._call(lambda conn: self._append(conn, turn))

    @staticmethod
    def _append(conn: sqlite3.Connection, turn: TurnRecord) -> bool:
        created = _to_db_time(turn.created_at)
        with transaction(conn):
            conn.execute(
                "INSERT INTO conversations (owner, id, channel, created_at, updated_at, turn_count)"
                " VALUES (?, ?, ?, ?, ?, 0)"
                " ON CONFLICT (owner, id) DO NOTHING",
                (turn.owner, turn.conversation_id, turn.channel, created, created),
            )
            cursor = conn.execute(
                _SQL.insert_turn + " ON CONFLICT (write_id) DO NOTHING",
                turn_values(turn, created),
            )
            if cursor.rowcount == 0:
                conn.execute("ROLLBACK")
                return False
            turn_id = cursor.lastrowid
            conn.execute(
                "UPDATE conversations SET turn_count = turn_count + 1,"
                " updated_at = max(updated_at, ?) WHERE owner = ? AND id = ?",
                (created, turn.owner, turn.conversation_id),
            )
            conn.executemany(_SQL.insert_message, message_rows(turn, turn_id, created))
        return True

    async def delete_conversation(self, conversation_id: str, *, owner: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                for statement in _SQL.delete_conversation:
                    cursor = conn.execute(statement, (owner, conversation_id))
                return cursor.rowcount > 0  # of the last: the conversation row

        return await self._call(delete)

    # ------------------------------------------------------------------ reads
    async def recent_messages(
        self, conversation_id: str, limit: int, *, owner: str
    ) -> list[Message]:
        if limit <= 0:
            return []

        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute(_SQL.recent_messages, (owner, conversation_id, limit)).fetchall()

        return messages_oldest_first(await self._call(read))

    async def conversation(self, conversation_id: str, *, owner: str) -> list[TurnRecord]:
        def read(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            with transaction(conn, immediate=False):
                turns = conn.execute(_SQL.select_turns, (owner, conversation_id)).fetchall()
                messages = conn.execute(_SQL.select_messages, (owner, conversation_id)).fetchall()
            return turns, messages

        turns, messages = await self._call(read)
        return assemble_turns(turns, messages, _from_db_time)

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        await self._db.aclose()

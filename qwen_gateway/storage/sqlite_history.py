"""History in an SQLite file (the embedded default): WAL mode, one worker thread, versioned migrations."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

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

_TURN_COLUMNS = (
    "write_id",
    "conversation_id",
    "channel",
    "model",
    "status",
    "error_code",
    "request_id",
    "session_id",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "recognition_ms",
    "first_token_ms",
    "first_audio_ms",
    "total_ms",
    "audio_key",
    "image_key",
    "reply_audio_key",
    "created_at",
)


def _to_db_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


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
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _to_db_time(datetime.now(UTC))),
                )
                applied.append(migration.version)
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
        values: dict[str, Any] = {name: getattr(turn, name) for name in _TURN_COLUMNS}
        values["created_at"] = created
        with transaction(conn):
            conn.execute(
                "INSERT INTO conversations (id, channel, created_at, updated_at, turn_count)"
                " VALUES (?, ?, ?, ?, 0)"
                " ON CONFLICT (id) DO NOTHING",
                (turn.conversation_id, turn.channel, created, created),
            )
            cursor = conn.execute(
                f"INSERT INTO turns ({', '.join(_TURN_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(_TURN_COLUMNS))})"
                " ON CONFLICT (write_id) DO NOTHING",
                tuple(values[name] for name in _TURN_COLUMNS),
            )
            if cursor.rowcount == 0:
                conn.execute("ROLLBACK")
                return False
            turn_id = cursor.lastrowid
            conn.execute(
                "UPDATE conversations SET turn_count = turn_count + 1,"
                " updated_at = max(updated_at, ?) WHERE id = ?",
                (created, turn.conversation_id),
            )
            rows = [
                (turn_id, turn.conversation_id, role, content, created)
                for role, content in (
                    ("user", turn.user_content),
                    ("assistant", turn.assistant_content),
                )
                if content
            ]
            conn.executemany(
                "INSERT INTO messages (turn_id, conversation_id, role, content, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        return True

    async def delete_conversation(self, conversation_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                conn.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
                conn.execute("DELETE FROM turns WHERE conversation_id = ?", (conversation_id,))
                cursor = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
                return cursor.rowcount > 0

        return await self._call(delete)

    # ------------------------------------------------------------------ reads
    async def recent_messages(self, conversation_id: str, limit: int) -> list[Message]:
        if limit <= 0:
            return []

        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute(
                "SELECT m.role, m.content FROM messages m JOIN turns t ON t.id = m.turn_id"
                " WHERE m.conversation_id = ? AND t.status <> 'failed'"
                " ORDER BY m.id DESC LIMIT ?",
                (conversation_id, limit),
            ).fetchall()

        rows = await self._call(read)
        return [Message(role, content) for role, content in reversed(rows)]  # type: ignore[arg-type]

    async def conversation(self, conversation_id: str) -> list[TurnRecord]:
        def read(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            with transaction(conn, immediate=False):
                turns = conn.execute(
                    f"SELECT id, {', '.join(_TURN_COLUMNS)} FROM turns"
                    " WHERE conversation_id = ? ORDER BY id",
                    (conversation_id,),
                ).fetchall()
                messages = conn.execute(
                    "SELECT turn_id, role, content FROM messages WHERE conversation_id = ? ORDER BY id",
                    (conversation_id,),
                ).fetchall()
            return turns, messages

        turns, messages = await self._call(read)
        return _assemble(turns, messages)

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        await self._db.aclose()


def _assemble(turns: list[Any], messages: list[Any]) -> list[TurnRecord]:
    contents: dict[int, dict[str, str]] = {}
    for turn_id, role, content in messages:
        contents.setdefault(turn_id, {})[role] = content
    out: list[TurnRecord] = []
    for row in turns:
        turn_id, *values = row
        fields = dict(zip(_TURN_COLUMNS, values, strict=True))
        fields["created_at"] = _from_db_time(fields["created_at"])
        said = contents.get(turn_id, {})
        out.append(
            TurnRecord(
                user_content=said.get("user", ""),
                assistant_content=said.get("assistant", ""),
                **fields,
            )
        )
    return out

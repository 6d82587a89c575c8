"""History in MySQL/MariaDB via asyncmy: a connection pool, utf8mb4, timeouts, reconnect, locked migrations."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncmy
from asyncmy import errors as myerrors

from qwen_gateway.storage._history_rows import (
    HistorySql,
    assemble_turns,
    message_rows,
    messages_oldest_first,
    turn_values,
    utc_naive,
)
from qwen_gateway.storage.history import (
    HistoryRejected,
    HistoryUnavailable,
    Message,
    TurnRecord,
)
from qwen_gateway.storage.migrations import MIGRATIONS, Guarded, latest_version

if TYPE_CHECKING:
    from qwen_gateway.config import Settings

__all__ = ["MySQLHistoryStore"]

log = logging.getLogger("qwen_gateway.storage.mysql_history")

T = TypeVar("T")

_DUPLICATE_KEY = 1062
#: Error numbers of a lost or refused connection: the statement may be retried on a fresh connection.
_CONNECTION_LOST = {2003, 2006, 2013, 2014, 2055, 1053, 1927}
#: Access denied to the database / unknown database: a configuration problem, not retried on the spot.
_NO_DATABASE = {1044, 1049}

_SQL = HistorySql.with_placeholder("%s")


def _from_db_time(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _errno(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _connection_lost(exc: BaseException) -> bool:
    if isinstance(exc, myerrors.OperationalError | myerrors.InterfaceError):
        return _errno(exc) in _CONNECTION_LOST or _errno(exc) is None
    return isinstance(exc, OSError | EOFError | asyncio.IncompleteReadError)


class MySQLHistoryStore:
    """:class:`~qwen_gateway.storage.history.HistoryStore` over MySQL/MariaDB.

    Connections are made lazily (the gateway starts while the database is away). A statement that fails because
    its pooled connection was dropped is retried once on a fresh connection; every operation is bounded by
    ``query_timeout`` (acquiring a connection included). All text is utf8mb4.

    Args:
        host, port, user, password, database: where the history lives (seed names ``DB_*``).
        pool_size: most connections held at once.
        connect_timeout: seconds to establish one connection.
        query_timeout: seconds any one operation may take end to end.
        create_database: create ``database`` (utf8mb4) at :meth:`migrate` when it does not exist.
    """

    engine = "mysql"

    def __init__(
        self,
        *,
        host: str,
        database: str,
        port: int = 3306,
        user: str = "root",
        password: str = "",
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        query_timeout: float = 10.0,
        create_database: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.database = database
        self._user = user
        self._password = password
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        self._create_database = create_database
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._migrated = False
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> MySQLHistoryStore:
        """The store the settings describe (``DB_HOST``, ``DB_PORT``, ``DB_USER``, ``DB_PASSWORD``, ``DB_NAME``)."""
        return cls(
            host=settings.db_host,
            port=settings.db_port,
            user=settings.db_user,
            password=settings.db_password,
            database=settings.db_name,
            pool_size=settings.db_pool_size,
            connect_timeout=min(settings.connect_timeout, 10.0),
        )

    def __repr__(self) -> str:
        return f"MySQLHistoryStore({self.host}:{self.port}/{self.database})"

    # ------------------------------------------------------------------ connections
    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self._user,
            "password": self._password,
            "charset": "utf8mb4",
            "autocommit": False,
            # asyncmy wants a whole number of seconds here (>= 1)
            "connect_timeout": max(1, round(self._connect_timeout)),
            "read_timeout": self._query_timeout,
            "init_command": (
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'"
            ),
        }

    async def _get_pool(self) -> Any:
        if self._closed:
            raise HistoryUnavailable("MySQL history store is closed")
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncmy.create_pool(
                        minsize=0,
                        maxsize=self._pool_size,
                        pool_recycle=300,
                        db=self.database,
                        **self._connect_kwargs(),
                    )
        return self._pool

    async def _with_connection(self, op: Callable[[Any], Awaitable[T]]) -> T:
        pool = await self._get_pool()
        conn = await pool.acquire()
        try:
            result = await op(conn)
        except BaseException:
            # the connection's state is unknown (half-read reply, open transaction): never reuse it
            conn.close()
            raise
        finally:
            pool.release(conn)
        return result

    async def _run(self, op: Callable[[Any], Awaitable[T]], *, what: str) -> T:
        """Run ``op(connection)`` with the timeout, one retry on a dropped connection, errors mapped."""
        try:
            async with asyncio.timeout(self._query_timeout):
                try:
                    return await self._with_connection(op)
                except Exception as exc:
                    if not _connection_lost(exc):
                        raise
                    log.info("history (mysql): connection lost during %s, retrying once", what)
                    return await self._with_connection(op)
        except TimeoutError:
            raise HistoryUnavailable(
                f"MySQL history: {what} took longer than {self._query_timeout:g}s"
            ) from None
        except (myerrors.DataError, myerrors.IntegrityError) as exc:
            raise HistoryRejected(f"MySQL history refused the record: {exc}") from exc
        except (myerrors.MySQLError, OSError, EOFError, asyncio.IncompleteReadError) as exc:
            raise HistoryUnavailable(f"MySQL history: {what} failed: {exc}") from exc
        except RuntimeError as exc:  # asyncmy: pool closing / connection closed under us
            raise HistoryUnavailable(f"MySQL history: {what} failed: {exc}") from exc

    # ------------------------------------------------------------------ schema
    def _lock_name(self) -> str:
        # GET_LOCK is server-wide: scope it to our database (names are at most 64 characters)
        digest = hashlib.sha1(self.database.encode()).hexdigest()[:16]
        return f"qwen_gateway_migrate.{digest}"

    async def migrate(self) -> None:
        if self._migrated:
            return
        try:
            async with asyncio.timeout(self._query_timeout + self._connect_timeout * 2 + 30):
                if self._create_database:
                    await self._ensure_database()
                applied = await self._with_connection(self._migrate)
        except TimeoutError:
            raise HistoryUnavailable("MySQL history: migration timed out") from None
        except myerrors.MySQLError as exc:
            raise HistoryUnavailable(f"MySQL history: migration failed: {exc}") from exc
        except (OSError, EOFError, RuntimeError) as exc:
            raise HistoryUnavailable(f"MySQL history: migration failed: {exc}") from exc
        if applied:
            log.info("history schema (mysql) migrated to version %d: %s", latest_version(), applied)
        self._migrated = True

    async def _ensure_database(self) -> None:
        conn = await asyncmy.connect(**self._connect_kwargs())
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                    (self.database,),
                )
                if await cur.fetchone() is None:
                    quoted = self.database.replace("`", "``")
                    try:
                        await cur.execute(
                            f"CREATE DATABASE IF NOT EXISTS `{quoted}`"
                            " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                        )
                        log.info("history (mysql): created database %s", self.database)
                    except myerrors.OperationalError as exc:
                        if _errno(exc) not in _NO_DATABASE:
                            raise
                        log.warning("history (mysql): cannot create database %s", self.database)
        finally:
            conn.close()

    async def _migrate(self, conn: Any) -> list[int]:
        lock = self._lock_name()
        async with conn.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, %s)", (lock, max(1, int(self._query_timeout))))
            (got,) = await cur.fetchone()
            if got != 1:
                raise HistoryUnavailable("MySQL history: another process holds the migration lock")
            try:
                await cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INT NOT NULL PRIMARY KEY,"
                    " name VARCHAR(200) NOT NULL,"
                    " applied_at DATETIME(6) NOT NULL"
                    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
                )
                await cur.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in await cur.fetchall()}
                await conn.commit()
                applied: list[int] = []
                for migration in MIGRATIONS:
                    if migration.version in done:
                        continue
                    for statement in migration.mysql:
                        if isinstance(statement, Guarded):
                            await cur.execute(statement.when)
                            (needed,) = await cur.fetchone()
                            if not needed:
                                continue
                            statement = statement.sql
                        await cur.execute(statement)
                    await cur.execute(
                        _SQL.record_migration,
                        (migration.version, migration.name, utc_naive(datetime.now(UTC))),
                    )
                    await conn.commit()
                    applied.append(migration.version)
                newer = [v for v in done if v > latest_version()]
                if newer:
                    log.warning(
                        "history schema has versions %s newer than this code knows", sorted(newer)
                    )
            finally:
                await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
                await cur.fetchone()
        return applied

    # ------------------------------------------------------------------ writes
    async def append_turn(self, turn: TurnRecord) -> bool:
        created = utc_naive(turn.created_at)

        async def op(conn: Any) -> bool:
            async with conn.cursor() as cur:
                await cur.execute(
                    "INSERT INTO conversations (owner, id, channel, created_at, updated_at,"
                    " turn_count) VALUES (%s, %s, %s, %s, %s, 0)"
                    " ON DUPLICATE KEY UPDATE id = id",
                    (turn.owner, turn.conversation_id, turn.channel, created, created),
                )
                try:
                    await cur.execute(_SQL.insert_turn, turn_values(turn, created))
                except myerrors.IntegrityError as exc:
                    if _errno(exc) != _DUPLICATE_KEY:
                        raise
                    await conn.rollback()
                    return False
                turn_id = cur.lastrowid
                await cur.execute(
                    "UPDATE conversations SET turn_count = turn_count + 1,"
                    " updated_at = GREATEST(updated_at, %s) WHERE owner = %s AND id = %s",
                    (created, turn.owner, turn.conversation_id),
                )
                for row in message_rows(turn, turn_id, created):
                    await cur.execute(_SQL.insert_message, row)
            await conn.commit()
            return True

        return await self._run(op, what="append_turn")

    async def delete_conversation(self, conversation_id: str, *, owner: str) -> bool:
        async def op(conn: Any) -> bool:
            async with conn.cursor() as cur:
                for statement in _SQL.delete_conversation:
                    await cur.execute(statement, (owner, conversation_id))
                deleted = cur.rowcount > 0  # of the last: the conversation row
            await conn.commit()
            return bool(deleted)

        return await self._run(op, what="delete_conversation")

    # ------------------------------------------------------------------ reads
    async def recent_messages(
        self, conversation_id: str, limit: int, *, owner: str
    ) -> list[Message]:
        if limit <= 0:
            return []

        async def op(conn: Any) -> list[Any]:
            async with conn.cursor() as cur:
                await cur.execute(_SQL.recent_messages, (owner, conversation_id, int(limit)))
                rows = list(await cur.fetchall())
            await conn.commit()
            return rows

        return messages_oldest_first(await self._run(op, what="recent_messages"))

    async def conversation(self, conversation_id: str, *, owner: str) -> list[TurnRecord]:
        async def op(conn: Any) -> tuple[list[Any], list[Any]]:
            async with conn.cursor() as cur:
                await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                await cur.execute(_SQL.select_turns, (owner, conversation_id))
                turns = list(await cur.fetchall())
                await cur.execute(_SQL.select_messages, (owner, conversation_id))
                messages = list(await cur.fetchall())
            await conn.commit()
            return turns, messages

        turns, messages = await self._run(op, what="conversation")
        return assemble_turns(turns, messages, _from_db_time)

    async def ping(self) -> None:
        async def op(conn: Any) -> None:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
                await cur.fetchone()
            await conn.commit()

        await self._run(op, what="ping")

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await pool.wait_closed()
            except TimeoutError:
                pool.terminate()

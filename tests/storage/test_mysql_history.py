"""MariaDB engine: reconnect after the server goes away, timeouts against a server that hangs, schema charset."""

from __future__ import annotations

import uuid

import pytest

from qwen_gateway.storage import HistoryUnavailable, TurnRecord
from qwen_gateway.storage.history import LEGACY_OWNER
from tests.storage.conftest import MariaDB, TcpProxy, free_port


def turn(conversation_id: str, n: int = 0) -> TurnRecord:
    return TurnRecord.new(
        conversation_id=conversation_id,
        channel="chat",
        model="qwen-plus",
        user_content=f"q{n}",
        assistant_content=f"a{n}",
    )


async def test_a_dead_port_is_unavailable_not_a_hang(
    mariadb: MariaDB, mariadb_database: str
) -> None:
    store = mariadb.store(mariadb_database, port=free_port(), connect_timeout=1, query_timeout=2)
    try:
        with pytest.raises(HistoryUnavailable):
            await store.ping()
        with pytest.raises(HistoryUnavailable):
            await store.migrate()
        with pytest.raises(HistoryUnavailable):
            await store.append_turn(turn("c"))
    finally:
        await store.aclose()


async def test_the_pool_reconnects_after_the_server_went_away(
    mariadb: MariaDB, mariadb_database: str, mariadb_proxy: TcpProxy
) -> None:
    store = mariadb.store(
        mariadb_database, port=mariadb_proxy.port, connect_timeout=2, query_timeout=5
    )
    c = f"reconnect-{uuid.uuid4().hex[:8]}"
    try:
        await store.migrate()
        assert await store.append_turn(turn(c, 1))
        await mariadb_proxy.close()  # pooled connections are cut, the port refuses
        with pytest.raises(HistoryUnavailable):
            await store.append_turn(turn(c, 2))
        with pytest.raises(HistoryUnavailable):
            await store.recent_messages(c, 10, owner=LEGACY_OWNER)
        await mariadb_proxy.open()  # same port again
        assert await store.append_turn(turn(c, 3))
        assert [t.user_content for t in await store.conversation(c, owner=LEGACY_OWNER)] == [
            "q1",
            "q3",
        ]
    finally:
        await store.aclose()


async def test_a_dropped_pooled_connection_is_replaced_without_an_error(
    mariadb: MariaDB, mariadb_database: str, mariadb_proxy: TcpProxy
) -> None:
    """The server closed our idle connection (restart, wait_timeout): the next call retries on a new one."""
    store = mariadb.store(mariadb_database, port=mariadb_proxy.port, query_timeout=5)
    c = f"dropped-{uuid.uuid4().hex[:8]}"
    try:
        await store.migrate()
        await store.append_turn(turn(c, 1))
        before = mariadb_proxy.connections
        await mariadb_proxy.close()
        await mariadb_proxy.open()
        assert await store.append_turn(turn(c, 2))
        assert len(await store.conversation(c, owner=LEGACY_OWNER)) == 2
        assert mariadb_proxy.connections > before
    finally:
        await store.aclose()


async def test_a_server_that_never_answers_times_out(
    mariadb: MariaDB, mariadb_database: str, mariadb_proxy: TcpProxy
) -> None:
    mariadb_proxy.mode = "blackhole"
    store = mariadb.store(
        mariadb_database, port=mariadb_proxy.port, connect_timeout=1, query_timeout=1.5
    )
    try:
        with pytest.raises(HistoryUnavailable):
            await store.ping()
        with pytest.raises(HistoryUnavailable):
            await store.append_turn(turn("blackhole"))
    finally:
        await store.aclose()


async def test_tables_are_utf8mb4(mariadb: MariaDB, mariadb_database: str) -> None:
    store = mariadb.store(mariadb_database)
    try:
        await store.migrate()
    finally:
        await store.aclose()
    rows = await mariadb.query(
        mariadb_database,
        "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
        mariadb_database,
    )
    collations = dict(rows)
    assert {"conversations", "turns", "messages", "schema_migrations"} <= set(collations)
    assert all(str(c).startswith("utf8mb4") for c in collations.values())

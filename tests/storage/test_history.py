"""One history suite, run against both engines (SQLite and MariaDB) through the HistoryStore interface."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from qwen_gateway.storage import (
    HistoryStore,
    Message,
    MySQLHistoryStore,
    SQLiteHistoryStore,
    TurnRecord,
)
from qwen_gateway.storage.history import LEGACY_OWNER, validate_turn
from qwen_gateway.storage.migrations import latest_version
from tests.storage.conftest import MariaDB

CHINESE = "你好！请用一句话介绍长城。"
EMOJI = "好的 😀👍🏽 🇨🇳 — «ok» \u05e9\u05dc\u05d5\u05dd e\u0301"


def conv() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


def turn(conversation_id: str, n: int = 0, **fields: object) -> TurnRecord:
    values: dict[str, object] = {
        "conversation_id": conversation_id,
        "channel": "chat",
        "model": "qwen-plus",
        "user_content": f"question {n}",
        "assistant_content": f"answer {n}",
    }
    values.update(fields)
    return TurnRecord.new(**values)


async def test_a_full_record_round_trips(history: HistoryStore) -> None:
    c = conv()
    record = TurnRecord.new(
        conversation_id=c,
        channel="audio",
        model="qwen-plus",
        user_content=CHINESE,
        assistant_content=EMOJI,
        status="interrupted",
        error_code="barge_in",
        request_id="req-123",
        session_id="sess-456",
        prompt_tokens=330,
        completion_tokens=14,
        total_tokens=344,
        recognition_ms=412,
        first_token_ms=250.6,
        first_audio_ms=700,
        total_ms=2_345,
        audio_key="audio/20240101/audio_sess-456_20240101_120000_ab12cd34.mp3",
        image_key="image/20240101/image_sess-456_20240101_120000_ab12cd34.jpg",
        reply_audio_key="tts/20240101/tts_sess-456_20240101_120001_ab12cd35.mp3",
    )
    assert await history.append_turn(record) is True
    assert await history.conversation(c, owner=LEGACY_OWNER) == [record]
    assert record.first_token_ms == 251


async def test_chinese_and_emoji_survive_in_ids_and_content(history: HistoryStore) -> None:
    c = f"会话-😀-{uuid.uuid4().hex[:8]}"
    record = turn(
        c, user_content=CHINESE + EMOJI, assistant_content="𠀀𪚥 (supplementary plane) 🎉"
    )
    await history.append_turn(record)
    [stored] = await history.conversation(c, owner=LEGACY_OWNER)
    assert stored.user_content == CHINESE + EMOJI
    assert stored.assistant_content == "𠀀𪚥 (supplementary plane) 🎉"
    assert await history.recent_messages(c, 2, owner=LEGACY_OWNER) == [
        Message("user", CHINESE + EMOJI),
        Message("assistant", "𠀀𪚥 (supplementary plane) 🎉"),
    ]


async def test_recent_messages_are_the_last_n_oldest_first(history: HistoryStore) -> None:
    c = conv()
    for n in range(5):
        await history.append_turn(turn(c, n))
    recent = await history.recent_messages(c, 4, owner=LEGACY_OWNER)
    assert recent == [
        Message("user", "question 3"),
        Message("assistant", "answer 3"),
        Message("user", "question 4"),
        Message("assistant", "answer 4"),
    ]
    assert [m.as_openai() for m in recent[:1]] == [{"role": "user", "content": "question 3"}]
    assert len(await history.recent_messages(c, 100, owner=LEGACY_OWNER)) == 10
    assert await history.recent_messages(c, 0, owner=LEGACY_OWNER) == []
    assert await history.recent_messages(conv(), 10, owner=LEGACY_OWNER) == []


async def test_failed_turns_stay_out_of_the_context_but_are_kept(history: HistoryStore) -> None:
    c = conv()
    await history.append_turn(turn(c, 1))
    await history.append_turn(
        turn(c, 2, assistant_content="", status="failed", error_code="upstream_timeout")
    )
    await history.append_turn(turn(c, 3, assistant_content="partial ans", status="interrupted"))
    await history.append_turn(turn(c, 4, user_content="", assistant_content="greeting only"))
    assert await history.recent_messages(c, 10, owner=LEGACY_OWNER) == [
        Message("user", "question 1"),
        Message("assistant", "answer 1"),
        Message("user", "question 3"),
        Message("assistant", "partial ans"),
        Message("assistant", "greeting only"),
    ]
    stored = await history.conversation(c, owner=LEGACY_OWNER)
    assert [(t.status, t.error_code) for t in stored] == [
        ("completed", None),
        ("failed", "upstream_timeout"),
        ("interrupted", None),
        ("completed", None),
    ]
    assert stored[1].user_content == "question 2" and stored[1].assistant_content == ""


async def test_appending_the_same_write_twice_stores_it_once(history: HistoryStore) -> None:
    c = conv()
    record = turn(c, 1)
    assert await history.append_turn(record) is True
    assert await history.append_turn(record) is False
    # a replay may carry a different created_at (re-encoded elsewhere): the write id decides
    replay = TurnRecord.new(
        **{f: getattr(record, f) for f in record.__struct_fields__ if f != "created_at"}
    )
    assert await history.append_turn(replay) is False
    assert await history.conversation(c, owner=LEGACY_OWNER) == [record]
    assert len(await history.recent_messages(c, 10, owner=LEGACY_OWNER)) == 2


async def test_turns_come_back_in_the_order_they_were_stored(history: HistoryStore) -> None:
    c = conv()
    base = datetime(2024, 1, 1, 12, tzinfo=UTC)
    records = [turn(c, n, created_at=base - timedelta(seconds=n)) for n in range(30)]
    for record in records:
        await history.append_turn(record)
    assert [t.write_id for t in await history.conversation(c, owner=LEGACY_OWNER)] == [
        r.write_id for r in records
    ]


async def test_conversations_are_isolated(history: HistoryStore) -> None:
    a, b = conv(), conv()
    await history.append_turn(turn(a, 1))
    await history.append_turn(turn(b, 2))
    await history.append_turn(turn(a, 3))
    assert [t.user_content for t in await history.conversation(a, owner=LEGACY_OWNER)] == [
        "question 1",
        "question 3",
    ]
    assert [t.user_content for t in await history.conversation(b, owner=LEGACY_OWNER)] == [
        "question 2"
    ]


async def test_delete_conversation(history: HistoryStore) -> None:
    a, b = conv(), conv()
    for n in range(3):
        await history.append_turn(turn(a, n))
    await history.append_turn(turn(b, 9))
    assert await history.delete_conversation(a, owner=LEGACY_OWNER) is True
    assert await history.conversation(a, owner=LEGACY_OWNER) == []
    assert await history.recent_messages(a, 10, owner=LEGACY_OWNER) == []
    assert await history.delete_conversation(a, owner=LEGACY_OWNER) is False
    assert len(await history.conversation(b, owner=LEGACY_OWNER)) == 1
    # the id can be used again afterwards
    await history.append_turn(turn(a, 7))
    assert [t.user_content for t in await history.conversation(a, owner=LEGACY_OWNER)] == [
        "question 7"
    ]


async def test_created_at_keeps_the_instant_and_microseconds(history: HistoryStore) -> None:
    c = conv()
    beijing = timezone(timedelta(hours=8))
    when = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=beijing)
    await history.append_turn(turn(c, created_at=when))
    [stored] = await history.conversation(c, owner=LEGACY_OWNER)
    assert stored.created_at == when
    assert stored.created_at.utcoffset() == timedelta(0)
    assert stored.created_at.microsecond == 123456


async def test_large_content_round_trips(history: HistoryStore) -> None:
    c = conv()
    big = ("长" * 1000 + "😀" * 1000 + "x" * 1000) * 100  # 300k characters, ~1 MB of UTF-8
    await history.append_turn(turn(c, assistant_content=big))
    [stored] = await history.conversation(c, owner=LEGACY_OWNER)
    assert stored.assistant_content == big


async def test_concurrent_appends_all_arrive(history: HistoryStore) -> None:
    c = conv()
    records = [turn(c, n) for n in range(20)]
    results = await asyncio.gather(*(history.append_turn(r) for r in records))
    assert results == [True] * 20
    assert sorted(t.write_id for t in await history.conversation(c, owner=LEGACY_OWNER)) == sorted(
        r.write_id for r in records
    )


async def test_migrate_again_is_a_no_op_and_ping_answers(history: HistoryStore) -> None:
    c = conv()
    await history.append_turn(turn(c))
    await history.migrate()
    await history.ping()
    assert len(await history.conversation(c, owner=LEGACY_OWNER)) == 1


@pytest.mark.parametrize("engine", ["sqlite", "mariadb"])
async def test_two_processes_migrating_at_once_both_succeed(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two stores on one fresh database migrate concurrently; the schema is applied exactly once."""
    stores: list[HistoryStore]
    if engine == "sqlite":
        path = tmp_path / "fresh" / "history.sqlite3"
        stores = [SQLiteHistoryStore(path) for _ in range(3)]
    else:
        server: MariaDB = request.getfixturevalue("mariadb")
        database = server.new_database_name()  # does not exist yet: migrate creates it
        stores = [server.store(database) for _ in range(3)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        c = conv()
        await stores[0].append_turn(turn(c))
        assert len(await stores[1].conversation(c, owner=LEGACY_OWNER)) == 1
    finally:
        for s in stores:
            await s.aclose()
    if engine == "sqlite":
        import sqlite3

        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT version FROM schema_migrations").fetchall()
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    else:
        rows = await server.query(database, "SELECT version FROM schema_migrations")
        [(charset,)] = await server.query(
            database,
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            database,
        )
        assert charset == "utf8mb4"
    assert sorted(r[0] for r in rows) == list(range(1, latest_version() + 1))


def test_records_are_checked_before_they_reach_a_store() -> None:
    ok = turn("c")
    assert validate_turn(ok) == ok
    with pytest.raises(ValueError, match="conversation_id"):
        turn("x" * 129)
    with pytest.raises(ValueError, match="channel"):
        turn("c", channel="sms")
    with pytest.raises(ValueError, match="timezone-aware"):
        turn("c", created_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="prompt_tokens"):
        turn("c", prompt_tokens=-1)
    with pytest.raises(ValueError, match="Unexpected keyword"):
        turn("c", colour="blue")
    assert turn("c", total_ms=12.4).total_ms == 12


def test_mysql_store_reads_the_seed_settings() -> None:
    from qwen_gateway.config import Settings

    settings = Settings(
        db_host="db.internal", db_port=3307, db_user="qwen", db_password="pw", db_name="chat"
    )
    store = MySQLHistoryStore.from_settings(settings)
    assert (store.host, store.port, store.database) == ("db.internal", 3307, "chat")
    assert "pw" not in repr(store)

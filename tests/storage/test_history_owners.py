"""Conversations bound to their owner (schema version 2), on both engines: scoping, the migration of version-1
databases, and journal records written by versions that knew no owner."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from qwen_gateway.storage import HistoryStore, Outbox, SQLiteHistoryStore, TurnRecord
from qwen_gateway.storage.history import ANONYMOUS_OWNER, LEGACY_OWNER, encode_turn
from qwen_gateway.storage.migrations import MIGRATIONS, Guarded, latest_version
from tests.storage.conftest import MariaDB

ALICE = "k" + "a" * 32
BOB = "k" + "b" * 32


def conv() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


def turn(conversation_id: str, text: str, **fields: object) -> TurnRecord:
    values: dict[str, object] = {
        "conversation_id": conversation_id,
        "channel": "chat",
        "model": "qwen-plus",
        "user_content": f"q {text}",
        "assistant_content": f"a {text}",
    }
    values.update(fields)
    return TurnRecord.new(**values)


async def test_the_same_id_under_two_owners_is_two_conversations(history: HistoryStore) -> None:
    c = conv()
    await history.append_turn(turn(c, "alice 1", owner=ALICE))
    await history.append_turn(turn(c, "bob 1", owner=BOB, channel="audio"))
    await history.append_turn(turn(c, "alice 2", owner=ALICE))

    alice = await history.conversation(c, owner=ALICE)
    bob = await history.conversation(c, owner=BOB)
    assert [t.user_content for t in alice] == ["q alice 1", "q alice 2"]
    assert [t.owner for t in alice] == [ALICE, ALICE]
    assert [t.user_content for t in bob] == ["q bob 1"]
    assert [m.content for m in await history.recent_messages(c, 10, owner=BOB)] == [
        "q bob 1",
        "a bob 1",
    ]
    assert len(await history.recent_messages(c, 10, owner=ALICE)) == 4
    # a third caller naming the id sees nothing at all, not even that it exists
    assert await history.conversation(c, owner=ANONYMOUS_OWNER) == []
    assert await history.recent_messages(c, 10, owner=ANONYMOUS_OWNER) == []
    assert await history.delete_conversation(c, owner=ANONYMOUS_OWNER) is False

    assert await history.delete_conversation(c, owner=BOB) is True
    assert await history.conversation(c, owner=BOB) == []
    assert len(await history.conversation(c, owner=ALICE)) == 2


def test_owners_are_checked_and_old_records_are_legacy() -> None:
    with pytest.raises(ValueError, match="owner"):
        turn(conv(), "x", owner="has space")
    with pytest.raises(ValueError, match="owner"):
        turn(conv(), "x", owner="")
    assert turn(conv(), "x").owner == LEGACY_OWNER


# ------------------------------------------------------------------------------------------ journal


async def test_journal_records_of_an_older_version_drain_as_legacy(
    history: HistoryStore, tmp_path: Path
) -> None:
    """A record journaled by a version without owners (its JSON has no ``owner``) still drains: legacy."""
    path = tmp_path / "journal.sqlite3"
    c = conv()
    old = json.loads(encode_turn(turn(c, "before the upgrade")))
    del old["owner"]
    outbox = Outbox(path, history)
    await outbox.open()
    await outbox.aclose()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO journal (write_id, payload, submitted_at) VALUES (?, ?, ?)",
            (old["write_id"], json.dumps(old).encode(), time.time()),
        )
    async with Outbox(path, history) as outbox:
        await outbox.drained()
        assert outbox.status().dead_letters == 0
    [stored] = await history.conversation(c, owner=LEGACY_OWNER)
    assert stored.user_content == "q before the upgrade"
    assert stored.write_id == old["write_id"]


# ------------------------------------------------------------------------------------------ migration


def _v1_sqlite(path: Path) -> None:
    """A database as version 1 of the schema left it, with two conversations and a deleted turn's id used."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys=ON")
    db.execute(
        "CREATE TABLE schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    for statement in MIGRATIONS[0].sqlite:
        db.execute(statement)
    db.execute("INSERT INTO schema_migrations VALUES (1, 'v1', '2024-01-01 00:00:00.000000')")
    when = "2024-01-01 12:00:00.000000"
    for cid in ("conv-old", "conv-other"):
        db.execute("INSERT INTO conversations VALUES (?, 'chat', ?, ?, 0)", (cid, when, when))
    for n, cid in enumerate(("conv-old", "conv-old", "conv-other", "conv-old"), 1):
        db.execute(
            "INSERT INTO turns (write_id, conversation_id, channel, model, status, created_at)"
            " VALUES (?, ?, 'audio', 'qwen-plus', 'completed', ?)",
            (f"w{n}", cid, when),
        )
        db.execute(
            "INSERT INTO messages (turn_id, conversation_id, role, content, created_at)"
            " VALUES (?, ?, 'user', ?, ?), (?, ?, 'assistant', ?, ?)",
            (n, cid, f"old q{n}", when, n, cid, f"old a{n}", when),
        )
    # the last turn was deleted: AUTOINCREMENT must not hand its id out again
    db.execute("DELETE FROM messages WHERE turn_id = 4")
    db.execute("DELETE FROM turns WHERE id = 4")
    db.close()


async def test_sqlite_version_1_rows_become_legacy_and_the_schema_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    _v1_sqlite(path)
    store = SQLiteHistoryStore(path)
    try:
        await store.migrate()
        old = await store.conversation("conv-old", owner=LEGACY_OWNER)
        assert [(t.write_id, t.user_content, t.owner) for t in old] == [
            ("w1", "old q1", LEGACY_OWNER),
            ("w2", "old q2", LEGACY_OWNER),
        ]
        assert len(await store.recent_messages("conv-other", 10, owner=LEGACY_OWNER)) == 2
        # a caller naming an old id gets a conversation of its own
        assert await store.conversation("conv-old", owner=ALICE) == []
        assert await store.append_turn(turn("conv-old", "new", owner=ALICE))
        assert [t.user_content for t in await store.conversation("conv-old", owner=ALICE)] == [
            "q new"
        ]
        assert len(await store.conversation("conv-old", owner=LEGACY_OWNER)) == 2
        # version 3: realtime turns (the rebuilt table keeps the old rows and ids)
        assert await store.append_turn(turn("conv-rt", "spoken", owner=ALICE, channel="realtime"))
        assert [t.channel for t in await store.conversation("conv-rt", owner=ALICE)] == ["realtime"]
        assert await store.delete_conversation("conv-other", owner=LEGACY_OWNER) is True
    finally:
        await store.aclose()

    with sqlite3.connect(path) as db:
        versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations")]
        assert versions == [1, 2, 3] == list(range(1, latest_version() + 1))
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert {r[0] for r in db.execute("SELECT name FROM sqlite_master")} >= {
            "turns_by_conversation",
            "messages_by_conversation",
            "turns_by_session",
        }
        assert not {r[0] for r in db.execute("SELECT name FROM sqlite_master")} & {
            "turns_v2",
            "turns_v3",
            "conversations_v2",
        }
        new_id = db.execute("SELECT id FROM turns WHERE owner = ?", (ALICE,)).fetchone()[0]
        assert new_id > 4
        # the new foreign key holds: a turn of a conversation that does not exist is refused
        db.execute("PRAGMA foreign_keys=ON")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO turns (write_id, owner, conversation_id, channel, model, status,"
                " created_at) VALUES ('w9', 'nobody', 'conv-old', 'chat', 'm', 'completed', 'x')"
            )


async def _v1_mariadb(mariadb: MariaDB, database: str) -> None:
    import asyncmy

    conn = await asyncmy.connect(
        host=mariadb.host,
        port=mariadb.port,
        user=mariadb.user,
        password=mariadb.password,
        autocommit=True,
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
            await cur.execute(f"USE `{database}`")
            await cur.execute(
                "CREATE TABLE schema_migrations (version INT NOT NULL PRIMARY KEY,"
                " name VARCHAR(200) NOT NULL, applied_at DATETIME(6) NOT NULL)"
            )
            for statement in MIGRATIONS[0].mysql:
                assert isinstance(statement, str)
                await cur.execute(statement)
            await cur.execute("INSERT INTO schema_migrations VALUES (1, 'v1', NOW(6))")
            for cid in ("conv-old", "conv-other"):
                await cur.execute(
                    "INSERT INTO conversations VALUES (%s, 'chat', NOW(6), NOW(6), 0)", (cid,)
                )
            for n, cid in enumerate(("conv-old", "conv-old", "conv-other"), 1):
                await cur.execute(
                    "INSERT INTO turns (id, write_id, conversation_id, channel, model, status,"
                    " created_at) VALUES (%s, %s, %s, 'audio', 'qwen-plus', 'completed', NOW(6))",
                    (n, f"w{n}", cid),
                )
                await cur.execute(
                    "INSERT INTO messages (turn_id, conversation_id, role, content, created_at)"
                    " VALUES (%s, %s, 'user', %s, NOW(6)), (%s, %s, 'assistant', %s, NOW(6))",
                    (n, cid, f"old q{n}", n, cid, f"old a{n}"),
                )
    finally:
        conn.close()


@pytest.mark.parametrize("interrupted_after", [0, 2])
async def test_mariadb_version_1_rows_become_legacy_and_the_schema_goes_on(
    mariadb: MariaDB, interrupted_after: int
) -> None:
    """Version 1 data migrates to version 2, also when a process died after some of its statements."""
    database = mariadb.new_database_name()
    await _v1_mariadb(mariadb, database)
    v2 = MIGRATIONS[1].mysql
    for step in v2[:interrupted_after]:  # what a process that died half-way had done
        assert isinstance(step, Guarded)
        (needed,) = (await mariadb.query(database, step.when))[0]
        assert needed
        await mariadb.query(database, step.sql)

    store = mariadb.store(database)
    try:
        await store.migrate()
        old = await store.conversation("conv-old", owner=LEGACY_OWNER)
        assert [(t.write_id, t.user_content, t.owner) for t in old] == [
            ("w1", "old q1", LEGACY_OWNER),
            ("w2", "old q2", LEGACY_OWNER),
        ]
        assert await store.conversation("conv-old", owner=ALICE) == []
        assert await store.append_turn(turn("conv-old", "new", owner=ALICE))
        assert await store.append_turn(turn("conv-old", "bob", owner=BOB))
        assert [t.user_content for t in await store.conversation("conv-old", owner=ALICE)] == [
            "q new"
        ]
        assert len(await store.recent_messages("conv-old", 10, owner=LEGACY_OWNER)) == 4
        assert await store.append_turn(turn("conv-rt", "x", owner=ALICE, channel="realtime"))
    finally:
        await store.aclose()

    versions = await mariadb.query(database, "SELECT version FROM schema_migrations ORDER BY 1")
    assert [v for (v,) in versions] == [1, 2, 3]
    # every guard now says "done": running version 2 again changes nothing
    for step in v2:
        assert isinstance(step, Guarded)
        assert (await mariadb.query(database, step.when))[0][0] == 0
    keys = await mariadb.query(
        database,
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE()"
        " AND TABLE_NAME = 'conversations' AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
    )
    assert [k for (k,) in keys] == ["owner", "id"]
    fk = await mariadb.query(
        database,
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE()"
        " AND TABLE_NAME = 'turns' AND CONSTRAINT_NAME = 'turns_conversation_fk'"
        " ORDER BY ORDINAL_POSITION",
    )
    assert [k for (k,) in fk] == ["owner", "conversation_id"]


def test_owner_field_is_in_the_published_record_shape() -> None:
    """The journal format stays readable both ways: the owner is one optional JSON field."""
    data = json.loads(encode_turn(turn(conv(), "x", owner=ALICE)))
    assert data["owner"] == ALICE
    del data["owner"]
    assert msgspec.json.decode(json.dumps(data), type=TurnRecord).owner == LEGACY_OWNER


async def test_realtime_turns_are_stored(history: HistoryStore) -> None:
    c = conv()
    assert await history.append_turn(turn(c, "hello", owner=ALICE, channel="realtime"))
    (stored,) = await history.conversation(c, owner=ALICE)
    assert stored.channel == "realtime" and stored.user_content == "q hello"

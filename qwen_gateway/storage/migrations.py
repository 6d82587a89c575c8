"""The history schema as an ordered list of versioned migrations, one SQL dialect per engine.

Each engine records applied versions in ``schema_migrations`` and applies the missing ones at start, under a lock
(SQLite: ``BEGIN IMMEDIATE``; MySQL: ``GET_LOCK``). Migrations are append-only: never edit a released one, add the
next version. MySQL DDL commits implicitly, so every MySQL statement here must be safe to run twice
(``IF NOT EXISTS``) in case a process died half-way through a migration.

A MySQL step that cannot say ``IF NOT EXISTS`` itself (a primary key or foreign key changed; MySQL 8 has no
``ADD COLUMN IF NOT EXISTS``) is a :class:`Guarded` statement: it runs only when its ``when`` query (on
``information_schema`` of the current database) returns a non-zero count.

Tables (both engines):

- ``conversations``: one row per (owner, conversation id) (channel of its first turn, created/updated time, turn
  count);
- ``turns``: one row per exchange, unique ``write_id``; owner, model, channel, status, request/session ids, usage
  tokens, latencies (ms), object keys (user audio, user image, spoken answer), created time;
- ``messages``: the turn's user and assistant messages (owner, role, content), in conversation order.

Version 3 adds the ``realtime`` channel (``/v1/realtime`` turns).

Version 2 binds conversations to their caller: every row carries an ``owner`` (a keyed hash of the caller's key,
``anonymous`` in open mode), and a conversation is the pair (owner, id): the same id under two owners is two
conversations. Rows of version 1 get the owner ``legacy``, which no caller has (see ``history.LEGACY_OWNER``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Guarded", "Migration", "latest_version"]


@dataclass(frozen=True)
class Guarded:
    """A MySQL statement run only when ``when`` (a ``SELECT COUNT(*) ...``, no parameters) returns non-zero."""

    sql: str
    when: str


@dataclass(frozen=True)
class Migration:
    """One schema version: its statements for each engine.

    SQLite statements run in one transaction with foreign keys off (checked with ``foreign_key_check`` before the
    commit), so tables can be rebuilt; MySQL statements commit one by one and must each be safe to run twice.
    """

    version: int
    name: str
    sqlite: tuple[str, ...]
    mysql: tuple[str | Guarded, ...]


_SQLITE_V1 = (
    """
    CREATE TABLE conversations (
        id          TEXT PRIMARY KEY,
        channel     TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        turn_count  INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE turns (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        write_id           TEXT NOT NULL UNIQUE,
        conversation_id    TEXT NOT NULL REFERENCES conversations(id),
        channel            TEXT NOT NULL CHECK (channel IN ('chat', 'audio', 'vlm')),
        model              TEXT NOT NULL,
        status             TEXT NOT NULL CHECK (status IN ('completed', 'interrupted', 'failed')),
        error_code         TEXT,
        request_id         TEXT NOT NULL DEFAULT '',
        session_id         TEXT NOT NULL DEFAULT '',
        prompt_tokens      INTEGER NOT NULL DEFAULT 0,
        completion_tokens  INTEGER NOT NULL DEFAULT 0,
        total_tokens       INTEGER NOT NULL DEFAULT 0,
        recognition_ms     INTEGER,
        first_token_ms     INTEGER,
        first_audio_ms     INTEGER,
        total_ms           INTEGER,
        audio_key          TEXT,
        image_key          TEXT,
        reply_audio_key    TEXT,
        created_at         TEXT NOT NULL
    )
    """,
    "CREATE INDEX turns_by_conversation ON turns (conversation_id, id)",
    "CREATE INDEX turns_by_session ON turns (session_id)",
    """
    CREATE TABLE messages (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        turn_id          INTEGER NOT NULL REFERENCES turns(id),
        conversation_id  TEXT NOT NULL,
        role             TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content          TEXT NOT NULL,
        created_at       TEXT NOT NULL
    )
    """,
    "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
    "CREATE INDEX messages_by_turn ON messages (turn_id)",
)

#: The ``turns`` columns of version 1 but its id (copied as they are by version 2).
_V1_TURN_COLUMNS = (
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

_MYSQL_TABLE = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"

_MYSQL_V1 = (
    f"""
    CREATE TABLE IF NOT EXISTS conversations (
        id          VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        channel     VARCHAR(16) NOT NULL,
        created_at  DATETIME(6) NOT NULL,
        updated_at  DATETIME(6) NOT NULL,
        turn_count  INT UNSIGNED NOT NULL DEFAULT 0,
        PRIMARY KEY (id)
    ) {_MYSQL_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS turns (
        id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
        write_id           VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        conversation_id    VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        channel            ENUM('chat', 'audio', 'vlm') NOT NULL,
        model              VARCHAR(128) NOT NULL,
        status             ENUM('completed', 'interrupted', 'failed') NOT NULL,
        error_code         VARCHAR(128) NULL,
        request_id         VARCHAR(128) NOT NULL DEFAULT '',
        session_id         VARCHAR(128) NOT NULL DEFAULT '',
        prompt_tokens      BIGINT UNSIGNED NOT NULL DEFAULT 0,
        completion_tokens  BIGINT UNSIGNED NOT NULL DEFAULT 0,
        total_tokens       BIGINT UNSIGNED NOT NULL DEFAULT 0,
        recognition_ms     INT UNSIGNED NULL,
        first_token_ms     INT UNSIGNED NULL,
        first_audio_ms     INT UNSIGNED NULL,
        total_ms           INT UNSIGNED NULL,
        audio_key          VARCHAR(255) NULL,
        image_key          VARCHAR(255) NULL,
        reply_audio_key    VARCHAR(255) NULL,
        created_at         DATETIME(6) NOT NULL,
        PRIMARY KEY (id),
        UNIQUE KEY turns_write_id (write_id),
        KEY turns_by_conversation (conversation_id, id),
        KEY turns_by_session (session_id),
        CONSTRAINT turns_conversation_fk FOREIGN KEY (conversation_id) REFERENCES conversations (id)
    ) {_MYSQL_TABLE}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS messages (
        id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
        turn_id          BIGINT UNSIGNED NOT NULL,
        conversation_id  VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        role             ENUM('user', 'assistant') NOT NULL,
        content          MEDIUMTEXT NOT NULL,
        created_at       DATETIME(6) NOT NULL,
        PRIMARY KEY (id),
        KEY messages_by_conversation (conversation_id, id),
        KEY messages_by_turn (turn_id),
        CONSTRAINT messages_turn_fk FOREIGN KEY (turn_id) REFERENCES turns (id)
    ) {_MYSQL_TABLE}
    """,
)

# --- version 2: conversations bound to their owner -----------------------------------------------------------
# SQLite cannot change a primary key or a foreign key in place: conversations and turns are rebuilt (the
# documented "make a new table, copy, drop, rename" procedure; turn ids are kept, so messages.turn_id still holds).


def _sqlite_turns_table(name: str, channels: tuple[str, ...]) -> str:
    """SQLite's ``turns`` table since version 2 (owner-bound), under ``name``, taking ``channels``: SQLite cannot
    change a CHECK constraint in place, so a migration that widens it builds the table anew and copies the rows."""
    allowed = ", ".join(f"'{c}'" for c in channels)
    return f"""
    CREATE TABLE {name} (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        write_id           TEXT NOT NULL UNIQUE,
        owner              TEXT NOT NULL DEFAULT 'legacy',
        conversation_id    TEXT NOT NULL,
        channel            TEXT NOT NULL CHECK (channel IN ({allowed})),
        model              TEXT NOT NULL,
        status             TEXT NOT NULL CHECK (status IN ('completed', 'interrupted', 'failed')),
        error_code         TEXT,
        request_id         TEXT NOT NULL DEFAULT '',
        session_id         TEXT NOT NULL DEFAULT '',
        prompt_tokens      INTEGER NOT NULL DEFAULT 0,
        completion_tokens  INTEGER NOT NULL DEFAULT 0,
        total_tokens       INTEGER NOT NULL DEFAULT 0,
        recognition_ms     INTEGER,
        first_token_ms     INTEGER,
        first_audio_ms     INTEGER,
        total_ms           INTEGER,
        audio_key          TEXT,
        image_key          TEXT,
        reply_audio_key    TEXT,
        created_at         TEXT NOT NULL,
        FOREIGN KEY (owner, conversation_id) REFERENCES conversations (owner, id)
    )
    """


def _continue_turn_ids(name: str) -> str:
    """AUTOINCREMENT never reuses an id: the rebuilt table ``name`` continues from the old ``turns``'s
    high-water mark."""
    return f"""
    UPDATE sqlite_sequence
    SET seq = max(seq, (SELECT ifnull(max(seq), 0) FROM sqlite_sequence WHERE name = 'turns'))
    WHERE name = '{name}'
    """


_SQLITE_V2 = (
    """
    CREATE TABLE conversations_v2 (
        owner       TEXT NOT NULL DEFAULT 'legacy',
        id          TEXT NOT NULL,
        channel     TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        turn_count  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (owner, id)
    )
    """,
    """
    INSERT INTO conversations_v2 (owner, id, channel, created_at, updated_at, turn_count)
    SELECT 'legacy', id, channel, created_at, updated_at, turn_count FROM conversations
    """,
    _sqlite_turns_table("turns_v2", ("chat", "audio", "vlm")),
    f"""
    INSERT INTO turns_v2 (id, owner, {", ".join(_V1_TURN_COLUMNS)})
    SELECT id, 'legacy', {", ".join(_V1_TURN_COLUMNS)} FROM turns ORDER BY id
    """,
    "ALTER TABLE messages ADD COLUMN owner TEXT NOT NULL DEFAULT 'legacy'",
    _continue_turn_ids("turns_v2"),
    "DROP TABLE turns",
    "DROP TABLE conversations",
    "ALTER TABLE conversations_v2 RENAME TO conversations",
    "ALTER TABLE turns_v2 RENAME TO turns",
    "CREATE INDEX turns_by_conversation ON turns (owner, conversation_id, id)",
    "CREATE INDEX turns_by_session ON turns (session_id)",
    "DROP INDEX messages_by_conversation",
    "CREATE INDEX messages_by_conversation ON messages (owner, conversation_id, id)",
)

_OWNER_MYSQL = "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'legacy'"


def _mysql_count(where: str) -> str:
    return f"SELECT COUNT(*) FROM information_schema.{where} AND TABLE_SCHEMA = DATABASE()"


def _has_owner(table: str) -> str:
    return _mysql_count(f"COLUMNS WHERE TABLE_NAME = '{table}' AND COLUMN_NAME = 'owner'")


def _lacks_owner(table: str) -> str:
    return f"SELECT ({_has_owner(table)}) = 0"


_MYSQL_V2 = (
    # the old foreign key names conversations(id), which stops being a key: dropped first (only the old one:
    # the new constraint has the same name and comes once turns has its owner)
    Guarded(
        "ALTER TABLE turns DROP FOREIGN KEY turns_conversation_fk",
        when=(
            "SELECT ("
            + _mysql_count(
                "TABLE_CONSTRAINTS WHERE TABLE_NAME = 'turns'"
                " AND CONSTRAINT_NAME = 'turns_conversation_fk'"
            )
            + f") > 0 AND ({_has_owner('turns')}) = 0"
        ),
    ),
    Guarded(
        f"ALTER TABLE conversations ADD COLUMN owner {_OWNER_MYSQL} FIRST,"
        " DROP PRIMARY KEY, ADD PRIMARY KEY (owner, id)",
        when=_lacks_owner("conversations"),
    ),
    Guarded(
        f"ALTER TABLE turns ADD COLUMN owner {_OWNER_MYSQL} AFTER write_id,"
        " DROP INDEX turns_by_conversation,"
        " ADD INDEX turns_by_conversation (owner, conversation_id, id),"
        " ADD CONSTRAINT turns_conversation_fk FOREIGN KEY (owner, conversation_id)"
        " REFERENCES conversations (owner, id)",
        when=_lacks_owner("turns"),
    ),
    Guarded(
        f"ALTER TABLE messages ADD COLUMN owner {_OWNER_MYSQL} AFTER turn_id,"
        " DROP INDEX messages_by_conversation,"
        " ADD INDEX messages_by_conversation (owner, conversation_id, id)",
        when=_lacks_owner("messages"),
    ),
)

# --- version 3: the realtime channel ---------------------------------------------------------------------
# ``turns.channel`` also takes ``realtime`` (``/v1/realtime``). SQLite cannot change a CHECK constraint in place:
# turns is rebuilt as in version 2 (same columns, ids kept); MySQL widens its ENUM (safe to run twice).

_TURN_COLUMNS_V2 = ("id", "owner", *_V1_TURN_COLUMNS)

_SQLITE_V3 = (
    _sqlite_turns_table("turns_v3", ("chat", "audio", "vlm", "realtime")),
    f"""
    INSERT INTO turns_v3 ({", ".join(_TURN_COLUMNS_V2)})
    SELECT {", ".join(_TURN_COLUMNS_V2)} FROM turns ORDER BY id
    """,
    _continue_turn_ids("turns_v3"),
    "DROP TABLE turns",
    "ALTER TABLE turns_v3 RENAME TO turns",
    "CREATE INDEX turns_by_conversation ON turns (owner, conversation_id, id)",
    "CREATE INDEX turns_by_session ON turns (session_id)",
)

_MYSQL_V3 = (
    "ALTER TABLE turns MODIFY COLUMN channel ENUM('chat', 'audio', 'vlm', 'realtime') NOT NULL",
)

#: Every schema version, oldest first. Append only.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "conversations, turns, messages", sqlite=_SQLITE_V1, mysql=_MYSQL_V1),
    Migration(2, "conversations bound to their owner", sqlite=_SQLITE_V2, mysql=_MYSQL_V2),
    Migration(3, "the realtime channel", sqlite=_SQLITE_V3, mysql=_MYSQL_V3),
)


def latest_version() -> int:
    """The schema version this code writes."""
    return MIGRATIONS[-1].version

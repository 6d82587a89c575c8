"""The history schema as an ordered list of versioned migrations, one SQL dialect per engine.

Each engine records applied versions in ``schema_migrations`` and applies the missing ones at start, under a lock
(SQLite: ``BEGIN IMMEDIATE``; MySQL: ``GET_LOCK``). Migrations are append-only: never edit a released one, add the
next version. MySQL DDL commits implicitly, so every MySQL statement here must be safe to run twice
(``IF NOT EXISTS``) in case a process died half-way through a migration.

Tables (both engines):

- ``conversations``: one row per conversation id (channel of its first turn, created/updated time, turn count);
- ``turns``: one row per exchange, unique ``write_id``; model, channel, status, request/session ids, usage
  tokens, latencies (ms), object keys (user audio, user image, spoken answer), created time;
- ``messages``: the turn's user and assistant messages (role, content), in conversation order.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration", "latest_version"]


@dataclass(frozen=True)
class Migration:
    """One schema version: its statements for each engine."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    mysql: tuple[str, ...]


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

#: Every schema version, oldest first. Append only.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "conversations, turns, messages", sqlite=_SQLITE_V1, mysql=_MYSQL_V1),
)


def latest_version() -> int:
    """The schema version this code writes."""
    return MIGRATIONS[-1].version

"""What the SQLite and MySQL history engines share: the turn columns, the statements that differ only in the
driver's placeholder, and the mapping between rows and :class:`~qwen_gateway.storage.history.TurnRecord`.

The engines keep what really differs between them: how a time is stored (SQLite text, MySQL ``DATETIME(6)``),
how a conversation's first turn and a duplicate ``write_id`` are handled (``ON CONFLICT`` / ``ON DUPLICATE KEY``),
transactions, connections and the mapping of driver errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qwen_gateway.storage.history import Message, TurnRecord

__all__ = [
    "TURN_COLUMNS",
    "HistorySql",
    "assemble_turns",
    "message_rows",
    "messages_oldest_first",
    "turn_values",
    "utc_naive",
]

#: The ``turns`` columns a :class:`TurnRecord` maps to, in the order of :func:`turn_values` and ``select_turns``.
TURN_COLUMNS = (
    "write_id",
    "owner",
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


@dataclass(frozen=True, slots=True)
class HistorySql:
    """The statements both engines run unchanged but for the driver's parameter placeholder.

    Attributes:
        insert_turn: one ``turns`` row, parameters :func:`turn_values` (SQLite appends its conflict clause).
        insert_message: one ``messages`` row, parameters a :func:`message_rows` item.
        select_turns: ``id`` then :data:`TURN_COLUMNS` of a conversation's turns in stored order; parameters
            (owner, conversation id), as for every statement naming a conversation.
        select_messages: ``turn_id, role, content`` of a conversation's messages in stored order.
        recent_messages: ``role, content`` of a conversation's last messages, newest first, failed turns
            left out; parameters (owner, conversation id, limit).
        delete_conversation: messages, turns, then the conversation row (whose row count says whether
            anything was deleted).
        record_migration: a ``schema_migrations`` row (version, name, applied_at).
    """

    insert_turn: str
    insert_message: str
    select_turns: str
    select_messages: str
    recent_messages: str
    delete_conversation: tuple[str, str, str]
    record_migration: str

    @classmethod
    def with_placeholder(cls, p: str) -> HistorySql:
        """The statements for a driver whose parameter placeholder is ``p`` (``?`` or ``%s``)."""
        columns = ", ".join(TURN_COLUMNS)
        return cls(
            insert_turn=f"INSERT INTO turns ({columns}) VALUES ({', '.join([p] * len(TURN_COLUMNS))})",
            insert_message=(
                "INSERT INTO messages (turn_id, owner, conversation_id, role, content, created_at)"
                f" VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
            ),
            select_turns=(
                f"SELECT id, {columns} FROM turns"
                f" WHERE owner = {p} AND conversation_id = {p} ORDER BY id"
            ),
            select_messages=(
                "SELECT turn_id, role, content FROM messages"
                f" WHERE owner = {p} AND conversation_id = {p} ORDER BY id"
            ),
            recent_messages=(
                "SELECT m.role, m.content FROM messages m JOIN turns t ON t.id = m.turn_id"
                f" WHERE m.owner = {p} AND m.conversation_id = {p} AND t.status <> 'failed'"
                f" ORDER BY m.id DESC LIMIT {p}"
            ),
            delete_conversation=(
                f"DELETE FROM messages WHERE owner = {p} AND conversation_id = {p}",
                f"DELETE FROM turns WHERE owner = {p} AND conversation_id = {p}",
                f"DELETE FROM conversations WHERE owner = {p} AND id = {p}",
            ),
            record_migration=(
                f"INSERT INTO schema_migrations (version, name, applied_at) VALUES ({p}, {p}, {p})"
            ),
        )


def utc_naive(value: datetime) -> datetime:
    """``value`` in UTC without its zone, as both engines store times. Raises ``ValueError`` when it is naive."""
    if value.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None)


def turn_values(turn: TurnRecord, created_at: object) -> tuple[object, ...]:
    """The turn's values in :data:`TURN_COLUMNS` order, ``created_at`` as the engine stores it."""
    return tuple(
        created_at if name == "created_at" else getattr(turn, name) for name in TURN_COLUMNS
    )


def message_rows(
    turn: TurnRecord, turn_id: int | None, created_at: object
) -> list[tuple[object, ...]]:
    """The ``insert_message`` parameters of the turn's messages: what the user and the assistant said,
    empty texts left out."""
    return [
        (turn_id, turn.owner, turn.conversation_id, role, content, created_at)
        for role, content in (("user", turn.user_content), ("assistant", turn.assistant_content))
        if content
    ]


def messages_oldest_first(rows: Sequence[Any]) -> list[Message]:
    """The ``recent_messages`` rows (newest first) as messages, oldest first."""
    return [Message(role, content) for role, content in reversed(rows)]


def assemble_turns(
    turns: Iterable[Sequence[Any]],
    messages: Iterable[Sequence[Any]],
    from_db_time: Callable[[Any], datetime],
) -> list[TurnRecord]:
    """The records of ``select_turns`` rows, their texts taken from ``select_messages`` rows.

    ``from_db_time`` turns a stored ``created_at`` back into an aware UTC datetime.
    """
    contents: dict[int, dict[str, str]] = {}
    for turn_id, role, content in messages:
        contents.setdefault(turn_id, {})[role] = content
    out: list[TurnRecord] = []
    for row in turns:
        turn_id, *values = row
        fields = dict(zip(TURN_COLUMNS, values, strict=True))
        fields["created_at"] = from_db_time(fields["created_at"])
        said = contents.get(turn_id, {})
        out.append(
            TurnRecord(
                user_content=said.get("user", ""),
                assistant_content=said.get("assistant", ""),
                **fields,
            )
        )
    return out

"""Conversation history: the records, the store interface both engines implement, and their errors.

Engines: :class:`qwen_gateway.storage.sqlite_history.SQLiteHistoryStore` (embedded default, a file under the data
dir) and :class:`qwen_gateway.storage.mysql_history.MySQLHistoryStore` (MySQL/MariaDB via asyncmy, when
``DB_HOST`` is set). Both keep the same schema (see ``migrations.py``) and pass the same test suite.

A conversation belongs to an *owner*: the caller that wrote it, as an opaque id (a keyed hash of its key, never
the key; :data:`ANONYMOUS_OWNER` in open keyless mode; :data:`LEGACY_OWNER` for rows written before version 2 of
the schema). A conversation is the pair (owner, conversation id): every read and delete names both, so the same id
under another owner is another conversation, and nobody learns whether someone else's exists.

One *turn* is one exchange: what the user said or typed and what the assistant answered, with the turn's model,
channel, usage, latencies and the keys of the objects it stored. Turns are written through the
:class:`qwen_gateway.storage.outbox.Outbox`, never straight from a request path.

Errors::

    StorageError (qwen_gateway.errors)
    ├── HistoryUnavailable   the database cannot be reached or timed out: retry later
    └── HistoryRejected      the database refused this record: retrying it will not help
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

import msgspec

from qwen_gateway.errors import StorageError

__all__ = [
    "ANONYMOUS_OWNER",
    "LEGACY_OWNER",
    "Channel",
    "HistoryRejected",
    "HistoryStore",
    "HistoryUnavailable",
    "Message",
    "OwnerId",
    "TurnRecord",
    "TurnStatus",
    "decode_turn",
    "encode_turn",
    "validate_turn",
]

#: Where a turn came from: the OpenAI-compatible chat API, the audio socket, the VLM socket, ``/v1/realtime``.
Channel = Literal["chat", "audio", "vlm", "realtime"]
#: How the assistant's answer ended.
TurnStatus = Literal["completed", "interrupted", "failed"]

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, description="conversation id")]
#: Who a conversation belongs to (never a key: see ``qwen_gateway.auth.KeyChecker.owner``).
OwnerId = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="owner of the conversation"),
]

#: Owner of the rows (and journal records) written before conversations were bound to their caller: no caller
#: has it, so nobody reads them back as context.
LEGACY_OWNER = "legacy"
#: Owner of every conversation in open keyless mode (no gateway keys, no pass-through).
ANONYMOUS_OWNER = "anonymous"
WriteId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_-]{1,64}$", description="unique id of one write (a uuid4 hex)"
    ),
]
ShortText = Annotated[str, msgspec.Meta(max_length=128)]
ObjectKey = Annotated[str, msgspec.Meta(max_length=255)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1, description="milliseconds")]
Text = Annotated[str, msgspec.Meta(max_length=4 * 1024 * 1024)]


_LATENCIES = ("recognition_ms", "first_token_ms", "first_audio_ms", "total_ms")


def _new_write_id() -> str:
    return uuid.uuid4().hex


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TurnRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One exchange of a conversation, as stored.

    ``write_id`` makes writes idempotent: storing the same record twice stores it once. ``created_at`` is an
    aware UTC datetime (microsecond precision survives both engines).
    """

    conversation_id: Id
    channel: Channel
    #: the caller the conversation belongs to (records journaled by older versions have none: legacy)
    owner: OwnerId = LEGACY_OWNER
    model: ShortText
    user_content: Text
    assistant_content: Text = ""
    status: TurnStatus = "completed"
    #: machine code of the failure when ``status`` is ``failed`` (or ``interrupted`` for a known reason).
    error_code: ShortText | None = None
    request_id: ShortText = ""
    session_id: ShortText = ""
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    total_tokens: Count = 0
    #: end of the user's audio to final recognition result.
    recognition_ms: Millis | None = None
    #: start of the chat call to its first text delta.
    first_token_ms: Millis | None = None
    #: start of the turn to the first audio byte sent to the client.
    first_audio_ms: Millis | None = None
    total_ms: Millis | None = None
    #: object-store keys of the user's audio, the user's image, the spoken answer.
    audio_key: ObjectKey | None = None
    image_key: ObjectKey | None = None
    reply_audio_key: ObjectKey | None = None
    write_id: WriteId = msgspec.field(default_factory=_new_write_id)
    created_at: datetime = msgspec.field(default_factory=_utcnow)

    @classmethod
    def new(cls, **fields: Any) -> TurnRecord:
        """Build a checked record. Latencies may be given as float milliseconds (rounded).

        Raises ``ValueError`` naming the problem (unknown field, wrong type, limit exceeded).
        """
        for name in _LATENCIES:
            value = fields.get(name)
            if isinstance(value, float):
                fields[name] = max(0, round(value))
        try:
            turn = cls(**fields)
        except TypeError as exc:
            raise ValueError(f"invalid TurnRecord: {exc}") from None
        return validate_turn(turn)


class Message(msgspec.Struct, frozen=True):
    """A message of the conversation as the chat model sees it."""

    role: Literal["user", "assistant"]
    content: str

    def as_openai(self) -> dict[str, str]:
        """The message in the OpenAI ``messages`` shape."""
        return {"role": self.role, "content": self.content}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TurnRecord)


def encode_turn(turn: TurnRecord) -> bytes:
    """The record as JSON (the journal's format)."""
    return _encoder.encode(turn)


def decode_turn(data: bytes) -> TurnRecord:
    """Parse and validate a record written by :func:`encode_turn`.

    Raises:
        msgspec.ValidationError / msgspec.DecodeError: the bytes are not a valid record.
    """
    return _decoder.decode(data)


def validate_turn(turn: TurnRecord) -> TurnRecord:
    """Check the record's constraints (lengths, ranges, literals) and that ``created_at`` is aware.

    Returns the record, normalised to UTC. Raises ``ValueError`` naming the problem.
    """
    try:
        checked = _decoder.decode(_encoder.encode(turn))
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid TurnRecord: {exc}") from None
    if checked.created_at.tzinfo is None:
        raise ValueError("invalid TurnRecord: created_at must be timezone-aware")
    return msgspec.structs.replace(checked, created_at=checked.created_at.astimezone(UTC))


class HistoryUnavailable(StorageError):
    """The history database cannot be reached, or did not answer in time. A later retry may succeed."""


class HistoryRejected(StorageError):
    """The history database refused this record (a data error). Retrying the same record will not help."""


class HistoryStore(Protocol):
    """Conversation history, shared by every gateway process of a deployment.

    Every method raises :class:`HistoryUnavailable` when the database is away or slow, and may raise
    :class:`HistoryRejected` for a record the database refuses; nothing else on purpose.
    """

    @property
    def engine(self) -> str:
        """``"sqlite"`` or ``"mysql"``."""
        ...

    async def migrate(self) -> None:
        """Bring the schema to the latest version. Idempotent; safe when several processes start at once."""
        ...

    async def append_turn(self, turn: TurnRecord) -> bool:
        """Store one turn. Returns False when a turn with the same ``write_id`` was already stored."""
        ...

    async def recent_messages(
        self, conversation_id: str, limit: int, *, owner: str
    ) -> list[Message]:
        """The last ``limit`` messages of ``owner``'s conversation, oldest first, for the chat model's context.

        Failed turns are left out; an interrupted turn contributes what was said before the interruption.
        """
        ...

    async def conversation(self, conversation_id: str, *, owner: str) -> list[TurnRecord]:
        """Every turn of ``owner``'s conversation in the order they were stored ([] for an unknown id, or one
        that only another owner has)."""
        ...

    async def delete_conversation(self, conversation_id: str, *, owner: str) -> bool:
        """Delete ``owner``'s conversation and all its turns. Returns False when there was nothing to delete
        (another owner's conversation of the same id is left alone)."""
        ...

    async def ping(self) -> None:
        """Check the database answers; raises :class:`HistoryUnavailable` when it does not."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads. The store cannot be used afterwards."""
        ...

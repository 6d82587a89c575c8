"""Protocol errors and the enumerated error codes of the WebSocket contract.

::

    ProtocolError(code, message)   never raised itself
    ├── LocalProtocolError         our side broke the protocol: a bug in the caller (the shell)
    └── RemoteProtocolError        the peer sent something the protocol does not allow

Every bad client frame or packet ends up as a :class:`RemoteProtocolError` whose ``code`` is one of
:class:`ErrorCode`; the session machines turn it into an ``error`` event carrying that code. Codes in
:data:`FATAL_CODES` also close the connection, with the WebSocket close code given there.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "FATAL_CODES",
    "ErrorCode",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ErrorCode(enum.StrEnum):
    """Machine-readable reason carried in the ``code`` of an ``error`` event.

    invalid_json: the text frame is not a JSON document (or not UTF-8).
    invalid_message: valid JSON but not a message of this endpoint (not an object, missing field, wrong type).
    unexpected_message: a ``type`` this endpoint does not take.
    binary_frame: a binary WebSocket frame; the protocol is JSON text frames only.
    frame_too_large: the frame is larger than the server accepts (the connection is closed, 1009).
    invalid_base64: ``data`` is not valid standard base64 with padding.
    packet_too_large: the decoded ``data`` of one packet is larger than allowed.
    bad_sequence: ``seq``/``total`` out of range, ``seq`` greater than ``total``, or ``total`` changed mid-upload.
    duplicate_packet: a packet repeats a ``seq`` already received with different content.
    upload_too_large: the upload would exceed the byte or packet-count limit.
    upload_timeout: an upload stayed incomplete for too long and was discarded.
    incomplete_upload: a VLM ``end`` arrived before both the image and the audio upload were complete.
    too_many_turns: the connection used up its turns (the connection is closed, 1008).
    unsupported_image_format: the VLM image is not JPEG, PNG, WebP, GIF or BMP.
    empty_transcript: recognition found no speech in the upload (the turn ends without an answer).
    send_timeout: the client read nothing for too long; it is disconnected (4008).
    idle_timeout: nothing was received or sent for too long; the connection is closed (4000).
    storage_error: the upload could not be stored; the turn goes on without its link.
    unsupported_audio_format: the upload is not MP3, PCM WAV or Ogg/Opus (raw PCM must be declared with
        ``?format=pcm;rate=16000``); no upstream was called.
    unauthorized: missing or wrong gateway key.
    upstream_error: the model service failed.
    upstream_timeout: the model service did not answer in time.
    rate_limited: too many requests (or concurrent sessions) for this key; retry after ``retry_after`` seconds.
    quota_exceeded: a daily quota of this key (chat tokens, speech characters, recognised audio) is used up.
    server_busy: every upstream session of the gateway is busy; retry after ``retry_after`` seconds.
    internal_error: a bug on the server (the connection is closed, 1011).
    shutting_down: the server is stopping (a deploy, a scale-down): a turn still running when its grace period
        ended was cut short; the connection is closed (1001 going away). Reconnect (to another instance).
    """

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNEXPECTED_MESSAGE = "unexpected_message"
    BINARY_FRAME = "binary_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    INVALID_BASE64 = "invalid_base64"
    PACKET_TOO_LARGE = "packet_too_large"
    BAD_SEQUENCE = "bad_sequence"
    DUPLICATE_PACKET = "duplicate_packet"
    UPLOAD_TOO_LARGE = "upload_too_large"
    UPLOAD_TIMEOUT = "upload_timeout"
    INCOMPLETE_UPLOAD = "incomplete_upload"
    TOO_MANY_TURNS = "too_many_turns"
    UNSUPPORTED_AUDIO_FORMAT = "unsupported_audio_format"
    UNSUPPORTED_IMAGE_FORMAT = "unsupported_image_format"
    EMPTY_TRANSCRIPT = "empty_transcript"
    SEND_TIMEOUT = "send_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    STORAGE_ERROR = "storage_error"
    UNAUTHORIZED = "unauthorized"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    SERVER_BUSY = "server_busy"
    INTERNAL_ERROR = "internal_error"
    SHUTTING_DOWN = "shutting_down"


#: Codes after which the connection cannot go on, with the WebSocket close code to use (RFC 6455 §7.4.1).
FATAL_CODES: Mapping[ErrorCode, int] = MappingProxyType(
    {
        ErrorCode.FRAME_TOO_LARGE: 1009,
        ErrorCode.TOO_MANY_TURNS: 1008,
        ErrorCode.UNAUTHORIZED: 1008,
        ErrorCode.INTERNAL_ERROR: 1011,
        ErrorCode.SHUTTING_DOWN: 1001,
    }
)


class ProtocolError(Exception):
    """A message or call the protocol does not allow.

    Attributes:
        code: the machine-readable reason, sent to the client as ``error.code``.
        message: human-readable text, sent to the client as ``error.message``.

    Only :class:`LocalProtocolError` and :class:`RemoteProtocolError` are ever raised; catch this base.
    """

    code: ErrorCode
    message: str

    def __init__(self, code: ErrorCode, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError, not ProtocolError")
        super().__init__(code, message)
        self.code = ErrorCode(code)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.code)!r}, {self.message!r})"

    @property
    def fatal(self) -> bool:
        """True when the connection must be closed after reporting this error."""
        return self.code in FATAL_CODES


class LocalProtocolError(ProtocolError):
    """Our side (the caller of a session machine) broke the protocol; the machine's state is unchanged."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""

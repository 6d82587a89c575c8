"""Sans-I/O session machines of the two voice endpoints: decoded messages in, actions out.

A machine never touches a socket, a clock or a task: the shell (``qwen_gateway``) feeds it and runs what it
returns. For ``/v1/chat/audio``::

    session = AudioSession(session_id, limits)
    run(session.open(now))                                  # Send(connected)
    for frame in frames:                                    # one reader task
        try:
            message = wire.decode_audio_client(frame, limits)
        except ProtocolError as error:
            run(session.reject(error, now))                 # Send(error) [, Close]
        else:
            run(session.receive(message, now))
    # when a turn's pipeline ends, however it ends:         run(session.turn_finished(turn_id))
    # when the clock passes session.deadline():             run(session.tick(now))
    # when the connection is gone:                          run(session.close())

``/v1/chat/vlm`` is the same with :class:`VlmSession` and ``wire.decode_vlm_client``.

``run`` executes the actions in order:

=========================================  ==============================================================
action                                     what the shell does
=========================================  ==============================================================
``Send(event)``                            send ``wire.encode_event(event)`` (via the one sender task)
``StartTurn(turn_id, started_at)``         audio: start the turn's pipeline (streaming recognition)
``FeedAudio(turn_id, data)``               audio: append ``data`` to the turn's upload and recogniser, in
                                           order, as it arrives
``UploadComplete(turn_id, size, packets)`` audio: the upload is whole: finish recognition, store the file
``StartVlmTurn(turn_id, audio, image, ..)``VLM: start the turn's pipeline with both complete uploads
``CancelTurn(turn_id, reason)``            cancel the turn's task group; it sends nothing more. The
                                           machine already counts it as ended
``Close(code, reason)``                    send pending events, then close the WebSocket with ``code``;
                                           call nothing but ``close()`` afterwards
=========================================  ==============================================================

At most one turn runs per connection. A new utterance while a turn runs is a barge-in: ``CancelTurn(old,
"barge_in")`` comes before ``StartTurn(new)``. A bad packet or frame only costs an ``error`` event; the session
goes on. Only the codes in :data:`~protocol.errors.FATAL_CODES` close it.

A wrong call by the shell (``receive`` before ``open`` or after ``Close``, an unknown turn id) raises
:class:`~protocol.errors.LocalProtocolError` and changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import msgspec
from msgspec import UNSET

from .audio import (
    MSG_AUDIO_CONNECTED,
    AudioEnd,
    AudioPacket,
    OpenAudioPacket,
    PacketAck,
    StreamClientMessage,
)
from .errors import FATAL_CODES, ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import Cancel, Connected, ErrorEvent, Event
from .upload import (
    OpenAssembler,
    PacketAssembler,
    Release,
    starts_new_open_upload,
    starts_new_upload,
)
from .vlm import (
    MSG_VLM_CONNECTED,
    PacketKind,
    VlmAudioPacket,
    VlmClientMessage,
    VlmEnd,
    VlmImagePacket,
    VlmPacketAck,
)
from .wire import AUDIO_LIMITS, VLM_LIMITS, Limits

__all__ = [
    "AUDIO_TRANSITIONS",
    "VLM_TRANSITIONS",
    "Action",
    "AudioSession",
    "AudioState",
    "CancelReason",
    "CancelTurn",
    "Close",
    "FeedAudio",
    "Send",
    "StartTurn",
    "StartVlmTurn",
    "Trigger",
    "UploadComplete",
    "VlmSession",
    "VlmState",
]


# --------------------------------------------------------------------------- actions


class CancelReason(enum.StrEnum):
    """Why a turn is cancelled."""

    #: a new utterance started while the turn ran
    BARGE_IN = "barge_in"
    #: the client sent ``{"type": "cancel"}``
    CLIENT = "client_cancel"
    #: the turn's upload stopped arriving
    UPLOAD_TIMEOUT = "upload_timeout"
    #: the connection is ending
    CLOSED = "closed"
    #: the server is stopping and the turn's grace period is over (the connection is closed next)
    SHUTTING_DOWN = "shutting_down"


class Send(msgspec.Struct, frozen=True):
    """Send ``event`` to the client."""

    event: Event


class StartTurn(msgspec.Struct, frozen=True):
    """Start voice turn ``turn_id`` (audio endpoint); its audio follows in ``FeedAudio`` actions."""

    turn_id: int
    started_at: float


class FeedAudio(msgspec.Struct, frozen=True):
    """The next contiguous bytes of turn ``turn_id``'s upload."""

    turn_id: int
    data: bytes


class UploadComplete(msgspec.Struct, frozen=True):
    """Turn ``turn_id``'s upload is complete: ``size`` bytes in ``packets`` packets."""

    turn_id: int
    size: int
    packets: int


class StartVlmTurn(msgspec.Struct, frozen=True, kw_only=True):
    """Start VLM turn ``turn_id`` with the complete spoken question and image."""

    turn_id: int
    audio: bytes
    image: bytes
    audio_packets: int
    image_packets: int
    started_at: float


class CancelTurn(msgspec.Struct, frozen=True):
    """Cancel turn ``turn_id`` now."""

    turn_id: int
    reason: CancelReason


class Close(msgspec.Struct, frozen=True):
    """Close the connection with WebSocket close ``code`` after sending what is queued."""

    code: int
    reason: str = ""


Action = Send | StartTurn | FeedAudio | UploadComplete | StartVlmTurn | CancelTurn | Close


# --------------------------------------------------------------------------- states and transitions


class Trigger(enum.Enum):
    """What moves a machine: a call of the shell or the meaning of a client message."""

    #: the shell opened the session
    OPEN = "open"
    #: a packet began a new upload (audio: a new utterance, hence a new turn)
    UPLOAD_STARTED = "upload_started"
    #: a packet of the current (or, as an exact repeat, the last) upload
    PACKET = "packet"
    #: the current upload became complete
    UPLOAD_COMPLETED = "upload_completed"
    #: VLM ``end`` with both uploads complete
    END = "end"
    #: the client sent ``cancel``
    CANCEL = "cancel"
    #: the shell reported that the running turn ended
    TURN_FINISHED = "turn_finished"
    #: an incomplete upload waited too long
    TIMEOUT = "timeout"
    #: the connection ends
    CLOSE = "close"


class AudioState(enum.Enum):
    """States of an ``/v1/chat/audio`` connection."""

    #: created; the shell has not called ``open`` yet
    NEW = "new"
    #: no upload arriving and no turn running
    IDLE = "idle"
    #: an upload is arriving and its turn consumes it as it comes
    RECEIVING = "receiving"
    #: the upload is complete; its turn is still running
    PROCESSING = "processing"
    #: an upload is arriving but its turn has ended (cancelled or failed): packets are acknowledged only
    DRAINING = "draining"
    #: the connection is over
    CLOSED = "closed"


_A = AudioState
_T = Trigger

#: Every legal move of the audio machine; anything else raises LocalProtocolError.
AUDIO_TRANSITIONS: Mapping[tuple[AudioState, Trigger], AudioState] = MappingProxyType(
    {
        (_A.NEW, _T.OPEN): _A.IDLE,
        (_A.IDLE, _T.UPLOAD_STARTED): _A.RECEIVING,
        (_A.RECEIVING, _T.UPLOAD_STARTED): _A.RECEIVING,
        (_A.PROCESSING, _T.UPLOAD_STARTED): _A.RECEIVING,
        (_A.DRAINING, _T.UPLOAD_STARTED): _A.RECEIVING,
        (_A.IDLE, _T.PACKET): _A.IDLE,
        (_A.RECEIVING, _T.PACKET): _A.RECEIVING,
        (_A.PROCESSING, _T.PACKET): _A.PROCESSING,
        (_A.DRAINING, _T.PACKET): _A.DRAINING,
        (_A.RECEIVING, _T.UPLOAD_COMPLETED): _A.PROCESSING,
        (_A.DRAINING, _T.UPLOAD_COMPLETED): _A.IDLE,
        (_A.IDLE, _T.CANCEL): _A.IDLE,
        (_A.RECEIVING, _T.CANCEL): _A.DRAINING,
        (_A.PROCESSING, _T.CANCEL): _A.IDLE,
        (_A.DRAINING, _T.CANCEL): _A.DRAINING,
        (_A.RECEIVING, _T.TURN_FINISHED): _A.DRAINING,
        (_A.PROCESSING, _T.TURN_FINISHED): _A.IDLE,
        (_A.RECEIVING, _T.TIMEOUT): _A.IDLE,
        (_A.DRAINING, _T.TIMEOUT): _A.IDLE,
        (_A.NEW, _T.CLOSE): _A.CLOSED,
        (_A.IDLE, _T.CLOSE): _A.CLOSED,
        (_A.RECEIVING, _T.CLOSE): _A.CLOSED,
        (_A.PROCESSING, _T.CLOSE): _A.CLOSED,
        (_A.DRAINING, _T.CLOSE): _A.CLOSED,
    }
)


class VlmState(enum.Enum):
    """States of a ``/v1/chat/vlm`` connection (uploads may arrive in both IDLE and RUNNING)."""

    #: created; the shell has not called ``open`` yet
    NEW = "new"
    #: no turn running
    IDLE = "idle"
    #: a turn is running
    RUNNING = "running"
    #: the connection is over
    CLOSED = "closed"


_V = VlmState

#: Every legal move of the VLM machine; anything else raises LocalProtocolError.
VLM_TRANSITIONS: Mapping[tuple[VlmState, Trigger], VlmState] = MappingProxyType(
    {
        (_V.NEW, _T.OPEN): _V.IDLE,
        (_V.IDLE, _T.UPLOAD_STARTED): _V.IDLE,
        (_V.RUNNING, _T.UPLOAD_STARTED): _V.RUNNING,
        (_V.IDLE, _T.PACKET): _V.IDLE,
        (_V.RUNNING, _T.PACKET): _V.RUNNING,
        (_V.IDLE, _T.UPLOAD_COMPLETED): _V.IDLE,
        (_V.RUNNING, _T.UPLOAD_COMPLETED): _V.RUNNING,
        (_V.IDLE, _T.END): _V.RUNNING,
        (_V.RUNNING, _T.END): _V.RUNNING,
        (_V.IDLE, _T.CANCEL): _V.IDLE,
        (_V.RUNNING, _T.CANCEL): _V.IDLE,
        (_V.RUNNING, _T.TURN_FINISHED): _V.IDLE,
        (_V.IDLE, _T.TIMEOUT): _V.IDLE,
        (_V.RUNNING, _T.TIMEOUT): _V.RUNNING,
        (_V.NEW, _T.CLOSE): _V.CLOSED,
        (_V.IDLE, _T.CLOSE): _V.CLOSED,
        (_V.RUNNING, _T.CLOSE): _V.CLOSED,
    }
)


# --------------------------------------------------------------------------- the common part

S = TypeVar("S", AudioState, VlmState)


class _Session(Generic[S]):
    """What both machines share: the state and its table, turn numbering, errors, closing."""

    _transitions: Mapping[tuple[S, Trigger], S]
    _connected_message: str

    def __init__(self, session_id: str, limits: Limits, initial: S) -> None:
        self.session_id = session_id
        self.limits = limits
        self._state: S = initial
        #: the running turn, if any
        self._turn: int | None = None
        #: turns started so far (the last turn id)
        self._turns = 0
        self._last_packet = 0.0

    @property
    def state(self) -> S:
        """The current state."""
        return self._state

    @property
    def turn_id(self) -> int | None:
        """The running turn, or None."""
        return self._turn

    @property
    def turns(self) -> int:
        """How many turns this connection has started."""
        return self._turns

    def _next(self, trigger: Trigger) -> S:
        try:
            return self._transitions[(self._state, trigger)]
        except KeyError:
            raise LocalProtocolError(
                ErrorCode.INTERNAL_ERROR,
                f"{trigger.name} is not allowed in state {self._state.name}",
            ) from None

    def _fire(self, trigger: Trigger) -> None:
        self._state = self._next(trigger)

    def _require_open(self, what: str) -> None:
        if self._state.name in ("NEW", "CLOSED"):
            raise LocalProtocolError(
                ErrorCode.INTERNAL_ERROR, f"{what} in state {self._state.name}"
            )

    def open(self, now: float) -> list[Action]:
        """Start the session. Returns ``[Send(connected)]``."""
        self._fire(Trigger.OPEN)
        self._last_packet = now
        return [Send(Connected(message=self._connected_message, session_id=self.session_id))]

    def reject(self, error: ProtocolError, now: float) -> list[Action]:
        """Report a frame the codec refused: an ``error`` event, and closing when the code is fatal."""
        self._require_open("reject")
        if error.fatal:
            return self._fail(error.code, error.message)
        return _refused(error)

    def turn_finished(self, turn_id: int) -> list[Action]:
        """The shell reports that turn ``turn_id`` ended (done, failed or cancelled). Returns no action.

        A turn that already counts as ended (cancelled, replaced by a barge-in) is ignored.

        Raises:
            LocalProtocolError: no turn ``turn_id`` was ever started.
        """
        if not 1 <= turn_id <= self._turns:
            raise LocalProtocolError(ErrorCode.INTERNAL_ERROR, f"no turn {turn_id} was started")
        if turn_id == self._turn:
            self._fire(Trigger.TURN_FINISHED)
            self._turn = None
        return []

    def close(self) -> list[Action]:
        """The connection ends: cancel the running turn. Calling it again returns nothing."""
        if self._state.name == "CLOSED":
            return []
        actions = self._cancel_running(CancelReason.CLOSED)
        self._fire(Trigger.CLOSE)
        return actions

    def shutdown(self) -> list[Action]:
        """The server is stopping: cancel the running turn (``shutting_down``), tell the client with an
        ``error`` event ``shutting_down``, close with 1001 (going away). Calling it again returns nothing."""
        if self._state.name == "CLOSED":
            return []
        return self._fail(
            ErrorCode.SHUTTING_DOWN,
            "the server is shutting down; reconnect to continue the conversation",
            CancelReason.SHUTTING_DOWN,
        )

    def _cancel_running(self, reason: CancelReason) -> list[Action]:
        if self._turn is None:
            return []
        turn, self._turn = self._turn, None
        return [CancelTurn(turn, reason)]

    def _fail(
        self, code: ErrorCode, message: str, reason: CancelReason = CancelReason.CLOSED
    ) -> list[Action]:
        """An unrecoverable error: cancel everything, tell the client, close."""
        actions = self._cancel_running(reason)
        actions.append(Send(ErrorEvent(message=message, code=code)))
        actions.append(Close(FATAL_CODES[code], str(code)))
        self._fire(Trigger.CLOSE)
        return actions

    def _cancel(self) -> list[Action]:
        """The client's ``cancel``: stop the running turn, if any."""
        actions = self._cancel_running(CancelReason.CLIENT)
        self._fire(Trigger.CANCEL)
        return actions

    def _next_turn(self, trigger: Trigger) -> tuple[list[Action], int | None]:
        """Start a new turn, cancelling the running one (barge-in); returns the actions and the turn id.

        A connection that has used up its turns is closed instead: the actions say so and the id is None.
        """
        if self._turns >= self.limits.max_turns:
            message = f"this connection has used its {self.limits.max_turns} turns; open a new one"
            return self._fail(ErrorCode.TOO_MANY_TURNS, message), None
        actions = self._cancel_running(CancelReason.BARGE_IN)
        self._fire(trigger)
        self._turns += 1
        self._turn = self._turns
        return actions, self._turns

    def _new_assembler(self, total: int) -> PacketAssembler:
        return PacketAssembler(
            total, max_packets=self.limits.max_packets, max_bytes=self.limits.max_upload_bytes
        )


def _refused(error: ProtocolError) -> list[Action]:
    return [Send(ErrorEvent(message=error.message, code=error.code))]


# --------------------------------------------------------------------------- /v1/chat/audio


class AudioSession(_Session[AudioState]):
    """The machine of one ``/v1/chat/audio`` connection (see the module docstring)."""

    _transitions = AUDIO_TRANSITIONS
    _connected_message = MSG_AUDIO_CONNECTED

    def __init__(self, session_id: str, limits: Limits = AUDIO_LIMITS) -> None:
        super().__init__(session_id, limits, AudioState.NEW)
        self._upload: PacketAssembler | OpenAssembler | None = None
        self._upload_turn = 0

    def receive(self, message: StreamClientMessage, now: float) -> list[Action]:
        """Handle one decoded client message; returns the actions to run, in order.

        Seed clients send :class:`AudioPacket` and ``cancel``; clients of ``mode=stream`` may also send
        open-microphone packets (:class:`OpenAudioPacket`) and ``end`` (:class:`AudioEnd`).

        Raises:
            LocalProtocolError: the session is not open (``open`` not called, or closed).
        """
        self._require_open("receive")
        if isinstance(message, Cancel):
            return self._cancel()
        if isinstance(message, AudioEnd):
            return self._end_open()
        if isinstance(message, OpenAudioPacket):
            return self._open_packet(message.seq, message.data, now)
        assert isinstance(message, AudioPacket)
        seq, total, data = message.seq, message.total, message.data
        upload = self._upload
        if isinstance(upload, OpenAssembler) or starts_new_upload(upload, seq, total, data):
            return self._start_upload(
                seq,
                data,
                now,
                lambda: self._new_assembler(total),
                lambda u: u.add(seq, total, data),
            )
        assert isinstance(upload, PacketAssembler)
        try:
            release = upload.add(seq, total, data)
        except RemoteProtocolError as error:
            return _refused(error)
        self._fire(Trigger.PACKET)
        return self._accepted(seq, release, now)

    def _open_packet(self, seq: int, data: bytes, now: float) -> list[Action]:
        upload = self._upload
        if starts_new_open_upload(upload, seq, data):
            if seq != 1:
                return _refused(
                    RemoteProtocolError(
                        ErrorCode.BAD_SEQUENCE,
                        f"seq {seq} without an open upload: an open upload starts with seq 1",
                    )
                )
            limits = self.limits
            return self._start_upload(
                seq,
                data,
                now,
                lambda: OpenAssembler(
                    max_packets=limits.max_packets, max_bytes=limits.max_upload_bytes
                ),
                lambda u: u.add(seq, data),
            )
        assert isinstance(upload, OpenAssembler)
        try:
            release = upload.add(seq, data)
        except RemoteProtocolError as error:
            return _refused(error)
        self._fire(Trigger.PACKET)
        return self._accepted(seq, release, now)

    def _start_upload(
        self,
        seq: int,
        data: bytes,
        now: float,
        new: Callable[[], Any],
        add: Callable[[Any], Release],
    ) -> list[Action]:
        try:
            upload = new()
            release = add(upload)
        except RemoteProtocolError as error:
            return _refused(error)
        actions, turn = self._next_turn(Trigger.UPLOAD_STARTED)
        if turn is None:
            return actions
        self._upload_turn = turn
        self._upload = upload
        actions.append(StartTurn(turn, now))
        actions.extend(self._accepted(seq, release, now))
        return actions

    def _end_open(self) -> list[Action]:
        """The client's ``end``: complete the open upload (nothing when there is none, or it already ended)."""
        upload = self._upload
        if not isinstance(upload, OpenAssembler) or not upload.end():
            return []
        return self._ended_open(upload)

    def speech_ended(self, turn_id: int) -> list[Action]:
        """The shell heard the end of the speech in turn ``turn_id``'s open upload: complete the upload.

        Returns ``[UploadComplete]`` when that upload was still arriving for its running turn, else nothing (it
        already ended, the turn was cancelled, or a new utterance began).
        """
        self._require_open("speech_ended")
        upload = self._upload
        if (
            turn_id != self._upload_turn
            or self._state is not AudioState.RECEIVING
            or not isinstance(upload, OpenAssembler)
            or not upload.end()
        ):
            return []
        return self._ended_open(upload)

    def _ended_open(self, upload: OpenAssembler) -> list[Action]:
        actions: list[Action] = []
        if self._state is AudioState.RECEIVING:
            actions.append(UploadComplete(self._upload_turn, upload.size, upload.packets))
        self._fire(Trigger.UPLOAD_COMPLETED)
        return actions

    def _accepted(self, seq: int, release: Release, now: float) -> list[Action]:
        assert self._upload is not None
        self._last_packet = now
        actions: list[Action] = [
            Send(
                PacketAck(
                    seq=seq,
                    received=release.received,
                    total=self._upload.total,
                    turn_id=self._upload_turn,
                    duplicate=True if release.duplicate else UNSET,
                )
            )
        ]
        feeding = self._state is AudioState.RECEIVING
        if release.data and feeding:
            actions.append(FeedAudio(self._upload_turn, release.data))
        if release.completed:
            if feeding:
                actions.append(
                    UploadComplete(self._upload_turn, self._upload.size, self._upload.total)
                )
            self._fire(Trigger.UPLOAD_COMPLETED)
        return actions

    def deadline(self) -> float | None:
        """When :meth:`tick` should be called next (an incomplete upload's time limit), or None."""
        if self._state in (AudioState.RECEIVING, AudioState.DRAINING):
            return self._last_packet + self.limits.upload_idle_timeout
        return None

    def tick(self, now: float) -> list[Action]:
        """Let time pass: an upload that waited past :meth:`deadline` is dropped and its turn cancelled."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        actions = self._cancel_running(CancelReason.UPLOAD_TIMEOUT)
        timeout = self.limits.upload_idle_timeout
        actions.append(
            Send(
                ErrorEvent(
                    message=f"the upload got no packet for {timeout:g} s and was dropped",
                    code=ErrorCode.UPLOAD_TIMEOUT,
                    turn_id=self._upload_turn,
                )
            )
        )
        self._upload = None
        self._fire(Trigger.TIMEOUT)
        return actions


# --------------------------------------------------------------------------- /v1/chat/vlm


class VlmSession(_Session[VlmState]):
    """The machine of one ``/v1/chat/vlm`` connection (see the module docstring).

    The image and the audio are two uploads, each assembled on its own; ``end`` starts a turn with both once
    both are complete (otherwise an ``incomplete_upload`` error, and the uploads stay for the client to finish).
    A new turn needs new uploads of both.
    """

    _transitions = VLM_TRANSITIONS
    _connected_message = MSG_VLM_CONNECTED

    def __init__(self, session_id: str, limits: Limits = VLM_LIMITS) -> None:
        super().__init__(session_id, limits, VlmState.NEW)
        self._uploads: dict[PacketKind, PacketAssembler] = {}
        self._chunks: dict[PacketKind, list[bytes]] = {}

    def receive(self, message: VlmClientMessage, now: float) -> list[Action]:
        """Handle one decoded client message; returns the actions to run, in order.

        Raises:
            LocalProtocolError: the session is not open (``open`` not called, or closed).
        """
        self._require_open("receive")
        if isinstance(message, Cancel):
            return self._cancel()
        if isinstance(message, VlmEnd):
            return self._end(now)
        return self._packet(message, now)

    def _packet(self, packet: VlmAudioPacket | VlmImagePacket, now: float) -> list[Action]:
        kind, seq, total, data = packet.kind, packet.seq, packet.total, packet.data
        upload = self._uploads.get(kind)
        try:
            if starts_new_upload(upload, seq, total, data):
                upload = self._new_assembler(total)
                release = upload.add(seq, total, data)
                self._fire(Trigger.UPLOAD_STARTED)
                self._uploads[kind] = upload
                self._chunks[kind] = []
            else:
                assert upload is not None
                release = upload.add(seq, total, data)
                self._fire(Trigger.PACKET)
        except RemoteProtocolError as error:
            return _refused(error)
        self._last_packet = now
        if release.data:
            self._chunks[kind].append(release.data)
        if release.completed:
            self._fire(Trigger.UPLOAD_COMPLETED)
        ack = VlmPacketAck(
            seq=seq,
            type=kind,
            received=release.received,
            total=total,
            duplicate=True if release.duplicate else UNSET,
        )
        return [Send(ack)]

    def _missing(self) -> list[PacketKind]:
        kinds: tuple[PacketKind, ...] = ("image", "audio")
        return [k for k in kinds if k not in self._uploads or not self._uploads[k].complete]

    def _end(self, now: float) -> list[Action]:
        missing = self._missing()
        if missing:
            what = " and ".join(missing) + (" uploads were" if len(missing) > 1 else " upload was")
            return _refused(
                RemoteProtocolError(ErrorCode.INCOMPLETE_UPLOAD, f"end before the {what} complete")
            )
        actions, turn = self._next_turn(Trigger.END)
        if turn is None:
            return actions
        audio, image = self._uploads.pop("audio"), self._uploads.pop("image")
        actions.append(
            StartVlmTurn(
                turn_id=turn,
                audio=b"".join(self._chunks.pop("audio")),
                image=b"".join(self._chunks.pop("image")),
                audio_packets=audio.total,
                image_packets=image.total,
                started_at=now,
            )
        )
        return actions

    def deadline(self) -> float | None:
        """When :meth:`tick` should be called next (an incomplete upload's time limit), or None."""
        if any(not upload.complete for upload in self._uploads.values()):
            return self._last_packet + self.limits.upload_idle_timeout
        return None

    def tick(self, now: float) -> list[Action]:
        """Let time pass: incomplete uploads that waited past :meth:`deadline` are dropped."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        dropped = sorted(kind for kind, upload in self._uploads.items() if not upload.complete)
        for kind in dropped:
            del self._uploads[kind]
            del self._chunks[kind]
        self._fire(Trigger.TIMEOUT)
        timeout = self.limits.upload_idle_timeout
        message = (
            f"the {' and '.join(dropped)} upload got no packet for {timeout:g} s and was dropped"
        )
        return [Send(ErrorEvent(message=message, code=ErrorCode.UPLOAD_TIMEOUT))]

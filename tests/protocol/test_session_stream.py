"""Open-microphone uploads (``mode=stream``) on the audio machine: packets without ``total``, ended by ``end`` or by
the shell's end of speech; packets after the end are acknowledged and dropped; ``seq`` 1 starts the next utterance
(a barge-in while a turn runs). Seed packets keep their meaning on the same connection."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from protocol import (
    AudioEnd,
    AudioPacket,
    AudioSession,
    AudioState,
    CancelTurn,
    ErrorCode,
    ErrorEvent,
    FeedAudio,
    Limits,
    OpenAudioPacket,
    PacketAck,
    ProtocolError,
    RemoteProtocolError,
    StartTurn,
    UploadComplete,
    decode_audio_client,
    decode_stream_client,
)

from .driver import events, fed, names


class StreamDriver:
    def __init__(self, limits: Limits | None = None) -> None:
        self.session = AudioSession("s", limits or Limits())
        self.now = 100.0
        self.session.open(self.now)

    def frame(self, body: dict[str, Any]) -> list[Any]:
        try:
            message = decode_stream_client(json.dumps(body), self.session.limits)
        except ProtocolError as error:
            return self.session.reject(error, self.now)
        return self.session.receive(message, self.now)

    def packet(self, seq: int, data: bytes, total: int | None = None) -> list[Any]:
        body: dict[str, Any] = {"seq": seq, "data": base64.b64encode(data).decode()}
        if total is not None:
            body["total"] = total
        return self.frame(body)

    def end(self) -> list[Any]:
        return self.frame({"type": "end"})


def test_decoding() -> None:
    assert isinstance(decode_stream_client('{"seq": 1, "data": ""}'), OpenAudioPacket)
    assert isinstance(decode_stream_client('{"seq": 1, "total": 0, "data": ""}'), OpenAudioPacket)
    assert isinstance(decode_stream_client('{"seq": 1, "total": 3, "data": ""}'), AudioPacket)
    assert isinstance(decode_stream_client('{"type": "end"}'), AudioEnd)
    with pytest.raises(RemoteProtocolError) as info:
        decode_stream_client('{"seq": 0, "data": ""}')
    assert info.value.code is ErrorCode.BAD_SEQUENCE
    big = base64.b64encode(bytes(9000)).decode()
    with pytest.raises(RemoteProtocolError) as info:
        decode_stream_client(json.dumps({"seq": 1, "data": big}))
    assert info.value.code is ErrorCode.PACKET_TOO_LARGE
    with pytest.raises(RemoteProtocolError) as info:
        decode_stream_client('{"type": "image", "seq": 1, "data": ""}')
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE


def test_strict_seed_clients_see_no_change() -> None:
    # without mode=stream the seed codec still refuses what only stream clients may send
    for frame in (
        '{"seq": 1, "data": ""}',
        '{"seq": 1, "total": 0, "data": ""}',
        '{"type": "end"}',
    ):
        with pytest.raises(RemoteProtocolError):
            decode_audio_client(frame)


def test_an_open_upload_ends_on_end() -> None:
    d = StreamDriver()
    first = d.packet(1, b"aa")
    assert names(first)[:3] == ["StartTurn", "Send(packet_ack)", "FeedAudio"]
    (ack,) = events(first)
    assert isinstance(ack, PacketAck) and ack.total == 0 and ack.received == 1
    assert fed(d.packet(3, b"cc")) == b""  # held behind the gap
    assert fed(d.packet(2, b"bb")) == b"bbcc"
    assert d.session.state is AudioState.RECEIVING
    actions = d.end()
    assert actions == [UploadComplete(1, 6, 3)]
    assert d.session.state is AudioState.PROCESSING
    assert d.end() == []  # a second end changes nothing


def test_an_open_upload_ends_on_the_end_of_speech() -> None:
    d = StreamDriver()
    d.packet(1, b"aa")
    d.packet(2, b"bb")
    assert d.session.speech_ended(1) == [UploadComplete(1, 4, 2)]
    assert d.session.state is AudioState.PROCESSING
    # the device goes on streaming until it learns: acknowledged, dropped, no new turn
    late = d.packet(3, b"cc")
    assert names(late) == ["Send(packet_ack)"]
    assert d.session.turn_id == 1
    # its end after the speech's end is not an error
    assert d.end() == []
    assert d.session.speech_ended(1) == []


def test_packets_behind_a_gap_at_the_end_are_dropped() -> None:
    d = StreamDriver()
    d.packet(1, b"aa")
    d.packet(3, b"cc")
    assert d.end() == [UploadComplete(1, 2, 1)]


def test_seq_1_starts_the_next_utterance_and_barges_in() -> None:
    d = StreamDriver()
    d.packet(1, b"aa")
    d.end()
    actions = d.packet(1, b"xx")
    assert actions[0] == CancelTurn(1, "barge_in")  # type: ignore[arg-type]
    assert isinstance(actions[1], StartTurn) and actions[1].turn_id == 2
    assert fed(actions) == b"xx"
    # an exact repeat of seq 1 is a duplicate, not a third utterance
    again = d.packet(1, b"xx")
    assert names(again) == ["Send(packet_ack)"]
    assert events(again)[0].duplicate is True


def test_an_open_upload_starts_with_seq_1() -> None:
    d = StreamDriver()
    (error,) = events(d.packet(2, b"aa"))
    assert isinstance(error, ErrorEvent) and error.code is ErrorCode.BAD_SEQUENCE
    assert d.session.turn_id is None


def test_limits_hold() -> None:
    d = StreamDriver(Limits(max_upload_bytes=5, max_packets=3))
    d.packet(1, b"aaa")
    (error,) = events(d.packet(2, b"bbb"))
    assert error.code is ErrorCode.UPLOAD_TOO_LARGE
    (error,) = events(d.packet(4, b"b"))
    assert error.code is ErrorCode.UPLOAD_TOO_LARGE
    # seq 1 with other bytes is a new utterance (the client restarted), within the limits again
    restarted = d.packet(1, b"zzz")
    assert fed(restarted) == b"zzz" and d.session.turn_id == 2


def test_speech_end_of_a_cancelled_turn_does_nothing() -> None:
    d = StreamDriver()
    d.packet(1, b"aa")
    d.frame({"type": "cancel"})
    assert d.session.state is AudioState.DRAINING
    assert d.session.speech_ended(1) == []
    assert d.end() == []  # ends the drained upload; nothing to feed
    assert d.session.state is AudioState.IDLE


def test_an_idle_open_upload_times_out() -> None:
    d = StreamDriver(Limits(upload_idle_timeout=5))
    d.packet(1, b"aa")
    assert d.session.deadline() == pytest.approx(105.0)
    actions = d.session.tick(106.0)
    assert actions[0] == CancelTurn(1, "upload_timeout")  # type: ignore[arg-type]
    assert d.session.state is AudioState.IDLE


def test_seed_packets_still_work_on_a_stream_connection() -> None:
    d = StreamDriver()
    d.packet(1, b"aa")
    d.end()
    actions = d.packet(1, b"s1", total=2) + d.packet(2, b"s2", total=2)
    assert [type(a) for a in actions if isinstance(a, StartTurn | UploadComplete)] == [
        StartTurn,
        UploadComplete,
    ]
    assert fed(actions) == b"s1s2"
    assert next(a for a in actions if isinstance(a, FeedAudio)).turn_id == 2

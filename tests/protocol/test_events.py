"""Events: the registries, the wire form of every event, what is exact and what is tolerant."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from protocol import (
    AUDIO_EVENTS,
    VLM_EVENTS,
    AudioStreamData,
    AudioStreamFinished,
    ChatStarted,
    Connected,
    ErrorCode,
    ErrorEvent,
    Event,
    EventRegistry,
    PacketAck,
    ProtocolError,
    decode_audio_event,
    decode_vlm_event,
    encode_event,
)

from .samples import AUDIO_EVENTS_SAMPLES, VLM_EVENTS_SAMPLES


class _Other(Event, frozen=True, kw_only=True):
    event_name: ClassVar[str] = "connected"
    x: int


def test_registry_rejects_a_name_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        EventRegistry("t", [Connected, _Other])
    with pytest.raises(ValueError, match="registered twice"):
        EventRegistry("t", [Connected, Connected])


def test_registry_variants_must_share_a_name_and_be_tagged() -> None:
    with pytest.raises(ValueError, match="disagree"):
        EventRegistry("t", [(AudioStreamData, Connected)])
    with pytest.raises(ValueError, match="tagged"):
        EventRegistry("t", [(Connected, _Other)])
    with pytest.raises(ValueError, match="empty"):
        EventRegistry("t", [()])


#: Not seed events: sent only to clients that opted in at the handshake (``?events=extended``).
OPT_IN = {"transcription_partial"}


def test_registries_hold_the_seed_event_names() -> None:
    assert set(AUDIO_EVENTS.names) - OPT_IN == {
        "connected",
        "packet_ack",
        "transcription_started",
        "chat_started",
        "tts_started",
        "audio_stream",
        "chat_tts_complete",
        "audio_complete",
        "chat_chunk",
        "error",
    }
    assert set(VLM_EVENTS.names) - OPT_IN == {
        "connected",
        "packet_ack",
        "vlm_complete",
        "transcription_started",
        "vlm_chat_started",
        "tts_started",
        "audio_stream",
        "vlm_chat_chunk",
        "vlm_chat_tts_complete",
        "error",
    }
    assert set(AUDIO_EVENTS.names) >= OPT_IN and set(VLM_EVENTS.names) >= OPT_IN
    assert AUDIO_EVENTS.variants("audio_stream") == (AudioStreamData, AudioStreamFinished)
    assert PacketAck in AUDIO_EVENTS and PacketAck not in VLM_EVENTS


def test_samples_cover_every_event_type() -> None:
    assert {type(e) for e in AUDIO_EVENTS_SAMPLES} == set(AUDIO_EVENTS.types())
    assert {type(e) for e in VLM_EVENTS_SAMPLES} == set(VLM_EVENTS.types())


@pytest.mark.parametrize("event", AUDIO_EVENTS_SAMPLES, ids=repr)
def test_every_audio_event_round_trips(event: Event) -> None:
    frame = encode_event(event)
    assert list(json.loads(frame)) == [event.event_name]
    assert decode_audio_event(frame) == event


@pytest.mark.parametrize("event", VLM_EVENTS_SAMPLES, ids=repr)
def test_every_vlm_event_round_trips(event: Event) -> None:
    frame = encode_event(event)
    assert list(json.loads(frame)) == [event.event_name]
    assert decode_vlm_event(frame) == event


def test_wire_form_is_seed_shaped_utf8_with_unset_fields_left_out() -> None:
    assert encode_event(ChatStarted(message="开始生成AI回答...", user_message="你好")) == (
        '{"chat_started":{"message":"开始生成AI回答...","user_message":"你好"}}'
    )
    assert encode_event(ChatStarted(message="跳过")) == '{"chat_started":{"message":"跳过"}}'
    assert encode_event(AudioStreamFinished()) == '{"audio_stream":{"event":"finished"}}'
    assert encode_event(AudioStreamData(data=b"\x00\x01")) == (
        '{"audio_stream":{"event":"data","data":"AAE="}}'
    )
    assert encode_event(ErrorEvent(message="错误", code=ErrorCode.INVALID_JSON, turn_id=2)) == (
        '{"error":{"message":"错误","code":"invalid_json","turn_id":2}}'
    )


def test_events_are_frozen() -> None:
    event = Connected(message="m", session_id="s")
    with pytest.raises(AttributeError):
        event.message = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "frame",
    [
        '{"connected":{"message":"m","session_id":"s","extra":1}}',  # what we send is exact
        '{"connected":{"message":"m"}}',  # missing field
        '{"connected":{"message":1,"session_id":"s"}}',  # wrong type
        '{"no_such_event":{}}',
        '{"connected":{"message":"m","session_id":"s"},"error":{"message":"x"}}',
        "{}",
        "[]",
        "not json",
        '{"audio_stream":{"event":"paused"}}',
        '{"audio_stream":{"event":"finished","data":"AA=="}}',
        '{"packet_ack":{"seq":1,"received":1,"total":1,"type":"audio"}}',  # VLM shape on audio
    ],
)
def test_malformed_events_are_rejected(frame: str) -> None:
    with pytest.raises(ProtocolError):
        decode_audio_event(frame)


def test_event_decode_names_the_problem() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_vlm_event('{"chat_chunk":{"chunk":"a","full_response":"a"}}')
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE
    with pytest.raises(ProtocolError) as info:
        decode_vlm_event('{"a":{},"b":{}}')
    assert info.value.code is ErrorCode.INVALID_MESSAGE

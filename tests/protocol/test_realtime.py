"""``protocol.realtime``: the client decoder (GA and beta shapes, typed errors, limits) and the server events, which
the official ``openai`` SDK's models must accept."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from protocol import realtime as rt
from protocol.realtime_session import SessionState

SDK_SERVER = TypeAdapter(RealtimeServerEvent)


def decode(obj: Any) -> rt.ClientEvent | rt.RealtimeError:
    return rt.decode_client_event(json.dumps(obj))


# ------------------------------------------------------------------------------------------ client events


def test_every_ga_client_event_decodes() -> None:
    audio = base64.b64encode(b"\x01\x02").decode()
    frames = [
        {"type": "session.update", "session": {"type": "realtime", "instructions": "be brief"}},
        {"type": "input_audio_buffer.append", "audio": audio},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        },
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "c1", "output": "{}"},
        },
        {
            "type": "conversation.item.truncate",
            "item_id": "i1",
            "content_index": 0,
            "audio_end_ms": 5,
        },
        {"type": "conversation.item.delete", "item_id": "i1"},
        {"type": "conversation.item.retrieve", "item_id": "i1"},
        {"type": "response.create"},
        {"type": "response.create", "response": {"output_modalities": ["text"]}},
        {"type": "response.cancel"},
        {"type": "input_image_buffer.append", "image": "aGk="},
    ]
    for frame in frames:
        event = decode({**frame, "event_id": "evt_1"})
        assert not isinstance(event, rt.RealtimeError), (frame, event)
        assert event.__struct_config__.tag == frame["type"]
        assert event.event_id == "evt_1"
    append = decode(frames[1])
    assert isinstance(append, rt.InputAudioBufferAppend) and append.audio == b"\x01\x02"


def test_beta_session_fields_normalise_to_ga() -> None:
    event = decode(
        {
            "type": "session.update",
            "session": {
                "modalities": ["text", "audio"],
                "input_audio_format": "g711_ulaw",
                "output_audio_format": "g711_alaw",
                "voice": "Cherry",
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
                "input_audio_transcription": {"model": "paraformer-realtime-v2"},
                "max_response_output_tokens": 100,
            },
        }
    )
    assert isinstance(event, rt.SessionUpdate)
    s = event.session
    assert s.output_modalities == ["audio"]
    assert s.modalities is msgspec.UNSET and s.voice is msgspec.UNSET
    assert isinstance(s.audio, rt.AudioConfig)
    assert isinstance(s.audio.input, rt.AudioInputConfig)
    assert isinstance(s.audio.output, rt.AudioOutputConfig)
    assert s.audio.input.format == rt.AudioFormat("audio/pcmu")
    assert s.audio.output.format == rt.AudioFormat("audio/pcma")
    assert s.audio.output.voice == "Cherry"
    assert isinstance(s.audio.input.turn_detection, rt.ServerVad)
    assert s.audio.input.turn_detection.silence_duration_ms == 400
    assert s.max_output_tokens == 100
    state = SessionState(id="s", model="qwen-plus").apply(s)
    assert isinstance(state, SessionState)
    assert state.input_format == rt.AudioFormat("audio/pcmu", 8000)
    assert state.turn_detection is not None and state.turn_detection.silence_duration_ms == 400
    assert state.turn_detection.prefix_padding_ms == 300  # default kept
    assert state.transcription_model == "paraformer-realtime-v2"


def test_beta_text_only_and_manual_mode() -> None:
    event = decode(
        {"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None}}
    )
    assert isinstance(event, rt.SessionUpdate)
    state = SessionState(id="s", model="m").apply(event.session)
    assert isinstance(state, SessionState)
    assert state.output_modalities == ("text",) and state.turn_detection is None
    created = decode({"type": "response.create", "response": {"modalities": ["text"]}})
    assert isinstance(created, rt.ResponseCreate)
    assert created.response.output_modalities == ["text"]


@pytest.mark.parametrize(
    ("frame", "code", "event_id"),
    [
        (b"{}", "binary_frame", None),
        ("not json", "invalid_json", None),
        ("[1, 2]", "invalid_message", None),
        ('{"type": "nope", "event_id": "e1"}', "unknown_event", "e1"),
        ('{"event_id": "e2"}', "unknown_event", "e2"),
        (
            '{"type": "input_audio_buffer.append", "event_id": "e3", "audio": "%%%"}',
            "invalid_base64",
            "e3",
        ),
        ('{"type": "conversation.item.delete", "event_id": "e4"}', "invalid_message", "e4"),
        (
            '{"type": "session.update", "event_id": "e5", "session": {"input_audio_format": "opus"}}',
            "invalid_message",
            "e5",
        ),
        (
            '{"type": "session.update", "event_id": "e6", "session": '
            + "[" * 5000
            + "]" * 5000
            + "}",
            "invalid_message",
            None,
        ),
        ('{"type": ' + "[" * 100000, "invalid_message", None),
        ("x" * (rt.RealtimeLimits().max_frame_bytes + 1), "frame_too_large", None),
        ("\ud800", "invalid_json", None),
    ],
)
def test_bad_frames_are_typed_errors(frame: str | bytes, code: str, event_id: str | None) -> None:
    got = rt.decode_client_event(frame)
    assert isinstance(got, rt.RealtimeError)
    assert got.code == code, got
    assert got.event_id == event_id


def test_error_param_names_the_field() -> None:
    got = decode({"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": -1})
    assert isinstance(got, rt.RealtimeError) and got.param == "audio_end_ms"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["type", "event_id", "session", "audio", "item", "response", "x"]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=20,
        ).map(json.dumps),
        st.builds(
            lambda kind, body: json.dumps({"type": kind, **body}),
            st.sampled_from(sorted(rt.CLIENT_EVENT_TYPES)),
            st.dictionaries(
                st.sampled_from(
                    ["session", "audio", "item", "item_id", "response", "audio_end_ms", "event_id"]
                ),
                st.none()
                | st.integers()
                | st.text(max_size=10)
                | st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
                max_size=3,
            ),
        ),
    )
)
def test_decoder_never_raises(frame: str) -> None:
    got = rt.decode_client_event(frame)
    assert (
        isinstance(got, rt.RealtimeError | rt.SessionUpdate)
        or got.__struct_config__.tag in rt.CLIENT_EVENT_TYPES
    )


# ------------------------------------------------------------------------------------------ server events


def sample_server_events() -> list[rt.ServerEvent]:
    state = SessionState(id="sess_1", model="qwen-plus", instructions="hi")
    item = rt.MessageItem(
        role="assistant",
        content=[rt.ContentPart(type="output_audio", transcript="hello")],
        id="item_2",
        object="realtime.item",
        status="completed",
    )
    user = rt.MessageItem(
        role="user",
        content=[rt.ContentPart(type="input_audio", transcript=None)],
        id="item_1",
        object="realtime.item",
        status="completed",
    )
    call = rt.FunctionCallItem(
        name="clock",
        arguments="{}",
        call_id="call_1",
        id="item_3",
        object="realtime.item",
        status="completed",
    )
    response = rt.Response(
        id="resp_1",
        status="completed",
        output=[item, call],
        output_modalities=["audio"],
        conversation_id="conv_1",
        status_details=rt.ResponseStatusDetails(type="completed"),
        usage=rt.Usage(total_tokens=3, input_tokens=1, output_tokens=2),
    )
    cancelled = rt.Response(
        id="resp_2",
        status="cancelled",
        output=[],
        output_modalities=["audio"],
        conversation_id="conv_1",
        status_details=rt.ResponseStatusDetails(type="cancelled", reason="turn_detected"),
    )
    part = {"response_id": "resp_1", "item_id": "item_2", "output_index": 0, "content_index": 0}
    return [
        rt.SessionCreated(session=state.view()),
        rt.SessionUpdated(session=SessionState(id="s", model="m", turn_detection=None).view()),
        rt.InputAudioBufferSpeechStarted(audio_start_ms=10, item_id="item_1"),
        rt.InputAudioBufferSpeechStopped(audio_end_ms=900, item_id="item_1"),
        rt.InputAudioBufferCommitted(item_id="item_1", previous_item_id=None),
        rt.InputAudioBufferCleared(),
        rt.ConversationItemAdded(item=user, previous_item_id=None),
        rt.ConversationItemDone(item=user, previous_item_id=None),
        rt.ConversationItemRetrieved(item=item),
        rt.ConversationItemTruncated(item_id="item_2", content_index=0, audio_end_ms=200),
        rt.ConversationItemDeleted(item_id="item_2"),
        rt.InputAudioTranscriptionDelta(item_id="item_1", content_index=0, delta="he"),
        rt.InputAudioTranscriptionCompleted(
            item_id="item_1",
            content_index=0,
            transcript="hello",
            usage=rt.TranscriptionUsage(seconds=1.5),
        ),
        rt.InputAudioTranscriptionFailed(
            item_id="item_1",
            content_index=0,
            error=rt.ErrorDetail(type="server_error", code="upstream_error", message="x"),
        ),
        rt.ResponseCreated(
            response=msgspec.structs.replace(response, status="in_progress", usage=None)
        ),
        rt.ResponseDone(response=response),
        rt.ResponseDone(response=cancelled),
        rt.ResponseOutputItemAdded(response_id="resp_1", output_index=0, item=item),
        rt.ResponseOutputItemDone(response_id="resp_1", output_index=1, item=call),
        rt.ResponseContentPartAdded(**part, part=rt.ContentPartOut(type="audio", transcript="")),
        rt.ResponseContentPartDone(**part, part=rt.ContentPartOut(type="text", text="hello")),
        rt.ResponseOutputAudioDelta(**part, delta="AAAA"),
        rt.ResponseOutputAudioDone(**part),
        rt.ResponseOutputAudioTranscriptDelta(**part, delta="he"),
        rt.ResponseOutputAudioTranscriptDone(**part, transcript="hello"),
        rt.ResponseOutputTextDelta(**part, delta="he"),
        rt.ResponseOutputTextDone(**part, text="hello"),
        rt.ResponseFunctionCallArgumentsDelta(
            response_id="resp_1", item_id="item_3", output_index=1, call_id="call_1", delta="{"
        ),
        rt.ResponseFunctionCallArgumentsDone(
            response_id="resp_1",
            item_id="item_3",
            output_index=1,
            call_id="call_1",
            name="clock",
            arguments="{}",
        ),
        rt.RateLimitsUpdated(
            rate_limits=[rt.RateLimit(name="requests", limit=60, remaining=59, reset_seconds=1.0)]
        ),
        rt.error_event(rt.RealtimeError("invalid_value", "bad", param="x", event_id="evt_9")),
    ]


def test_every_server_event_type_has_a_sample() -> None:
    covered = {type(e) for e in sample_server_events()}
    assert covered == set(rt.SERVER_EVENT_TYPES)


@pytest.mark.parametrize("event", sample_server_events(), ids=lambda e: e.__struct_config__.tag)
def test_server_events_parse_with_the_openai_sdk(event: rt.ServerEvent) -> None:
    frame = rt.encode_server_event(event, "event_1")
    parsed = SDK_SERVER.validate_python(json.loads(frame))
    assert parsed.type == event.__struct_config__.tag
    assert parsed.event_id == "event_1"
    assert rt.decode_server_event(frame) == msgspec.structs.replace(event, event_id="event_1")


def test_error_event_has_openai_shape() -> None:
    frame = rt.encode_server_event(
        rt.error_event(rt.RealtimeError("unknown_event", "no", param="type", event_id="c7")), "e1"
    )
    assert json.loads(frame) == {
        "type": "error",
        "event_id": "e1",
        "error": {
            "type": "invalid_request_error",
            "code": "unknown_event",
            "message": "no",
            "param": "type",
            "event_id": "c7",
        },
    }


def test_dashscope_omni_frames_decode() -> None:
    """The frames of DashScope's Qwen-Omni realtime examples (shared/dashscope-protocols.md)."""
    update = rt.decode_client_event(
        '{"event_id":"event_ToPZqeobitzUJnt3QqtWg","type":"session.update","session":{"modalities":["text",'
        '"audio"],"voice":"Cherry","input_audio_format":"pcm16","output_audio_format":"pcm24","instructions":'
        '"You are a helpful assistant.","input_audio_transcription":{"model":"gummy-realtime-v1"},'
        '"turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":800}}}'
    )
    assert isinstance(update, rt.SessionUpdate)
    state = SessionState(id="s", model="m").apply(update.session)
    assert isinstance(state, SessionState)
    assert state.output_format == rt.AudioFormat("audio/pcm", 24000) and state.voice == "Cherry"
    assert state.turn_detection is not None and state.turn_detection.silence_duration_ms == 800
    assert state.transcription_model == "gummy-realtime-v1"
    create = rt.decode_client_event(
        '{"type":"response.create","response":{"instructions":null,"modalities":["text","audio"]}}'
    )
    assert isinstance(create, rt.ResponseCreate)
    assert create.response.instructions is None and create.response.output_modalities == ["audio"]

"""The codec: every kind of bad frame gets its documented code; nothing but ProtocolError escapes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    AUDIO_LIMITS,
    SSE_DONE,
    VLM_LIMITS,
    AudioPacket,
    Cancel,
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    ErrorCode,
    Limits,
    ProtocolError,
    RemoteProtocolError,
    UserMessage,
    VlmAudioPacket,
    VlmEnd,
    VlmImagePacket,
    decode_audio_client,
    decode_audio_event,
    decode_chat_request,
    decode_json,
    decode_vlm_client,
    decode_vlm_event,
    encode_client,
    encode_json,
    encode_sse,
)

from .samples import AUDIO_CLIENT_SAMPLES, VLM_CLIENT_SAMPLES


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def packet(seq: Any = 1, total: Any = 2, data: Any = None, **extra: Any) -> str:
    body = {"seq": seq, "total": total, "data": b64(b"ab") if data is None else data, **extra}
    return json.dumps(body)


def code_of_audio(frame: str | bytes, limits: Limits = AUDIO_LIMITS) -> ErrorCode:
    with pytest.raises(RemoteProtocolError) as info:
        decode_audio_client(frame, limits)
    return info.value.code


def code_of_vlm(frame: str | bytes, limits: Limits = VLM_LIMITS) -> ErrorCode:
    with pytest.raises(RemoteProtocolError) as info:
        decode_vlm_client(frame, limits)
    return info.value.code


# --------------------------------------------------------------------------- good frames


def test_audio_packet_decodes_to_bytes() -> None:
    message = decode_audio_client(packet(1, 10, b64(b"\x00\xffabc")))
    assert message == AudioPacket(seq=1, total=10, data=b"\x00\xffabc")


def test_audio_packet_tolerates_unknown_fields_and_type_audio() -> None:
    assert decode_audio_client(packet(2, 2, device="esp32")) == AudioPacket(
        seq=2, total=2, data=b"ab"
    )
    assert decode_audio_client(packet(2, 2, type="audio")) == AudioPacket(
        seq=2, total=2, data=b"ab"
    )


def test_cancel_on_both_endpoints() -> None:
    assert decode_audio_client('{"type":"cancel"}') == Cancel()
    assert decode_vlm_client('{"type":"cancel","why":"user tapped stop"}') == Cancel()


def test_vlm_messages_decode_by_type() -> None:
    assert decode_vlm_client(packet(1, 1, type="audio")) == VlmAudioPacket(
        seq=1, total=1, data=b"ab"
    )
    assert decode_vlm_client(packet(1, 1, type="image")) == VlmImagePacket(
        seq=1, total=1, data=b"ab"
    )
    assert decode_vlm_client('{"type":"end"}') == VlmEnd()


@pytest.mark.parametrize("message", AUDIO_CLIENT_SAMPLES, ids=repr)
def test_audio_client_messages_round_trip(message: Any) -> None:
    assert decode_audio_client(encode_client(message)) == message


@pytest.mark.parametrize("message", VLM_CLIENT_SAMPLES, ids=repr)
def test_vlm_client_messages_round_trip(message: Any) -> None:
    assert decode_vlm_client(encode_client(message)) == message


def test_packet_at_exactly_the_limits_is_accepted() -> None:
    limits = Limits(max_packet_bytes=6, max_frame_bytes=200)
    assert decode_audio_client(packet(1, 1, b64(b"123456")), limits).data == b"123456"
    assert decode_vlm_client(packet(1, 1, b64(b"x" * 50 * 1024), type="image")).data == b"x" * 51200


# --------------------------------------------------------------------------- bad frames


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", ErrorCode.INVALID_JSON),
        ('{"seq": 1,', ErrorCode.INVALID_JSON),
        ("", ErrorCode.INVALID_JSON),
        ("\ud800", ErrorCode.INVALID_JSON),  # not encodable as UTF-8
        ('{"data":"\\ud800"}', ErrorCode.INVALID_JSON),  # lone surrogate escape
        ("[1, 2, 3]", ErrorCode.INVALID_MESSAGE),
        ('"text"', ErrorCode.INVALID_MESSAGE),
        ("null", ErrorCode.INVALID_MESSAGE),
        ("{}", ErrorCode.INVALID_MESSAGE),
        ('{"seq":1,"total":2}', ErrorCode.INVALID_MESSAGE),
        ('{"total":2,"data":""}', ErrorCode.INVALID_MESSAGE),
        (packet("1", 2), ErrorCode.INVALID_MESSAGE),
        (packet(1.0, 2), ErrorCode.INVALID_MESSAGE),
        (packet(True, 2), ErrorCode.INVALID_MESSAGE),
        (packet(1, None), ErrorCode.INVALID_MESSAGE),
        (packet(1, 2, 42), ErrorCode.INVALID_MESSAGE),
        (packet(1, 2, type=7), ErrorCode.INVALID_MESSAGE),
        (packet(1, 2, type="end"), ErrorCode.UNEXPECTED_MESSAGE),
        ('{"type":"video"}', ErrorCode.UNEXPECTED_MESSAGE),
        (packet(0, 2), ErrorCode.BAD_SEQUENCE),
        (packet(-1, 2), ErrorCode.BAD_SEQUENCE),
        (packet(1, 0), ErrorCode.BAD_SEQUENCE),
        (packet(3, 2), ErrorCode.BAD_SEQUENCE),
        (packet(2**31, 2**31), ErrorCode.BAD_SEQUENCE),
        (packet(1, 2, "base64..."), ErrorCode.INVALID_BASE64),
        (packet(1, 2, "YWJj\n"), ErrorCode.INVALID_BASE64),
        (packet(1, 2, "YWJ"), ErrorCode.INVALID_BASE64),
        (packet(1, 2, "YW Jj"), ErrorCode.INVALID_BASE64),
        (packet(1, 2, "-_-_"), ErrorCode.INVALID_BASE64),
        (packet(1, 2, b64(b"x" * (8 * 1024 + 1))), ErrorCode.PACKET_TOO_LARGE),
        (b'{"seq":1,"total":1,"data":""}', ErrorCode.BINARY_FRAME),
        (b"", ErrorCode.BINARY_FRAME),
        (" " * (256 * 1024 + 1), ErrorCode.FRAME_TOO_LARGE),
        ("中" * (100 * 1024), ErrorCode.FRAME_TOO_LARGE),  # 300 KiB of UTF-8 in 100 Ki characters
    ],
)
def test_bad_audio_frames_get_their_code(frame: str | bytes, code: ErrorCode) -> None:
    assert code_of_audio(frame) is code


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{]", ErrorCode.INVALID_JSON),
        ("[]", ErrorCode.INVALID_MESSAGE),
        (packet(1, 2), ErrorCode.INVALID_MESSAGE),  # VLM packets need a type
        ('{"type":"audio","seq":1,"total":1}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"video","seq":1,"total":1,"data":""}', ErrorCode.UNEXPECTED_MESSAGE),
        ('{"type":5}', ErrorCode.INVALID_MESSAGE),
        (packet(0, 1, type="image"), ErrorCode.BAD_SEQUENCE),
        (packet(2, 1, type="audio"), ErrorCode.BAD_SEQUENCE),
        (packet(1, 1, "base64...", type="image"), ErrorCode.INVALID_BASE64),
        (packet(1, 1, b64(b"x" * (50 * 1024 + 1)), type="image"), ErrorCode.PACKET_TOO_LARGE),
        (b"\x00", ErrorCode.BINARY_FRAME),
    ],
)
def test_bad_vlm_frames_get_their_code(frame: str | bytes, code: ErrorCode) -> None:
    assert code_of_vlm(frame) is code


def test_limits_are_configurable() -> None:
    limits = Limits(max_frame_bytes=64, max_packet_bytes=2)
    assert code_of_audio(packet(1, 1, b64(b"abc")), limits) is ErrorCode.PACKET_TOO_LARGE
    assert code_of_audio(packet(1, 1, b64(b"a" * 40)), limits) is ErrorCode.FRAME_TOO_LARGE
    assert (
        code_of_vlm(packet(1, 1, b64(b"abc"), type="audio"), limits) is ErrorCode.PACKET_TOO_LARGE
    )


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_packets"):
        Limits(max_packets=0)
    with pytest.raises(ValueError, match="upload_idle_timeout"):
        Limits(upload_idle_timeout=0.0)


def test_error_messages_say_where() -> None:
    with pytest.raises(ProtocolError, match=r"\$\.seq"):
        decode_audio_client(packet(0, 2))


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=20),
    st.sampled_from(["", "AA==", "YWJj", "base64...", "audio", "image", "end", "cancel"]),
    st.none(),
    st.booleans(),
    st.floats(),
    json_values,
)
packet_like = st.fixed_dictionaries(
    {},
    optional={
        "seq": field_values,
        "total": field_values,
        "data": field_values,
        "type": field_values,
    },
)
frames = st.one_of(
    st.text(),
    st.binary(),
    st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")),
    json_values.map(json.dumps),
    packet_like.map(json.dumps),
    packet_like.map(lambda d: json.dumps(d, ensure_ascii=False)),
)
small = Limits(max_frame_bytes=512, max_packet_bytes=16)


@settings(max_examples=400, deadline=None)
@given(frames)
def test_client_decoders_raise_only_protocol_errors(frame: str | bytes) -> None:
    for decode in (decode_audio_client, decode_vlm_client):
        for limits in (small, AUDIO_LIMITS):
            try:
                decode(frame, limits)
            except ProtocolError as error:
                assert isinstance(error.code, ErrorCode)
                assert error.message


@settings(max_examples=200, deadline=None)
@given(st.one_of(frames, st.dictionaries(st.text(max_size=12), packet_like).map(json.dumps)))
def test_event_and_chat_decoders_raise_only_protocol_errors(frame: str | bytes) -> None:
    for decode in (decode_audio_event, decode_vlm_event, decode_chat_request):
        try:
            decode(frame)
        except ProtocolError as error:
            assert isinstance(error.code, ErrorCode)


@settings(deadline=None)
@given(st.integers(1, 50), st.integers(1, 50), st.binary(max_size=64))
def test_valid_packets_decode_to_what_was_sent(seq: int, extra: int, data: bytes) -> None:
    total = seq + extra - 1
    frame = json.dumps({"seq": seq, "total": total, "data": b64(data)})
    assert decode_audio_client(frame) == AudioPacket(seq=seq, total=total, data=data)


# --------------------------------------------------------------------------- chat and SSE


def test_chat_request_keeps_unknown_fields_for_pass_through() -> None:
    body = {
        "model": "qwen-plus",
        "messages": [{"role": "user", "content": "你好！", "x_user_field": 1}],
        "enable_search": True,
        "my_extra": {"a": [1, 2]},
    }
    parsed = decode_chat_request(json.dumps(body, ensure_ascii=False))
    assert parsed.body == body
    assert parsed.extra == {"my_extra": {"a": [1, 2]}}
    assert parsed.request.enable_search is True
    assert parsed.request.messages == [UserMessage(content="你好！")]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"model": "m"},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": "x"}], "temperature": 2.5},
        {"messages": [{"role": "user", "content": "x"}], "top_p": 0},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"},
        [],
    ],
)
def test_invalid_chat_requests_are_rejected(body: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_chat_request(json.dumps(body))
    assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_chat_request_accepts_nulls_and_vision_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "s"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                    {"type": "text", "text": "这是什么"},
                ],
            },
        ],
        "temperature": None,
        "stop": ["\n\nUser:"],
        "tools": None,
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_object"},
        "stream_options": {"include_usage": True},
    }
    assert decode_chat_request(json.dumps(body)).request.temperature is None


def test_chat_request_errors_are_invalid_json_for_non_json() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_chat_request(b"{")
    assert info.value.code is ErrorCode.INVALID_JSON


def test_sse_helpers() -> None:
    chunk = ChatCompletionChunk(
        id="c",
        object="chat.completion.chunk",
        created=1,
        model="m",
        choices=[ChunkChoice(index=0, delta=Delta(content="你"), finish_reason=None)],
    )
    event = encode_sse(chunk)
    assert event.startswith(b"data: {") and event.endswith(b"}\n\n")
    assert decode_json(event[6:-2], ChatCompletionChunk) == chunk
    assert encode_sse(b'{"x":1}') == b'data: {"x":1}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"
    assert "你".encode() in encode_json(chunk)


@pytest.mark.parametrize(
    "inner",
    [
        "[" * 5_000 + "]" * 5_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 5_000 + "1" + "}" * 5_000,
        '{"a":' * 30_000 + "1" + "}" * 30_000,
    ],
    ids=["array-5k", "array-100k", "object-5k", "object-30k"],
)
def test_deeply_nested_json_is_invalid_message_everywhere(inner: str) -> None:
    # msgspec raises RecursionError for these: it must surface as the protocol's typed error.
    frames = [
        (decode_audio_client, f'{{"seq": 1, "total": 1, "data": "", "x": {inner}}}'),
        (decode_vlm_client, f'{{"type": "end", "x": {inner}}}'),
        (lambda f: decode_json(f, dict[str, Any]), f'{{"x": {inner}}}'),
        (decode_chat_request, f'{{"messages": [], "x": {inner}}}'),
    ]
    for decode, frame in frames:
        with pytest.raises(RemoteProtocolError) as info:
            decode(frame)
        assert info.value.code is ErrorCode.INVALID_MESSAGE
        assert "nested too deeply" in info.value.message

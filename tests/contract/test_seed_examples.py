"""Every JSON example of the seed README decodes with the Structs and validates against ``schemas/``;
mangled copies (unknown event name, wrong ``object``, missing required field, extra or mistyped field) do
not."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from protocol import (
    AudioPacket,
    ChatCompletion,
    ChatCompletionChunk,
    ChatStarted,
    HealthResponse,
    ProtocolError,
    VlmAudioPacket,
    VlmEnd,
    VlmImagePacket,
    decode_audio_client,
    decode_audio_event,
    decode_chat_request,
    decode_json,
    decode_vlm_client,
    decode_vlm_event,
    encode_event,
    encode_json,
)

from .contract import errors, valid
from .seed_examples import EXAMPLES, TEMPLATES, Example, of_kind

SERVER = [e for e in EXAMPLES if e.kind in ("audio-server", "vlm-server")]
CLIENT = [e for e in EXAMPLES if e.kind in ("audio-client", "vlm-client")]
SCHEMA_FILE = {"audio": "audio.schema.json", "vlm": "vlm.schema.json"}
DECODE_EVENT: dict[str, Callable[[str], Any]] = {
    "audio": decode_audio_event,
    "vlm": decode_vlm_event,
}
DECODE_CLIENT: dict[str, Callable[[str], Any]] = {
    "audio": decode_audio_client,
    "vlm": decode_vlm_client,
}
#: Removing these leaves the seed's other shape of the same event (chat_started's skip message).
OPTIONAL_IN_SEED = {("chat_started", "user_message")}


def ids(examples: list[Example]) -> list[str]:
    return [e.id for e in examples]


def channel(example: Example) -> str:
    return example.kind.split("-")[0]


def rejected_by_struct(decode: Callable[[str], Any], value: Any) -> bool:
    try:
        decode(json.dumps(value, ensure_ascii=False))
    except ProtocolError:
        return True
    return False


def test_every_example_was_found() -> None:
    assert Counter(e.kind for e in EXAMPLES) == {
        "chat-request": 2,  # the request body and the curl example
        "chat-response": 1,
        "chat-chunk": 3,
        "audio-client": 1,
        "audio-server": 12,
        "vlm-client": 3,
        "vlm-server": 11,
        "health": 1,
    }
    assert len(TEMPLATES) == 2


# --------------------------------------------------------------------------- WebSocket events


@pytest.mark.parametrize("example", SERVER, ids=ids(SERVER))
def test_seed_event_decodes_validates_and_is_emitted_as_shown(example: Example) -> None:
    ch = channel(example)
    event = DECODE_EVENT[ch](example.text)
    assert json.loads(encode_event(event)) == example.value
    assert errors(SCHEMA_FILE[ch], example.value) == []
    assert valid(SCHEMA_FILE[ch], example.value, "ServerMessage")
    assert not valid(SCHEMA_FILE[ch], example.value, "ClientMessage")


@pytest.mark.parametrize("example", SERVER, ids=ids(SERVER))
def test_seed_event_with_unknown_name_is_rejected(example: Example) -> None:
    ((_, body),) = example.value.items()
    for name in ("no_such_event", "Connected", "packet-ack", ""):
        mangled = {name: body}
        assert rejected_by_struct(DECODE_EVENT[channel(example)], mangled)
        assert not valid(SCHEMA_FILE[channel(example)], mangled)


@pytest.mark.parametrize("example", SERVER, ids=ids(SERVER))
def test_seed_event_missing_a_field_is_rejected(example: Example) -> None:
    ((name, body),) = example.value.items()
    for field in body:
        mangled = {name: {k: v for k, v in body.items() if k != field}}
        expected_valid = (name, field) in OPTIONAL_IN_SEED
        assert rejected_by_struct(DECODE_EVENT[channel(example)], mangled) is not expected_valid
        assert valid(SCHEMA_FILE[channel(example)], mangled) is expected_valid


@pytest.mark.parametrize("example", SERVER, ids=ids(SERVER))
def test_seed_event_with_extra_or_mistyped_field_is_rejected(example: Example) -> None:
    ((name, body),) = example.value.items()
    decode, schema = DECODE_EVENT[channel(example)], SCHEMA_FILE[channel(example)]
    extra = {name: {**body, "unexpected": 1}}
    assert rejected_by_struct(decode, extra) and not valid(schema, extra)
    for field in body:
        mistyped = {name: {**body, field: [body[field]]}}
        assert rejected_by_struct(decode, mistyped), field
        assert not valid(schema, mistyped), field
    other = "tts_started" if name != "tts_started" else "error"
    two = {name: body, other: {"message": "x"}}
    assert rejected_by_struct(decode, two) and not valid(schema, two)


def test_both_shapes_of_chat_started_are_kept() -> None:
    started, skipped = (e for e in of_kind("audio-server") if "chat_started" in e.value)
    assert decode_audio_event(started.text) == ChatStarted(
        message="开始生成AI回答...", user_message="转录的用户消息"
    )
    assert decode_audio_event(skipped.text) == ChatStarted(
        message="跳过对话生成：语音识别失败或结果为空"
    )


# --------------------------------------------------------------------------- WebSocket client messages


@pytest.mark.parametrize("example", CLIENT, ids=ids(CLIENT))
def test_seed_client_message_decodes_and_validates(example: Example) -> None:
    ch = channel(example)
    message = DECODE_CLIENT[ch](example.text)
    assert isinstance(message, AudioPacket | VlmAudioPacket | VlmImagePacket | VlmEnd)
    assert errors(SCHEMA_FILE[ch], example.value) == []
    assert valid(SCHEMA_FILE[ch], example.value, "ClientMessage")
    assert not valid(SCHEMA_FILE[ch], example.value, "ServerMessage")


@pytest.mark.parametrize("example", CLIENT, ids=ids(CLIENT))
def test_seed_client_message_missing_a_field_is_rejected(example: Example) -> None:
    ch = channel(example)
    for field in example.value:
        mangled = {k: v for k, v in example.value.items() if k != field}
        assert rejected_by_struct(DECODE_CLIENT[ch], mangled), field
        assert not valid(SCHEMA_FILE[ch], mangled), field


@pytest.mark.parametrize("example", CLIENT, ids=ids(CLIENT))
def test_seed_client_message_mistyped_is_rejected_but_extras_are_tolerated(
    example: Example,
) -> None:
    ch = channel(example)
    for field in example.value:
        mangled = {**example.value, field: [example.value[field]]}
        assert rejected_by_struct(DECODE_CLIENT[ch], mangled), field
        assert not valid(SCHEMA_FILE[ch], mangled), field
    extended = {**example.value, "device": "esp32-s3"}
    assert not rejected_by_struct(DECODE_CLIENT[ch], extended)
    assert valid(SCHEMA_FILE[ch], extended)


def test_vlm_packet_with_unknown_type_is_rejected() -> None:
    packet = {**of_kind("vlm-client")[0].value, "type": "video"}
    assert rejected_by_struct(decode_vlm_client, packet)
    assert not valid("vlm.schema.json", packet)


# --------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize("example", of_kind("chat-request"), ids=ids(of_kind("chat-request")))
def test_seed_chat_request(example: Example) -> None:
    parsed = decode_chat_request(example.text)
    assert parsed.body == example.value and parsed.extra == {}
    assert valid("chat.schema.json", example.value, "ChatCompletionRequest")
    assert errors("chat.schema.json", example.value) == []
    with_extra = {**example.value, "enable_thinking": False, "vendor_field": [1]}
    assert decode_chat_request(json.dumps(with_extra)).extra == {"vendor_field": [1]}
    assert valid("chat.schema.json", with_extra)
    for mangled in (
        {k: v for k, v in example.value.items() if k != "messages"},
        {**example.value, "messages": []},
        {**example.value, "temperature": "hot"},
        {**example.value, "max_tokens": 0},
    ):
        assert rejected_by_struct(decode_chat_request, mangled)
        assert not valid("chat.schema.json", mangled, "ChatCompletionRequest")


CHAT_RESPONSES = [*of_kind("chat-response"), *of_kind("chat-chunk")]
RESPONSE_TYPE = {"chat-response": ChatCompletion, "chat-chunk": ChatCompletionChunk}


@pytest.mark.parametrize("example", CHAT_RESPONSES, ids=ids(CHAT_RESPONSES))
def test_seed_chat_response_and_chunks(example: Example) -> None:
    cls = RESPONSE_TYPE[example.kind]
    decoded = decode_json(example.text, cls)
    assert json.loads(encode_json(decoded)) == example.value
    assert valid("chat.schema.json", example.value, cls.__name__)
    assert errors("chat.schema.json", example.value) == []

    def decode(text: str) -> Any:
        return decode_json(text, cls)

    wrong_objects = ["chat.completion.chunk", "chat.completion", "chat.completions", "list", None]
    for wrong in [w for w in wrong_objects if w != example.value["object"]]:
        mangled = {**example.value, "object": wrong}
        assert rejected_by_struct(decode, mangled)
        assert not valid("chat.schema.json", mangled, cls.__name__)
        assert not valid("chat.schema.json", mangled)
    for field in ("id", "object", "created", "model", "choices"):
        mangled = {k: v for k, v in example.value.items() if k != field}
        assert rejected_by_struct(decode, mangled), field
        assert not valid("chat.schema.json", mangled), field
    choice = copy.deepcopy(example.value)
    del choice["choices"][0]["finish_reason"]
    assert rejected_by_struct(decode, choice) and not valid("chat.schema.json", choice)


def test_seed_health() -> None:
    (example,) = of_kind("health")
    health = decode_json(example.text, HealthResponse)
    assert json.loads(encode_json(health)) == example.value
    assert valid("chat.schema.json", example.value, "HealthResponse")

    def decode(text: str) -> Any:
        return decode_json(text, HealthResponse)

    for mangled in (
        {"status": "fine", "timestamp": example.value["timestamp"]},
        {"status": "healthy"},
        {"timestamp": example.value["timestamp"]},
        {**example.value, "unknown": True},
    ):
        assert rejected_by_struct(decode, mangled)
        assert not valid("chat.schema.json", mangled, "HealthResponse")

"""The committed contract: identical to what the Structs generate, valid documents, and matching real traffic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from protocol import AUDIO_EVENTS, VLM_EVENTS, ErrorCode, EventRegistry, encode_client, encode_event
from protocol.schema import CONTRACT_VERSION, generate, write_schemas
from tests.protocol.samples import (
    AUDIO_CLIENT_SAMPLES,
    AUDIO_EVENTS_SAMPLES,
    VLM_CLIENT_SAMPLES,
    VLM_EVENTS_SAMPLES,
)

from .contract import SCHEMAS, document, valid

VENDOR = Path(__file__).parent / "vendor"
GENERATED = generate()
CHANNELS: dict[str, tuple[str, EventRegistry]] = {
    "audio": ("/v1/chat/audio", AUDIO_EVENTS),
    "vlm": ("/v1/chat/vlm", VLM_EVENTS),
}


def vendor(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VENDOR / name).read_text(encoding="utf-8"))
    return loaded


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_committed_file_is_what_the_structs_generate(name: str) -> None:
    path = SCHEMAS / name
    assert path.is_file(), f"schemas/{name} is missing: run `make schemas`"
    assert path.read_text(encoding="utf-8") == GENERATED[name], (
        f"schemas/{name} is out of date: run `make schemas` and commit the result"
    )


def test_no_stale_contract_files() -> None:
    assert {p.name for p in SCHEMAS.glob("*.json")} == set(GENERATED)


def test_generation_is_deterministic_and_written_as_generated(tmp_path: Path) -> None:
    assert generate() == GENERATED
    for text in GENERATED.values():
        assert text.endswith("}\n")
        assert (
            json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            == text
        )
    written = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(GENERATED)
    for path in written:
        assert path.read_text(encoding="utf-8") == GENERATED[path.name]


def test_expected_files() -> None:
    assert set(GENERATED) == {
        "chat.schema.json",
        "audio.schema.json",
        "vlm.schema.json",
        "realtime.schema.json",
        "asyncapi.json",
        "openapi.json",
    }


@pytest.mark.parametrize(
    "name", ["chat.schema.json", "audio.schema.json", "vlm.schema.json", "realtime.schema.json"]
)
def test_channel_files_are_json_schema_2020_12(name: str) -> None:
    schema = document(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    for definition in schema["$defs"].values():
        Draft202012Validator.check_schema(definition)
    if name != "chat.schema.json":
        assert schema["oneOf"] == [
            {"$ref": "#/$defs/ClientMessage"},
            {"$ref": "#/$defs/ServerMessage"},
        ]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_every_reference_resolves(name: str) -> None:
    doc = document(name)
    found = list(refs(doc))
    assert found
    for ref in found:
        resolve(doc, ref)


def test_asyncapi_is_a_valid_asyncapi_3_document() -> None:
    doc = document("asyncapi.json")
    errors = [
        e.message for e in Draft7Validator(vendor("asyncapi-3.0.0.schema.json")).iter_errors(doc)
    ]
    assert errors == []
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["version"] == CONTRACT_VERSION
    schemes = doc["components"]["securitySchemes"]
    assert schemes["queryToken"] == {**schemes["queryToken"], "in": "query", "name": "token"}
    for ref in doc["servers"]["local"]["security"]:
        resolve(doc, ref["$ref"])


def test_openapi_is_a_valid_openapi_3_1_document() -> None:
    doc = document("openapi.json")
    meta = vendor("openapi-3.1.schema.json")
    assert [e.message for e in Draft202012Validator(meta).iter_errors(doc)] == []
    for component in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(component)
    assert set(doc["paths"]) == {"/v1/chat/completions", "/v1/models", "/health"}
    post = doc["paths"]["/v1/chat/completions"]["post"]
    assert set(post["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["paths"]["/health"]["get"]["security"] == []


@pytest.mark.parametrize("key", sorted(CHANNELS))
def test_asyncapi_channel_lists_every_event_of_the_registry(key: str) -> None:
    doc = document("asyncapi.json")
    path, registry = CHANNELS[key]
    channel = doc["channels"][key]
    assert channel["address"] == path
    sent = doc["operations"][f"{key}SendEvent"]
    assert sent["action"] == "send"
    names = set()
    for ref in sent["messages"]:
        message = resolve(doc, resolve(doc, ref["$ref"])["$ref"])
        payload = resolve(doc, message["payload"]["$ref"])
        names |= set(payload["properties"])
    assert names == set(registry.names)
    received = doc["operations"][f"{key}ReceiveClientMessage"]
    assert received["action"] == "receive" and received["messages"]


def test_error_codes_are_a_closed_enum_in_the_contract() -> None:
    for name in ("audio.schema.json", "vlm.schema.json"):
        assert sorted(document(name)["$defs"]["ErrorCode"]["enum"]) == sorted(
            c.value for c in ErrorCode
        )


# --------------------------------------------------------------------------- real traffic


def asyncapi_valid(channel: str, operation: str, instance: Any) -> bool:
    doc = document("asyncapi.json")
    payloads = [
        {"$ref": resolve(doc, resolve(doc, ref["$ref"])["$ref"])["payload"]["$ref"]}
        for ref in doc["operations"][f"{channel}{operation}"]["messages"]
    ]
    schema = {"oneOf": payloads, "components": doc["components"]}
    return Draft7Validator(schema).is_valid(instance)


@pytest.mark.parametrize(
    ("key", "samples"), [("audio", AUDIO_EVENTS_SAMPLES), ("vlm", VLM_EVENTS_SAMPLES)]
)
def test_every_event_we_send_validates(key: str, samples: list[Any]) -> None:
    for event in samples:
        instance = json.loads(encode_event(event))
        assert valid(f"{key}.schema.json", instance, "ServerMessage"), event
        assert valid(f"{key}.schema.json", instance), event
        assert asyncapi_valid(key, "SendEvent", instance), event


@pytest.mark.parametrize(
    ("key", "samples"), [("audio", AUDIO_CLIENT_SAMPLES), ("vlm", VLM_CLIENT_SAMPLES)]
)
def test_every_client_message_validates(key: str, samples: list[Any]) -> None:
    for message in samples:
        instance = json.loads(encode_client(message))
        assert valid(f"{key}.schema.json", instance, "ClientMessage"), message
        assert asyncapi_valid(key, "ReceiveClientMessage", instance), message


def test_events_of_one_channel_are_not_valid_on_the_other() -> None:
    vlm_ack = json.loads(encode_event(VLM_EVENTS_SAMPLES[-1]))
    assert not valid("audio.schema.json", vlm_ack)
    audio_ack = {"packet_ack": {"seq": 1, "received": 1, "total": 2}}
    assert valid("audio.schema.json", audio_ack) and not valid("vlm.schema.json", audio_ack)

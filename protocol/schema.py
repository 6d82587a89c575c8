"""The published contract, generated from the Structs: JSON Schema per channel, AsyncAPI 3.0, OpenAPI 3.1.

:func:`generate` returns every file's exact text (deterministic: sorted keys, two-space indent, trailing
newline); :func:`write_schemas` writes them (``make schemas``). A test regenerates them and fails on any
difference from the committed ``schemas/``.

In the channel schemas, client and server messages are named ``$defs``, grouped under ``ClientMessage`` and
``ServerMessage``, and the root is a ``oneOf`` of the two. A server message is the wire envelope
``{"<event_name>": {...}}``: one required key, nothing else, so event names are a closed set.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .audio import AUDIO_EVENTS, AudioEnd, AudioPacket, OpenAudioPacket
from .chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorResponse,
    HealthResponse,
    ModelList,
)
from .device import HANDSHAKE_PARAMETERS
from .events import Cancel, EventRegistry
from .realtime import CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES
from .vlm import VLM_EVENTS, VlmAudioPacket, VlmEnd, VlmImagePacket

__all__ = ["CONTRACT_VERSION", "generate", "write_schemas"]

#: Version of the published contract (bump on any change of the files).
CONTRACT_VERSION = "1.0.0"

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_DEFS = "#/$defs/{name}"
_COMPONENTS = "#/components/schemas/{name}"


class _Channel(msgspec.Struct, frozen=True):
    key: str
    path: str
    title: str
    description: str
    client: tuple[type[msgspec.Struct], ...]
    events: EventRegistry
    #: what a client that opted in at the handshake (mode=stream) may send too: not in ClientMessage, which
    #: stays the seed's, but in StreamClientMessage
    stream_client: tuple[type[msgspec.Struct], ...] = ()


_AUDIO = _Channel(
    "audio",
    "/v1/chat/audio",
    "qwen-gateway /v1/chat/audio",
    "Voice chat: the client uploads one utterance as base64 packets (seq 1..total); the server streams "
    "the recognised text, the answer and its speech (MP3) back. seq 1 of a new upload starts a new "
    'utterance and interrupts a running answer; {"type": "cancel"} interrupts it explicitly. With mode=stream '
    'at the handshake, open-microphone packets (no total) and {"type": "end"} are taken too.',
    (AudioPacket, Cancel),
    AUDIO_EVENTS,
    (OpenAudioPacket, AudioEnd),
)
_VLM = _Channel(
    "vlm",
    "/v1/chat/vlm",
    "qwen-gateway /v1/chat/vlm",
    "Voice questions about an image: the client uploads an image and a spoken question as base64 packets "
    'tagged with type, then sends {"type": "end"}; the server streams the recognised question, the '
    'answer and its speech (MP3) back. {"type": "cancel"} interrupts a running answer.',
    (VlmAudioPacket, VlmImagePacket, VlmEnd, Cancel),
    VLM_EVENTS,
)
_CHANNELS = (_AUDIO, _VLM)

#: ``/v1/realtime``: OpenAI's Realtime protocol, every message an object tagged by ``type`` (no envelope).
_REALTIME_KEY = "realtime"
_REALTIME_PATH = "/v1/realtime"
_REALTIME_TITLE = "qwen-gateway /v1/realtime"
_REALTIME_DESCRIPTION = (
    "OpenAI's Realtime protocol (GA event names; the beta session fields and DashScope's "
    "input_image_buffer.append are accepted too) in front of a cascade (streaming recognition with server "
    "VAD, any chat model, TTS) or Qwen-Omni: `?model=` picks the backend. Every frame is a JSON text frame "
    "with a `type`; errors follow OpenAI's shape, `error.event_id` naming the offending client event."
)
_REALTIME_CLIENT: tuple[type[msgspec.Struct], ...] = tuple(CLIENT_EVENT_TYPES.values())
_REALTIME_SERVER: tuple[type[msgspec.Struct], ...] = SERVER_EVENT_TYPES

_HTTP_TYPES: tuple[type[msgspec.Struct], ...] = (
    ChatCompletionRequest,
    ChatCompletion,
    ChatCompletionChunk,
    ErrorResponse,
    ModelList,
    HealthResponse,
)


# --------------------------------------------------------------------------- building blocks


def _tidy(node: Any) -> Any:
    """Docstring-derived descriptions without their indentation, with Markdown code quotes."""
    if isinstance(node, dict):
        out = {k: _tidy(v) for k, v in node.items()}
        if isinstance(out.get("description"), str):
            out["description"] = inspect.cleandoc(out["description"]).replace("``", "`")
        return out
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def _components(types: Iterable[Any], ref_template: str) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(list(types), ref_template=ref_template)
    tidy: dict[str, Any] = _tidy(components)
    return tidy


def _ref(template: str, name: str) -> dict[str, str]:
    return {"$ref": template.format(name=name)}


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_\W]+", name) if part)


def _envelope_name(registry: EventRegistry, event_name: str) -> str:
    """``ConnectedEnvelope``, ``VlmPacketAckEnvelope``, ``ErrorEnvelope``, ``AudioStreamEnvelope`` ..."""
    variants = registry.variants(event_name)
    base = variants[0].__name__ if len(variants) == 1 else _pascal(event_name)
    return base.removesuffix("Event") + "Envelope"


def _envelopes(registry: EventRegistry, template: str) -> dict[str, Any]:
    """The wire envelope ``{"<name>": {...}}`` of every event of the channel, by component name."""
    out: dict[str, Any] = {}
    for name in registry.names:
        variants = registry.variants(name)
        if len(variants) == 1:
            body: dict[str, Any] = _ref(template, variants[0].__name__)
            description = inspect.cleandoc(variants[0].__doc__ or "").replace("``", "`")
        else:
            body = {"oneOf": [_ref(template, v.__name__) for v in variants]}
            tag_field = variants[0].__struct_config__.tag_field
            description = f"`{name}`, by `{tag_field}`: " + " ".join(
                f'"{v.__struct_config__.tag}": '
                + inspect.cleandoc(v.__doc__ or "").replace("``", "`")
                for v in variants
            )
        out[_envelope_name(registry, name)] = {
            "title": _envelope_name(registry, name),
            "description": description,
            "type": "object",
            "properties": {name: body},
            "required": [name],
            "additionalProperties": False,
        }
    return out


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- JSON Schema files


def _channel_schema(channel: _Channel) -> dict[str, Any]:
    defs = _components([*channel.client, *channel.stream_client, *channel.events.types()], _DEFS)
    envelopes = _envelopes(channel.events, _DEFS)
    defs.update(envelopes)
    defs["ClientMessage"] = {
        "title": "ClientMessage",
        "description": f"Any message a client sends on {channel.path}.",
        "oneOf": [_ref(_DEFS, t.__name__) for t in channel.client],
    }
    if channel.stream_client:
        defs["StreamClientMessage"] = {
            "title": "StreamClientMessage",
            "description": f"Any message a client that asked for mode=stream at the handshake sends on "
            f"{channel.path}: a ClientMessage, an open-microphone packet or end.",
            "anyOf": [_ref(_DEFS, t.__name__) for t in (*channel.client, *channel.stream_client)],
        }
    defs["ServerMessage"] = {
        "title": "ServerMessage",
        "description": f"Any event the server sends on {channel.path}: an object with exactly one key, "
        "the event name.",
        "oneOf": [_ref(_DEFS, name) for name in envelopes],
    }
    return {
        "$schema": _DIALECT,
        "title": channel.title,
        "description": channel.description,
        "oneOf": [_ref(_DEFS, "ClientMessage"), _ref(_DEFS, "ServerMessage")],
        "$defs": defs,
    }


def _realtime_schema() -> dict[str, Any]:
    defs = _components([*_REALTIME_CLIENT, *_REALTIME_SERVER], _DEFS)
    defs["ClientMessage"] = {
        "title": "ClientMessage",
        "description": f"Any event a client sends on {_REALTIME_PATH}.",
        "oneOf": [_ref(_DEFS, t.__name__) for t in _REALTIME_CLIENT],
    }
    defs["ServerMessage"] = {
        "title": "ServerMessage",
        "description": f"Any event the server sends on {_REALTIME_PATH}, told apart by `type`.",
        "oneOf": [_ref(_DEFS, t.__name__) for t in _REALTIME_SERVER],
    }
    return {
        "$schema": _DIALECT,
        "title": _REALTIME_TITLE,
        "description": _REALTIME_DESCRIPTION,
        "oneOf": [_ref(_DEFS, "ClientMessage"), _ref(_DEFS, "ServerMessage")],
        "$defs": defs,
    }


def _chat_schema() -> dict[str, Any]:
    return {
        "$schema": _DIALECT,
        "title": "qwen-gateway HTTP API",
        "description": "Bodies of the OpenAI-compatible HTTP API: the chat request, the response, one "
        "stream chunk (the JSON of an SSE data line), the error body, the model list and the health "
        "report.",
        "oneOf": [_ref(_DEFS, t.__name__) for t in _HTTP_TYPES],
        "$defs": _components(_HTTP_TYPES, _DEFS),
    }


# --------------------------------------------------------------------------- AsyncAPI 3.0


def _handshake_query() -> dict[str, Any]:
    """The device options of the handshake (query parameters; all optional, each additive)."""
    return {
        "type": "object",
        "description": "Optional handshake parameters for devices; with none, the seed's behaviour. A "
        "value the gateway does not take is answered HTTP 400 before the upgrade (`invalid_parameter`).",
        "properties": {
            name: {"type": "string", "description": text}
            for name, text in HANDSHAKE_PARAMETERS.items()
        },
    }


def _asyncapi() -> dict[str, Any]:
    schemas: dict[str, Any] = _components(
        [t for c in _CHANNELS for t in (*c.client, *c.stream_client, *c.events.types())],
        _COMPONENTS,
    )
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel in _CHANNELS:
        envelopes = _envelopes(channel.events, _COMPONENTS)
        for name, envelope in envelopes.items():
            if schemas.setdefault(name, envelope) != envelope:
                raise ValueError(f"two different envelopes named {name}")
        client_keys = [t.__name__ for t in (*channel.client, *channel.stream_client)]
        for key in client_keys:
            messages[key] = {
                "name": key,
                "title": key,
                "summary": schemas[key].get("description", key).split("\n")[0],
                "payload": _ref(_COMPONENTS, key),
            }
        for key, envelope in envelopes.items():
            messages[key] = {
                "name": key,
                "title": key,
                "summary": envelope["description"].split("\n")[0],
                "payload": _ref(_COMPONENTS, key),
            }
        channels[channel.key] = {
            "address": channel.path,
            "title": channel.title,
            "description": channel.description,
            "bindings": {"ws": {"query": _handshake_query(), "bindingVersion": "0.1.0"}},
            "messages": {
                key: {"$ref": f"#/components/messages/{key}"} for key in [*client_keys, *envelopes]
            },
        }
        operations[f"{channel.key}ReceiveClientMessage"] = {
            "action": "receive",
            "title": f"Messages the gateway receives on {channel.path}",
            "channel": {"$ref": f"#/channels/{channel.key}"},
            "messages": [
                {"$ref": f"#/channels/{channel.key}/messages/{key}"} for key in client_keys
            ],
        }
        operations[f"{channel.key}SendEvent"] = {
            "action": "send",
            "title": f"Events the gateway sends on {channel.path}",
            "channel": {"$ref": f"#/channels/{channel.key}"},
            "messages": [{"$ref": f"#/channels/{channel.key}/messages/{key}"} for key in envelopes],
        }
    _realtime_channel(schemas, messages, channels, operations)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "qwen-gateway voice WebSockets",
            "version": CONTRACT_VERSION,
            "description": "The WebSocket endpoints of qwen-gateway. Every frame is a UTF-8 JSON "
            "text frame. On the two voice endpoints, events the gateway sends are objects with exactly one "
            "key, the event name; on /v1/realtime (OpenAI's Realtime protocol) every event carries a `type`. "
            "The `error` event carries a machine-readable `code`; additive fields (`turn_id`, "
            "`timings`, `duplicate`, `format`) are left out when not set.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:5000",
                "protocol": "ws",
                "description": "A gateway started with `make run`.",
                "security": [
                    {"$ref": "#/components/securitySchemes/bearerAuth"},
                    {"$ref": "#/components/securitySchemes/queryToken"},
                ],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A gateway key on the handshake: `Authorization: Bearer <key>`.",
                },
                "queryToken": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "A gateway key as `?token=<key>` on the handshake URL (browsers "
                    "cannot set headers on WebSockets).",
                },
            },
        },
    }


def _asyncapi_discriminators(node: Any) -> Any:
    """AsyncAPI's ``discriminator`` is the property's name, not OpenAPI's ``{"propertyName", "mapping"}``."""
    if isinstance(node, dict):
        return {
            k: v["propertyName"]
            if k == "discriminator" and isinstance(v, dict)
            else _asyncapi_discriminators(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_asyncapi_discriminators(v) for v in node]
    return node


def _realtime_channel(
    schemas: dict[str, Any],
    messages: dict[str, Any],
    channels: dict[str, Any],
    operations: dict[str, Any],
) -> None:
    """Add ``/v1/realtime`` to the AsyncAPI document (its events are tagged objects, not envelopes)."""
    components = _asyncapi_discriminators(
        _components([*_REALTIME_CLIENT, *_REALTIME_SERVER], _COMPONENTS)
    )
    for name, component in components.items():
        if schemas.setdefault(name, component) != component:
            raise ValueError(f"two different components named {name}")
    client = [t.__name__ for t in _REALTIME_CLIENT]
    server = [t.__name__ for t in _REALTIME_SERVER]
    for key in [*client, *server]:
        messages[key] = {
            "name": key,
            "title": key,
            "summary": schemas[key].get("description", key).split("\n")[0],
            "payload": _ref(_COMPONENTS, key),
        }
    channels[_REALTIME_KEY] = {
        "address": _REALTIME_PATH,
        "title": _REALTIME_TITLE,
        "description": _REALTIME_DESCRIPTION,
        "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in [*client, *server]},
    }
    operations[f"{_REALTIME_KEY}ReceiveClientMessage"] = {
        "action": "receive",
        "title": f"Events the gateway receives on {_REALTIME_PATH}",
        "channel": {"$ref": f"#/channels/{_REALTIME_KEY}"},
        "messages": [{"$ref": f"#/channels/{_REALTIME_KEY}/messages/{key}"} for key in client],
    }
    operations[f"{_REALTIME_KEY}SendEvent"] = {
        "action": "send",
        "title": f"Events the gateway sends on {_REALTIME_PATH}",
        "channel": {"$ref": f"#/channels/{_REALTIME_KEY}"},
        "messages": [{"$ref": f"#/channels/{_REALTIME_KEY}/messages/{key}"} for key in server],
    }


# --------------------------------------------------------------------------- OpenAPI 3.1


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(_COMPONENTS, name)}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("ErrorResponse")}


def _errors(statuses: Sequence[str]) -> dict[str, Any]:
    return {status: {"$ref": f"#/components/responses/{status}"} for status in statuses}


_ERROR_RESPONSES = {
    "400": "The request is not valid (`invalid_request_error`).",
    "401": "Missing or wrong gateway key (`invalid_api_key`).",
    "403": "Without gateway keys (open mode): the `Host` is neither a loopback name nor the host of "
    "`QG_PUBLIC_URL` (`host_not_allowed`).",
    "404": "Unknown model (`model_not_found`).",
    "413": "The request body is too large.",
    "415": "The body is not sent as JSON (`Content-Type: application/json`) (`unsupported_media_type`).",
    "429": "Rate limited (`limit_requests`, `insufficient_quota`); retry later.",
    "500": "A bug in the gateway (`api_error`).",
    "502": "The upstream failed or rejected the gateway's credentials.",
    "503": "The upstream is unavailable.",
    "504": "The upstream did not answer in time (`upstream_timeout`).",
}


def _openapi() -> dict[str, Any]:
    chat = {
        "post": {
            "operationId": "createChatCompletion",
            "summary": "Chat completion (OpenAI-compatible)",
            "description": "OpenAI's chat completions API in front of Qwen. Unknown request fields "
            "(DashScope extras included) are passed through to the upstream. With `stream: true` "
            "the answer is a `text/event-stream` of `data: <ChatCompletionChunk JSON>` events ending "
            "with `data: [DONE]`; an error after the first byte arrives as a `data: "
            '{"error": {...}}` event followed by the end of the stream.',
            "requestBody": {"required": True, "content": _json("ChatCompletionRequest")},
            "responses": {
                "200": {
                    "description": "The completion; a stream of chunks when `stream` is true.",
                    "content": {
                        **_json("ChatCompletion"),
                        "text/event-stream": {
                            # One event of the stream (OpenAPI 3.2's `itemSchema` reading of `schema`).
                            "schema": {
                                "type": "object",
                                "description": "One server-sent event, `data: <JSON>` and a blank "
                                "line: a `ChatCompletionChunk` (the usage chunk has `choices: []`), "
                                "or an `ErrorResponse` when the upstream fails after the first byte; "
                                "the last event's data is `[DONE]`.",
                                "properties": {
                                    "event": {"const": "message"},
                                    "data": {
                                        "anyOf": [
                                            {"const": "[DONE]"},
                                            {
                                                "type": "string",
                                                "contentMediaType": "application/json",
                                                "contentSchema": {
                                                    "anyOf": [
                                                        _ref(_COMPONENTS, "ChatCompletionChunk"),
                                                        _ref(_COMPONENTS, "ErrorResponse"),
                                                    ]
                                                },
                                            },
                                        ]
                                    },
                                },
                                "required": ["data"],
                            },
                        },
                    },
                },
                **_errors(list(_ERROR_RESPONSES)),
            },
        }
    }
    models = {
        "get": {
            "operationId": "listModels",
            "summary": "The models the gateway serves",
            "responses": {
                "200": {"description": "The model list.", "content": _json("ModelList")},
                **_errors(["401"]),
            },
        }
    }
    health = {
        "get": {
            "operationId": "health",
            "summary": "Health of the gateway and its dependencies",
            "security": [],
            "responses": {
                "200": {
                    "description": "Healthy, or degraded but serving.",
                    "content": _json("HealthResponse"),
                },
                "503": {
                    "description": "A required dependency is down.",
                    "content": _json("HealthResponse"),
                },
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": _DIALECT,
        "info": {
            "title": "qwen-gateway HTTP API",
            "version": CONTRACT_VERSION,
            "description": "OpenAI-compatible chat in front of Alibaba's Qwen models. The voice "
            "WebSockets /v1/chat/audio and /v1/chat/vlm are described in asyncapi.json.",
        },
        "servers": [
            {"url": "http://127.0.0.1:5000", "description": "A gateway started with make run."}
        ],
        "security": [{"bearerAuth": []}],
        "paths": {"/v1/chat/completions": chat, "/v1/models": models, "/health": health},
        "components": {
            "schemas": _components(_HTTP_TYPES, _COMPONENTS),
            "responses": {status: _error(text) for status, text in _ERROR_RESPONSES.items()},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A gateway key: `Authorization: Bearer <key>`.",
                }
            },
        },
    }


# --------------------------------------------------------------------------- entry points


def generate() -> dict[str, str]:
    """Every contract file: name -> exact text."""
    documents = {
        "chat.schema.json": _chat_schema(),
        "audio.schema.json": _channel_schema(_AUDIO),
        "vlm.schema.json": _channel_schema(_VLM),
        "realtime.schema.json": _realtime_schema(),
        "asyncapi.json": _asyncapi(),
        "openapi.json": _openapi(),
    }
    return {name: _dump(document) for name, document in sorted(documents.items())}


def write_schemas(out_dir: str | Path) -> list[Path]:
    """Write every contract file into ``out_dir`` (created if missing); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written

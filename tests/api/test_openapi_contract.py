"""Schemathesis against our published OpenAPI document (``schemas/openapi.json``), on a running gateway with the
simulator upstream: no 5xx, every status and content type documented, every JSON body matching its schema, and
schema-valid requests accepted, except for the upstream's judgments of content no schema can state (listed
below and in the document's descriptions). ~120 cases in ``make test`` (the chat body generator is slow); ``QG_TEST_LONG=1`` runs 3,000."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.long import scaled

from .conftest import GATEWAY_KEY, Gateway, start_gateway

OPENAPI = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"
CASES = scaled(120, 3_000)

#: 400s the upstream gives for content a JSON Schema cannot describe (each is stated in the document):
#: media parts sent to a text-only model, an image URL whose content is not an image, json mode without the
#: word "json" in the messages, max_tokens above the chosen model's own limit.
UPSTREAM_JUDGMENTS = (
    "input content must be a string.",
    "The provided URL does not appear to be valid.",
    "'messages' must contain the word 'json'",
    "Range of max_tokens should be",
    "Exceeded limit on max bytes per data-uri item",
    "parameter.enable_thinking must be set to false for non-streaming calls",
    "Json mode is not supported when enable_thinking is true.",
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("openapi")
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        # aclosing: the gateway's services are closed here, in this loop, not when the abandoned generator is
        # collected (its cleanup then awaited inside a GeneratorExit: an unraisable RuntimeError)
        async with contextlib.aclosing(start_gateway(Path(tmp))) as gateways:
            async for gw in gateways:
                state.update(gw=gw, loop=asyncio.get_running_loop(), stop=stop)
                ready.set()
                await stop.wait()
                break

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    try:
        assert ready.wait(60)
        yield state["gw"]
    finally:
        if "loop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(60)


def _upstream_judgment(response: Any) -> bool:
    if response.status_code != 400:
        return False
    try:
        message = json.loads(response.content)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return False
    return any(message.startswith(m) for m in UPSTREAM_JUDGMENTS)


@pytest.mark.timeout(scaled(600, 7200))
def test_openapi_document_is_honest(live: Gateway) -> None:
    schema = schemathesis.openapi.from_path(str(OPENAPI))
    operations = [result.ok() for result in schema.get_all_operations()]
    per_operation = max(10, CASES // len(operations))
    seen: dict[str, dict[int, int]] = {}
    streams = [0]
    for operation in operations:
        cases = operation.as_strategy()
        if operation.method.upper() == "POST":  # half of the chat requests streamed
            cases = st.one_of(cases, cases.map(_streamed))

        @settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases)
        def one(case: Any) -> None:
            response = case.call(
                base_url=live.base_url, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}
            )
            counts = seen.setdefault(f"{case.method} {case.path}", {})
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
            stream = "text/event-stream" in _content_type(response)
            streams[0] += stream
            checks = [
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_headers_conformance,
                response_schema_conformance,  # for a stream: each event (its data a chunk or [DONE])
            ]
            if stream:
                _check_event_stream(response.text)
            case.validate_response(response, checks=checks)
            try:
                case.validate_response(response, checks=[positive_data_acceptance])
            except* RejectedPositiveData:
                assert _upstream_judgment(response), response.text

        one()
    print(seen, "streams:", streams[0])
    assert all(status < 500 for counts in seen.values() for status in counts)
    assert streams[0] > 0  # streamed answers were checked too


def _streamed(case: Any) -> Any:
    """The same request with ``stream: true`` (still schema-valid)."""
    if isinstance(case.body, dict):
        case.body = {**case.body, "stream": True}
    return case


def _content_type(response: Any) -> str:
    for name, value in response.headers.items():
        if name.lower() == "content-type":
            return str(value[0] if isinstance(value, list) else value)
    return ""


def _event_validator() -> jsonschema.Draft202012Validator:
    """The documented data of one stream event: a ChatCompletionChunk or an ErrorResponse."""
    document = json.loads(OPENAPI.read_text())
    event = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"][
        "text/event-stream"
    ]["schema"]
    (done, payload) = event["properties"]["data"]["anyOf"]
    assert done == {"const": "[DONE]"}
    root = {"components": document["components"], **payload["contentSchema"]}
    return jsonschema.Draft202012Validator(root)


def _check_event_stream(text: str) -> None:
    """Every event is ``data: <JSON>`` matching the documented schemas, or ``data: [DONE]`` (schemathesis
    reads a bounded number of events, so the end is not always there: tests/api/test_chat_api checks it)."""
    events = [e for e in text.split("\n\n") if e]
    assert events, text
    validator = _event_validator()
    for event in events:
        assert event.startswith("data: "), event
        if event != "data: [DONE]":
            validator.validate(json.loads(event[6:]))

"""Schemathesis against our published OpenAPI document (``schemas/openapi.json``), on a running gateway with the
simulator upstream: no 5xx, every status and content type documented, every JSON body matching its schema, and
schema-valid requests accepted, except for the upstream's judgments of content no schema can state (listed
below and in the document's descriptions). ~150 cases in ``make test`` (the chat body generator is slow); ``QG_TEST_LONG=1`` runs 3,000."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import STREAM_CUT_SHORT_ATTRIBUTE
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
CASES = scaled(150, 3_000)

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
        async for gw in start_gateway(Path(tmp)):
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
    for operation in operations:

        @settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def one(case: Any) -> None:
            response = case.call(
                base_url=live.base_url, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}
            )
            counts = seen.setdefault(f"{case.method} {case.path}", {})
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
            checks = [
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_headers_conformance,
            ]
            if "text/event-stream" not in response.headers.get("content-type", [""])[0]:
                checks.append(response_schema_conformance)
            else:
                cut = bool(getattr(response, STREAM_CUT_SHORT_ATTRIBUTE, False))
                _check_event_stream(response.text, complete=not cut)
            case.validate_response(response, checks=checks)
            try:
                case.validate_response(response, checks=[positive_data_acceptance])
            except* RejectedPositiveData:
                assert _upstream_judgment(response), response.text

        one()
    print(seen)
    assert all(status < 500 for counts in seen.values() for status in counts)


def _check_event_stream(text: str, *, complete: bool) -> None:
    """Every event is ``data: <JSON object>`` and the last one ``data: [DONE]`` (unless schemathesis stopped
    reading early: it reads a bounded number of events)."""
    events = [e for e in text.split("\n\n") if e]
    if complete:
        assert events and events[-1] == "data: [DONE]", text[-200:]
    for event in events[:-1]:
        assert event.startswith("data: "), event
        assert isinstance(json.loads(event[6:]), dict)

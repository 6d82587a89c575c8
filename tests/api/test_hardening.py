"""Hardening of the HTTP side (issue 12): deep JSON nesting is a 400, 405 names the allowed methods, a WebSocket
handshake on an unknown path is a 404, and the request forms the OpenAPI document allows but DashScope refuses
are put in the form DashScope takes (1.0 as an integer, the developer role, text-only content parts)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .conftest import GATEWAY_KEY, Gateway

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


async def _post(gateway: Gateway, content: bytes | None = None, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{gateway.api_base}/chat/completions",
            content=content,
            headers={**AUTH, "Content-Type": "application/json"},
            **kw,
        )


@pytest.mark.parametrize("depth", [2_000, 100_000])
async def test_deeply_nested_json_is_a_400(gateway: Gateway, depth: int) -> None:
    body = (
        '{"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], "x": '
        + "[" * depth
        + "]" * depth
        + "}"
    )
    resp = await _post(gateway, body.encode())
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"
    assert gateway.sim.log.chat_requests == []


async def test_405_names_the_allowed_methods(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{gateway.api_base}/chat/completions", headers=AUTH)
        health = await http.post(f"{gateway.base_url}/health")
    assert resp.status_code == 405
    assert "POST" in {m.strip() for m in resp.headers["Allow"].split(",")}
    assert resp.json()["error"]["code"] == "method_not_allowed"
    assert health.status_code == 405 and "GET" in health.headers["Allow"]


async def test_websocket_handshake_on_an_unknown_path_is_a_404(gateway: Gateway) -> None:
    url = gateway.base_url.replace("http://", "ws://") + "/v1/no-such-socket"
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=AUTH):
            pass
    assert info.value.response.status_code == 404


async def test_whole_floats_are_integers(gateway: Gateway) -> None:
    resp = await _post(
        gateway,
        json={
            "model": "qwen-plus",
            "messages": [{"role": "user", "content": "hi"}],
            "n": 2.0,
            "max_tokens": 16.0,
            "temperature": 1.0,
        },
    )
    assert resp.status_code == 200, resp.text
    body = gateway.sim.log.chat_requests[-1].body
    assert body["n"] == 2 and isinstance(body["n"], int)
    assert body["max_tokens"] == 16 and isinstance(body["max_tokens"], int)
    bad = await _post(gateway, json={"messages": [{"role": "user", "content": "hi"}], "n": 1.5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "n"


async def test_developer_role_and_text_parts_take_dashscope_form(gateway: Gateway) -> None:
    resp = await _post(
        gateway,
        json={
            "model": "qwen-plus",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "你好"}, {"type": "text", "text": "世界"}],
                },
            ],
        },
    )
    assert resp.status_code == 200, resp.text
    messages = gateway.sim.log.chat_requests[-1].body["messages"]
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "你好\n世界"},
    ]


async def test_the_openapi_ranges_are_dashscope_s(gateway: Gateway) -> None:
    for field, value in [("temperature", 2.0), ("n", 5), ("seed", -1), ("seed", 2**31)]:
        resp = await _post(
            gateway, json={"messages": [{"role": "user", "content": "hi"}], field: value}
        )
        assert resp.status_code == 400, (field, value)
        assert resp.json()["error"]["param"] == field
    assert gateway.sim.log.chat_requests == []

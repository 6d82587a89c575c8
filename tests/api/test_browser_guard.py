"""What a web page on another site can do with a gateway the user runs: not spend its quota (JSON endpoints need a
JSON content type, so a browser must ask first), not read answers (CORS), not reach it by DNS rebinding (the
keyless gateway answers only to a loopback or its public ``Host``), not fetch stored objects without a signed
link."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import GATEWAY_KEY, Gateway, start_gateway

BODY = json.dumps({"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
async def open_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in start_gateway(tmp_path, api_keys=()):
        yield gw


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain;charset=UTF-8",  # what fetch() sends for a string body: no preflight
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,  # a Blob without a type: no Content-Type at all
        "application/jsonp",
    ],
)
async def test_json_endpoint_needs_a_json_content_type(
    open_gateway: Gateway, content_type: str | None
) -> None:
    headers = {"Origin": "https://evil.example"}
    if content_type:
        headers["Content-Type"] = content_type
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{open_gateway.api_base}/chat/completions", content=BODY, headers=headers
        )
    assert resp.status_code == 415
    error = resp.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert "access-control-allow-origin" not in resp.headers
    assert open_gateway.sim.log.chat_requests == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_content_types_are_accepted(open_gateway: Gateway, content_type: str) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{open_gateway.api_base}/chat/completions",
            content=BODY,
            headers={"Content-Type": content_type},
        )
    assert resp.status_code == 200
    assert resp.json()["object"] == "chat.completion"


async def test_keyed_gateway_checks_the_key_first(tmp_path: Path) -> None:
    async for gw in start_gateway(tmp_path):
        async with httpx.AsyncClient() as http:
            anonymous = await http.post(
                f"{gw.api_base}/chat/completions",
                content=BODY,
                headers={"Content-Type": "text/plain"},
            )
            keyed = await http.post(
                f"{gw.api_base}/chat/completions",
                content=BODY,
                headers={"Content-Type": "text/plain", "Authorization": f"Bearer {GATEWAY_KEY}"},
            )
        assert anonymous.status_code == 401
        assert keyed.status_code == 415


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/health", "/web/"])
async def test_open_mode_refuses_a_foreign_host(open_gateway: Gateway, path: str) -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1; the request carries that name as Host."""
    async with httpx.AsyncClient(base_url=open_gateway.base_url) as http:
        resp = await http.request(
            "POST" if path.endswith("completions") else "GET",
            path,
            content=BODY,
            headers={"Host": "rebind.evil.example", "Content-Type": "application/json"},
        )
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "host_not_allowed"
    assert open_gateway.sim.log.chat_requests == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "LOCALHOST:5000", "127.1.2.3:80", "[::1]:5000"]
)
async def test_open_mode_answers_a_loopback_host(open_gateway: Gateway, host: str) -> None:
    async with httpx.AsyncClient(base_url=open_gateway.base_url) as http:
        resp = await http.get("/health", headers={"Host": host})
    assert resp.status_code == 200


async def test_open_mode_answers_its_public_host(tmp_path: Path) -> None:
    async for gw in start_gateway(tmp_path, api_keys=(), public_url="https://gw.example"):
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            assert (await http.get("/health", headers={"Host": "gw.example"})).status_code == 200
            other = await http.get("/health", headers={"Host": "gw.example.evil.example"})
            assert other.status_code == 403


async def test_keyed_mode_answers_any_host(tmp_path: Path) -> None:
    async for gw in start_gateway(tmp_path):
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            resp = await http.get("/health", headers={"Host": "gw.internal"})
        assert resp.status_code == 200


async def _stored_object(gw: Gateway) -> tuple[str, str]:
    """A stored object's signed link (path and query: this test gateway's port is not the configured one) and
    its bare path."""
    objects = gw.services.storage.objects
    key = objects.new_key("audio", "s", "mp3")
    stored = await objects.put(key, b"ID3 answer", "audio/mpeg")
    parts = urlsplit(stored.url)
    assert parts.query
    return f"{parts.path}?{parts.query}", parts.path


async def test_open_mode_serves_objects_only_by_signed_link(open_gateway: Gateway) -> None:
    link, path = await _stored_object(open_gateway)
    async with httpx.AsyncClient(base_url=open_gateway.base_url) as http:
        assert (await http.get(link)).content == b"ID3 answer"
        for headers in ({}, {"Authorization": "Bearer anything"}):
            denied = await http.get(path, headers=headers)
            assert denied.status_code == 403
            assert denied.json()["error"]["type"] == "permission_error"


async def test_keyed_mode_serves_objects_to_a_key_or_a_signed_link(tmp_path: Path) -> None:
    async for gw in start_gateway(tmp_path):
        link, path = await _stored_object(gw)
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            assert (await http.get(link)).status_code == 200
            auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
            assert (await http.get(path, headers=auth)).status_code == 200
            assert (await http.get(path)).status_code == 403


@pytest.mark.parametrize("keyed", [False, True])
async def test_a_non_ascii_link_token_is_a_typed_403(tmp_path: Path, keyed: bool) -> None:
    async for gw in start_gateway(tmp_path, **({} if keyed else {"api_keys": ()})):
        _, path = await _stored_object(gw)
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            for token in ("é", "токен", "a" * 10 + "\u00ff"):
                resp = await http.get(path, params={"expires": "9999999999", "token": token})
                assert resp.status_code == 403, token
                assert resp.json()["error"]["code"] == "invalid_token"


async def test_a_non_ascii_bearer_is_a_typed_401(tmp_path: Path) -> None:
    async for gw in start_gateway(tmp_path):
        async with httpx.AsyncClient() as http:
            resp = await http.post(
                f"{gw.api_base}/chat/completions",
                content=BODY,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": b"Bearer \xc3\xa9\xff",
                },
            )
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key"

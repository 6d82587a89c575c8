"""Quotas through the running gateway: the HTTP and WebSocket shapes of every refusal, ``/v1/usage``,
``/health``, and two gateways over one Redis counting together."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.voice_ws.conftest import GATEWAY_KEY, Gateway, client, gateway, packets, wav_bytes

FLEET_KEY = "gk-fleet-0123456789"
ADMIN_KEY = "gk-admin-0123456789"
FLEET = {"Authorization": f"Bearer {FLEET_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _keys_file(tmp_path: Path, fleet_words: str = "") -> str:
    path = tmp_path / "keys.txt"
    path.write_text(
        f"{hashlib.sha256(FLEET_KEY.encode()).hexdigest()} name=fleet {fleet_words}\n"
        f"{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()} name=ops admin\n"
    )
    return str(path)


async def _chat(gw: Gateway, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http:
        return await http.post(
            "/v1/chat/completions",
            headers=headers or {"Authorization": f"Bearer {GATEWAY_KEY}"},
            json={"messages": [{"role": "user", "content": "你好"}], **body},
        )


def _assert_refused(resp: httpx.Response, status: int, code: str, type_: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert int(resp.headers["Retry-After"]) >= 1
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == type_ and error["message"]
    return error  # type: ignore[no-any-return]


async def _turn(c: Any, audio: bytes) -> list[dict[str, Any]]:
    await c.send_all(packets(audio))
    return await c.until("audio_complete")  # type: ignore[no-any-return]


async def _refused_turn(c: Any, audio: bytes) -> dict[str, Any]:
    await c.send_all(packets(audio))
    while True:
        event = await c.recv()
        if "error" in event:
            return event["error"]  # type: ignore[no-any-return]
        assert "audio_complete" not in event and "chat_started" not in event


# ------------------------------------------------------------------------------------------ HTTP


async def test_chat_burst_up_to_rpm_then_429(tmp_path: Path) -> None:
    async with gateway(tmp_path, limit_rpm=4) as gw:
        burst = await asyncio.gather(*(_chat(gw) for _ in range(4)))
        assert [r.status_code for r in burst] == [200] * 4  # at once, not spaced out
        error = _assert_refused(await _chat(gw), 429, "rate_limit_exceeded", "rate_limit_error")
        assert "4 requests per minute" in error["message"]
        assert len(gw.sim.log.chat_requests) == 4  # the refused one never reached the upstream
        # streamed requests are refused the same way
        _assert_refused(
            await _chat(gw, stream=True), 429, "rate_limit_exceeded", "rate_limit_error"
        )


async def test_chat_tokens_per_day_then_insufficient_quota(tmp_path: Path) -> None:
    async with gateway(tmp_path, limit_tokens_per_day=5) as gw:
        first = await _chat(gw, stream=True)
        assert first.status_code == 200 and "[DONE]" in first.text
        await gw.services.quotas.flush()
        _assert_refused(await _chat(gw), 429, "insufficient_quota", "insufficient_quota")


async def test_keys_file_overrides_the_defaults(tmp_path: Path) -> None:
    async with gateway(tmp_path, limit_rpm=1, api_keys_file=_keys_file(tmp_path, "rpm=3")) as gw:
        assert [(await _chat(gw, FLEET)).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert [(await _chat(gw)).status_code for _ in range(2)] == [200, 429]  # the default: 1


async def test_upstream_cap_refuses_with_server_busy_after_a_short_wait(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_upstream_sessions=1, upstream_queue_seconds=0.2) as gw:
        held = await gw.services.quotas.upstream_slot()  # the deployment's only upstream session
        _assert_refused(await _chat(gw), 503, "server_busy", "server_error")
        assert not gw.sim.log.chat_requests
        await gw.services.quotas.release(held)
        assert (await _chat(gw)).status_code == 200
        assert (await _chat(gw, stream=True)).status_code == 200  # slots are given back
        assert (await _chat(gw)).status_code == 200  # also by a streamed answer


async def test_usage_needs_an_admin_key_and_reports_the_day(tmp_path: Path) -> None:
    async with gateway(tmp_path, api_keys_file=_keys_file(tmp_path)) as gw:
        audio = wav_bytes(1.0)
        gw.sim.register_transcript(audio, "今天天气怎么样")
        chat = await _chat(gw, FLEET)
        assert chat.status_code == 200
        chat_tokens = chat.json()["usage"]["total_tokens"]
        async with client(gw, headers=FLEET) as c:
            await c.recv()
            await _turn(c, audio)
        (complete,) = c.bodies("audio_complete")
        assert complete["tts_success"] is True

        async with httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http:
            assert (await http.get("/v1/usage", params={"key": "fleet"})).status_code == 401
            denied = await http.get("/v1/usage", params={"key": "fleet"}, headers=FLEET)
            assert (
                denied.status_code == 403 and denied.json()["error"]["code"] == "admin_key_required"
            )
            missing = await http.get("/v1/usage", headers=ADMIN)
            assert missing.status_code == 400
            bad_day = await http.get(
                "/v1/usage", params={"key": "fleet", "day": "2026-13-40"}, headers=ADMIN
            )
            assert bad_day.status_code == 400 and bad_day.json()["error"]["param"] == "day"
            unknown = await http.get("/v1/usage", params={"key": "nobody"}, headers=ADMIN)
            assert unknown.status_code == 404

            got = await http.get("/v1/usage", params={"key": "fleet"}, headers=ADMIN)
            assert got.status_code == 200, got.text
            body = got.json()
            assert body["requests"] == 2  # the chat call and the voice turn
            assert body["tokens"] > chat_tokens  # the voice turn's chat tokens too
            assert body["tts_chars"] > 0
            assert body["audio_seconds"] == pytest.approx(1.0, abs=0.01)
            assert body["owner"].startswith("k_") and FLEET_KEY not in got.text
            assert body["shared"] is False and body["limits"]["requests_per_minute"] is None

            by_owner = await http.get(
                "/v1/usage", params={"key": body["owner"], "day": body["day"]}, headers=ADMIN
            )
            assert by_owner.json()["tokens"] == body["tokens"]
            other_day = await http.get(
                "/v1/usage", params={"key": "fleet", "day": "2020-01-01"}, headers=ADMIN
            )
            assert other_day.json()["tokens"] == 0 and other_day.json()["requests"] == 0


# ------------------------------------------------------------------------------------------ WebSocket


async def test_voice_turn_over_rpm_gets_rate_limited_and_the_connection_stays(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, limit_rpm=1) as gw:
        audio = wav_bytes(0.5)
        gw.sim.register_transcript(audio, "你好")
        async with client(gw) as c:
            await c.recv()
            await _turn(c, audio)
            error = await _refused_turn(c, audio)
            assert error["code"] == "rate_limited" and error["turn_id"] == 2
            assert 1 <= error["retry_after"] <= 60
            # the connection is kept: a later turn is refused the same way, and pings are answered
            error = await _refused_turn(c, wav_bytes(0.5, seed=3))
            assert error["code"] == "rate_limited"
            await asyncio.wait_for(await c.ws.ping(), 5)
        assert len(gw.sim.log.chat_requests) == 1


@pytest.mark.parametrize(
    "limit",
    [
        {"limit_tokens_per_day": 1},
        {"limit_tts_chars_per_day": 1},
        {"limit_audio_seconds_per_day": 0.2},
    ],
)
async def test_voice_daily_quotas_get_quota_exceeded(tmp_path: Path, limit: dict[str, Any]) -> None:
    async with gateway(tmp_path, **limit) as gw:
        audio = wav_bytes(0.5)
        gw.sim.register_transcript(audio, "你好")
        async with client(gw) as c:
            await c.recv()
            await _turn(c, audio)  # starts under the quota, ends over it
            await gw.services.quotas.flush()
            error = await _refused_turn(c, audio)
            assert error["code"] == "quota_exceeded" and error["turn_id"] == 2
            assert error["retry_after"] >= 1
            await asyncio.wait_for(await c.ws.ping(), 5)


async def test_voice_sessions_over_the_limit_are_refused_and_closed(tmp_path: Path) -> None:
    async with gateway(tmp_path, limit_sessions=1) as gw:
        async with client(gw) as first:
            assert "connected" in await first.recv()
            async with client(gw) as second:
                event = await second.recv()
                assert event["error"]["code"] == "rate_limited"
                with pytest.raises(ConnectionClosed) as closed:
                    await second.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        async with client(gw) as third:  # the first one's session was given back
            assert "connected" in await third.recv()


async def test_voice_turn_waits_for_no_free_upstream_session(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_upstream_sessions=1, upstream_queue_seconds=0.2) as gw:
        audio = wav_bytes(0.5)
        gw.sim.register_transcript(audio, "你好")
        held = await gw.services.quotas.upstream_slot()
        async with client(gw) as c:
            await c.recv()
            error = await _refused_turn(c, audio)
            assert error["code"] == "server_busy" and error["retry_after"] >= 1
            await gw.services.quotas.release(held)
            events = await _turn(c, wav_bytes(0.5, seed=5))
            assert any("chat_started" in e for e in events)


# ------------------------------------------------------------------------------------------ health, Redis


async def test_health_says_limits_are_per_process_without_redis(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            body = (await http.get("/health")).json()
        assert body["status"] == "healthy" and {"status", "timestamp"} <= set(body)
        assert body["checks"]["quota"] == {"status": "local", "backend": "memory", "shared": False}


async def test_redis_away_serves_degraded_with_in_process_limits(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    async with gateway(tmp_path, redis_url=dead, limit_rpm=2) as gw:
        assert [(await _chat(gw)).status_code for _ in range(3)] == [200, 200, 429]
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            resp = await http.get("/health")
        assert resp.status_code == 200
        body = resp.json()
        assert body["status"] == "degraded" and body["checks"]["quota"]["status"] == "down"


async def test_two_gateways_over_one_redis_count_together(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    shared = {"redis_url": redis_url, "redis_prefix": prefix, "owner_secret": "o" * 40}
    async with (
        gateway(tmp_path / "a", limit_rpm=4, limit_sessions=1, **shared) as a,
        gateway(tmp_path / "b", limit_rpm=4, limit_sessions=1, **shared) as b,
    ):
        codes = [(await _chat(gw)).status_code for gw in (a, b, a, b, a, b)]
        assert codes == [200, 200, 200, 200, 429, 429]
        async with client(a) as first:
            assert "connected" in await first.recv()
            async with client(b) as second:  # the same key's second session, on the other gateway
                assert (await second.recv())["error"]["code"] == "rate_limited"
        async with httpx.AsyncClient(base_url=b.base_url) as http:
            quota = (await http.get("/health")).json()["checks"]["quota"]
        assert quota == {"status": "up", "backend": "redis", "shared": True}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

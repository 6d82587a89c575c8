"""Handshake auth and every kind of bad frame on the voice endpoints: typed ``error`` events, the connection kept
where the protocol allows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import GATEWAY_KEY, UPSTREAM_KEY, Client, client, gateway, packets, wav_bytes


@pytest.mark.parametrize("endpoint", ["audio", "vlm"])
async def test_handshake_needs_a_gateway_key(tmp_path: Path, endpoint: str) -> None:
    async with gateway(tmp_path) as gw:
        for headers, query in (
            ({}, {}),
            ({"Authorization": "Bearer wrong"}, {}),
            ({}, {"token": "wrong"}),
        ):
            with pytest.raises(InvalidStatus) as info:
                async with client(gw, endpoint, headers=headers, query=query):
                    pass
            assert info.value.response.status_code == 401
        async with client(gw, endpoint, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as c:
            assert "connected" in await c.recv()
        async with client(gw, endpoint, headers={}, query={"token": GATEWAY_KEY}) as c:
            assert "connected" in await c.recv()
        assert not gw.sim.log.connections


async def test_no_keys_configured_means_open(tmp_path: Path) -> None:
    async with gateway(tmp_path, api_keys=()) as gw, client(gw, headers={}) as c:
        assert "connected" in await c.recv()


async def test_key_passthrough_uses_the_callers_key_upstream(tmp_path: Path) -> None:
    """Pass-through mode: the caller's key is its own DashScope key (needed, and sent upstream)."""
    # The gateway's own key is not one the upstream accepts: only the caller's can make the turn work.
    async with gateway(tmp_path, key_passthrough=True, qwen_api_key="sk-not-accepted") as gw:
        with pytest.raises(InvalidStatus) as info:
            async with client(gw, headers={}):
                pass
        assert info.value.response.status_code == 401
        audio = wav_bytes(1.0)
        gw.sim.register_transcript(audio, "你好")
        async with client(gw, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}) as c:
            await c.recv()
            await c.send_all(packets(audio))
            await c.until("audio_complete")
        assert c.bodies("audio_complete")[0]["transcription_success"] is True
        assert all(
            r.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
            for r in gw.sim.log.chat_requests
        )
        assert gw.sim.log.chat_requests


async def _error(c: Client, frame: str | bytes) -> dict[str, object]:
    await c.ws.send(frame)
    event = await c.recv()
    assert "error" in event, event
    return event["error"]


async def _still_serving(c: Client) -> None:
    """A valid packet (the first of a new two-packet upload) is still acknowledged."""
    seed = len(c.events)
    await c.ws.send(packets(wav_bytes(0.6, seed=seed))[0])
    events = await c.until("packet_ack", wait=5)
    assert not [e for e in events if "error" in e], events


def _packet(seq: int, total: int, data: bytes, **extra: object) -> str:
    return json.dumps(
        {"seq": seq, "total": total, "data": base64.b64encode(data).decode(), **extra}
    )


async def test_every_bad_frame_kind_on_audio(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, max_upload_bytes=20_000, max_packets=10) as gw,
        client(gw) as c,
    ):
        await c.recv()
        cases: list[tuple[str | bytes, str]] = [
            ("not json at all", "invalid_json"),
            ("[1, 2, 3]", "invalid_message"),
            ('{"seq": "one", "total": 1, "data": ""}', "invalid_message"),
            ('{"total": 1, "data": ""}', "invalid_message"),
            ('{"type": "image", "seq": 1, "total": 1, "data": ""}', "unexpected_message"),
            (b"\x00\x01binary", "binary_frame"),
            ('{"seq": 1, "total": 1, "data": "!!!not base64"}', "invalid_base64"),
            (_packet(1, 1, bytes(9000)), "packet_too_large"),
            (_packet(0, 1, b"x"), "bad_sequence"),
            (_packet(3, 2, b"x"), "bad_sequence"),
            (_packet(1, 11, b"x"), "upload_too_large"),
        ]
        for frame, code in cases:
            error = await _error(c, frame)
            assert error["code"] == code, (frame, error)
            await _still_serving(c)
        # Within one upload: a changed total, a repeat with other bytes, too many bytes.
        audio = wav_bytes(1.0, seed=11)
        piece = [audio[i * 8000 : (i + 1) * 8000] for i in range(4)]
        await c.ws.send(_packet(1, 4, piece[0]))
        await c.until("packet_ack")
        assert (await _error(c, _packet(2, 5, piece[1])))["code"] == "bad_sequence"
        await c.ws.send(_packet(2, 4, piece[1]))
        await c.until("packet_ack")
        assert (await _error(c, _packet(2, 4, piece[2])))["code"] == "duplicate_packet"
        await c.ws.send(_packet(2, 4, piece[1]))  # an exact repeat is acknowledged again
        again = (await c.until("packet_ack"))[-1]["packet_ack"]
        assert again["seq"] == 2 and again.get("duplicate") is True
        assert (await _error(c, _packet(3, 4, piece[2])))["code"] == "upload_too_large"
        assert not gw.sim.log.chat_requests


async def test_frame_too_large_closes_1009(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_frame_bytes=32 * 1024) as gw, client(gw) as c:
        await c.recv()
        error = await _error(c, json.dumps({"seq": 1, "total": 1, "data": "A" * 40_000}))
        assert error["code"] == "frame_too_large"
        with pytest.raises(ConnectionClosed):
            await c.recv()
        assert c.ws.close_code == 1009


async def test_bad_frames_on_vlm(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, client(gw, "vlm") as c:
        await c.recv()
        assert (await _error(c, '{"type": "video", "seq": 1, "total": 1, "data": ""}'))[
            "code"
        ] == "unexpected_message"
        assert (await _error(c, '{"seq": 1, "total": 1, "data": ""}'))["code"] in (
            "invalid_message",
            "unexpected_message",
        )
        assert (await _error(c, b"bytes"))["code"] == "binary_frame"
        assert (await _error(c, _packet(1, 1, bytes(60 * 1024), type="image")))[
            "code"
        ] == "packet_too_large"
        assert (await _error(c, '{"type": "end"}'))["code"] == "incomplete_upload"
        await c.ws.send(_packet(1, 1, b"\x89PNG", type="image"))
        assert (await c.recv())["packet_ack"]["type"] == "image"


async def test_upload_that_stops_arriving_is_dropped(tmp_path: Path) -> None:
    async with gateway(tmp_path, upload_idle_timeout=0.3) as gw, client(gw) as c:
        await c.recv()
        first = packets(wav_bytes(1.0))
        await c.ws.send(first[0])
        events = await c.until("error", wait=5)
        assert events[-1]["error"]["code"] == "upload_timeout"
        await gw.sim.wait_closed(timeout=5)  # the turn's recogniser was closed
        # A new utterance works.
        audio = wav_bytes(0.3, seed=3)
        gw.sim.register_transcript(audio, "你好")
        await c.send_all(packets(audio))
        await c.until("audio_complete")

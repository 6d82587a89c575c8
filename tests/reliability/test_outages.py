"""Outages under concurrent turns: the object store down, an upstream 429 storm, recognition and TTS sockets
dropped mid-turn. Every turn still ends with its completion events and truthful flags, every turn whose user was
heard is kept in the history, retries follow ``Retry-After`` without multiplying calls, and no upstream socket is
left open."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

from qwen_gateway.simulator import Fault
from tests.voice_ws.conftest import AUTH, GATEWAY_KEY, Gateway, gateway

from .conftest import LONG, packets, png_bytes, settle, wav_bytes

CLIENTS = 24 if LONG else 8
REPLY = "好的，这是回答的第一句。这是第二句。"


async def _turn(gw: Gateway, endpoint: str, conversation: str, audio: bytes) -> dict[str, Any]:
    """One whole turn; every event's body by name (the last of each), plus the list of error codes."""
    from websockets.asyncio.client import connect

    url = gw.ws_url(f"/v1/chat/{endpoint}", conversation_id=conversation)
    got: dict[str, Any] = {"errors": []}
    async with connect(url, additional_headers=AUTH, ping_interval=None, compression=None) as ws:
        await ws.recv()
        if endpoint == "audio":
            frames = packets(audio)
            final = "audio_complete"
        else:
            frames = [
                *packets(png_bytes(), 50 * 1024, type="image"),
                *packets(audio, 20 * 1024, type="audio"),
                json.dumps({"type": "end"}),
            ]
            final = "vlm_complete"
        for frame in frames:
            await ws.send(frame)
        async with asyncio.timeout(30):
            while True:
                ((name, body),) = json.loads(await ws.recv()).items()
                if name == "error":
                    got["errors"].append(body["code"])
                got[name] = body
                if name == final:
                    return got


async def _turns(gw: Gateway, prefix: str, endpoint: str = "audio") -> list[dict[str, Any]]:
    """``CLIENTS`` concurrent turns, each with its own utterance (transcript ``"<prefix> <i>"``)."""
    audios = [wav_bytes(0.4, seed=i) for i in range(CLIENTS)]
    for i, audio in enumerate(audios):
        gw.sim.register_transcript(audio, f"{prefix} {i}")
    return await asyncio.gather(
        *(_turn(gw, endpoint, f"{prefix}-{i}", audio) for i, audio in enumerate(audios))
    )


async def _rows(gw: Gateway, prefix: str) -> list[Any]:
    await gw.services.storage.outbox.drained()
    history = gw.services.storage.history
    owner = gw.services.keys.owner(GATEWAY_KEY)
    rows = []
    for i in range(CLIENTS):
        rows.extend(await history.conversation(f"{prefix}-{i}", owner=owner))
    return rows


async def test_object_store_down_turns_still_answer_and_say_so(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(REPLY)
        # The local object store's folder becomes a file: every write fails with a real OSError.
        objects_dir = gw.settings.objects_dir
        shutil.rmtree(objects_dir, ignore_errors=True)
        objects_dir.write_bytes(b"not a folder")
        turns = await _turns(gw, "down")
        for t in turns:
            assert t["transcription_started"]["oss_url"] is None
            assert t["chat_tts_complete"]["assistant_response"] == REPLY
            assert t["chat_tts_complete"]["db_saved"] is True
            done = t["audio_complete"]
            assert done["oss_uploaded"] is False and done["oss_url"] is None
            assert done["tts_success"] is True and done["chat_success"] is True
        vlm = await _turn(gw, "vlm", "down-vlm", wav_bytes(0.4, seed=99))
        assert vlm["vlm_chat_tts_complete"]["assistant_response"] == REPLY
        assert vlm["vlm_complete"]["image_file"] == "" and vlm["vlm_complete"]["audio_file"] == ""
        rows = await _rows(gw, "down")
        assert len(rows) == CLIENTS
        assert all(r.status == "completed" and r.audio_key is None for r in rows)
        assert all(r.reply_audio_key is None for r in rows)
        # The store comes back: the next turn stores its upload again.
        objects_dir.unlink()
        objects_dir.mkdir()
        again = await _turn(gw, "audio", "down-again", wav_bytes(0.4, seed=100))
        assert again["audio_complete"]["oss_uploaded"] is True
        assert await settle(lambda: not gw.sim.log.open_connections(), 10)


def _calls_by_turn(gw: Gateway) -> dict[str, list[float]]:
    """Arrival times of the chat requests, by the user message they carry."""
    calls: dict[str, list[float]] = {}
    for request in gw.sim.log.chat_requests:
        body = json.loads(request.raw)  # a refused request is not parsed by the simulator
        calls.setdefault(str(body["messages"][-1]["content"]), []).append(
            request.connection.opened_at
        )
    return calls


async def test_rate_limit_storm_backs_off_as_told_without_a_retry_storm(tmp_path: Path) -> None:
    retries, hint = 2, 0.3
    async with gateway(tmp_path, upstream_retries=retries) as gw:
        gw.sim.set_reply(REPLY)
        # Every chat call refused with 429 and Retry-After.
        gw.sim.faults.add(
            Fault.http_error(429, code="limit_requests", times=None, retry_after=hint)
        )
        turns = await _turns(gw, "storm")
        for t in turns:
            assert t["errors"] == ["rate_limited"]
            assert t["audio_complete"]["chat_success"] is False
        calls = _calls_by_turn(gw)
        assert len(calls) == CLIENTS
        for times in calls.values():
            assert len(times) == 1 + retries, "one call and its retries, no more"
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(gap >= hint * 0.95 for gap in gaps), gaps
        assert len(gw.sim.log.chat_requests) == CLIENTS * (1 + retries)
        rows = await _rows(gw, "storm")
        assert len(rows) == CLIENTS, "a refused turn is kept (what the user said)"
        assert all(r.status == "failed" and r.user_content.startswith("storm") for r in rows)

        # A storm that clears within the retries: every turn answers, after exactly three calls each.
        gw.sim.faults.clear()
        gw.sim.log.clear()
        gw.sim.faults.add(
            Fault.http_error(429, code="limit_requests", times=2 * CLIENTS, retry_after=hint)
        )
        turns = await _turns(gw, "clears")
        assert all(t["chat_tts_complete"]["assistant_response"] == REPLY for t in turns)
        assert len(gw.sim.log.chat_requests) == 3 * CLIENTS
        rows = await _rows(gw, "clears")
        assert [r.status for r in rows] == ["completed"] * CLIENTS
        assert await settle(lambda: not gw.sim.log.open_connections(), 10)


async def test_recognition_socket_dropped_mid_turn(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(REPLY)
        gw.sim.faults.add(Fault.drop(after_chunks=1, endpoint="asr", times=CLIENTS))
        turns = await _turns(gw, "asr")
        for t in turns:
            assert t["errors"] == ["upstream_error"]
            done = t["audio_complete"]
            assert done["transcription_success"] is False and done["chat_success"] is False
            assert done["oss_uploaded"] is True
        assert not gw.sim.log.chat_requests
        assert await settle(lambda: not gw.sim.log.open_connections(), 10)
        # Nothing was heard, so nothing is recorded; the next turns work.
        assert await _rows(gw, "asr") == []
        gw.sim.faults.clear()
        turns = await _turns(gw, "asr-after")
        assert all(t["chat_tts_complete"]["assistant_response"] == REPLY for t in turns)


async def test_tts_socket_dropped_mid_turn(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(REPLY)
        gw.sim.faults.add(Fault.drop(after_chunks=1, endpoint="tts", times=CLIENTS))
        turns = await _turns(gw, "tts")
        for t in turns:
            assert t["errors"] == ["upstream_error"]
            done = t["chat_tts_complete"]
            assert done["assistant_response"] == REPLY and done["tts_success"] is False
            assert done["db_saved"] is True
        assert await settle(lambda: not gw.sim.log.open_connections(), 10)
        rows = await _rows(gw, "tts")
        assert len(rows) == CLIENTS
        assert all(r.status == "completed" and r.assistant_content == REPLY for r in rows)

"""Conversations belong to their caller, through the real routes: the chat API and both voice sockets, gateway
keys, pass-through keys and open keyless mode. Another caller naming a conversation id gets a conversation of its
own (never the other's turns as context); the same caller gets its memory back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from qwen_gateway.simulator import SimulatorConfig
from qwen_gateway.storage.history import ANONYMOUS_OWNER

from .conftest import Gateway, client, gateway, packets, png_bytes, wav_bytes

KEY_A = "gk-owner-alice-0123456789"
KEY_B = "gk-owner-bob-9876543210"
SHARED = "conv-shared-id"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _said(gw: Gateway, request: int) -> str:
    """Everything the ``request``-th chat request to the upstream carried, as one string."""
    return json.dumps(gw.sim.log.chat_requests[request].messages, ensure_ascii=False)


async def _chat(gw: Gateway, key: str, text: str, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http:
        return await http.post(
            "/v1/chat/completions",
            headers={**_bearer(key), "X-Conversation-Id": SHARED},
            json={"messages": [{"role": "user", "content": text}], **body},
        )


async def _audio_turn(gw: Gateway, key: str, question: str, seed: int, **query: str) -> None:
    audio = wav_bytes(0.3, seed=seed)
    gw.sim.register_transcript(audio, question)
    async with client(gw, headers=_bearer(key), query={"conversation_id": SHARED, **query}) as c:
        await c.recv()
        await c.send_all(packets(audio))
        await c.until("audio_complete")


async def _vlm_turn(gw: Gateway, key: str, question: str, seed: int) -> None:
    audio = wav_bytes(0.3, seed=seed)
    gw.sim.register_transcript(audio, question)
    async with client(gw, "vlm", headers=_bearer(key), query={"conversation_id": SHARED}) as c:
        await c.recv()
        await c.send_all(
            packets(png_bytes(), 50 * 1024, type="image") + packets(audio, 20 * 1024, type="audio")
        )
        await c.ws.send(json.dumps({"type": "end"}))
        await c.until("vlm_complete")


async def test_two_keys_naming_one_conversation_id_never_see_each_other(tmp_path: Path) -> None:
    async with gateway(tmp_path, api_keys=(KEY_A, KEY_B)) as gw:
        gw.sim.set_reply(lambda body: "回答：" + str(body["messages"][-1]["content"])[:20])
        # A talks over the chat API and over the audio socket, under the shared id
        response = await _chat(gw, KEY_A, "爱丽丝的秘密是蓝色")
        assert response.status_code == 200
        assert response.headers["X-Conversation-Id"] == SHARED
        await gw.services.storage.outbox.drained()
        await _audio_turn(gw, KEY_A, "爱丽丝的第二句话", seed=1)
        # the same key resumes its conversation: its chat turn was the context
        assert "爱丽丝的秘密是蓝色" in _said(gw, 1)

        # B names the same id on both voice sockets: a fresh conversation, none of A's words as context
        await _audio_turn(gw, KEY_B, "鲍勃的问题", seed=2)
        await _vlm_turn(gw, KEY_B, "鲍勃看图", seed=3)
        for request in (2, 3):
            assert "爱丽丝" not in _said(gw, request)
        assert "鲍勃的问题" in _said(gw, 3)  # B's own memory carries across B's sessions

        # A again: its memory holds only its own turns
        await _audio_turn(gw, KEY_A, "爱丽丝的第三句话", seed=4)
        assert "爱丽丝的秘密是蓝色" in _said(gw, 4) and "鲍勃" not in _said(gw, 4)

        await gw.services.storage.outbox.drained()
        history, keys = gw.services.storage.history, gw.services.keys
        alice = await history.conversation(SHARED, owner=keys.owner(KEY_A))
        bob = await history.conversation(SHARED, owner=keys.owner(KEY_B))
        assert [(t.channel, t.user_content) for t in alice] == [
            ("chat", "爱丽丝的秘密是蓝色"),
            ("audio", "爱丽丝的第二句话"),
            ("audio", "爱丽丝的第三句话"),
        ]
        assert [(t.channel, t.user_content) for t in bob] == [
            ("audio", "鲍勃的问题"),
            ("vlm", "鲍勃看图"),
        ]
        # owner ids are keyed hashes: neither key is stored
        assert keys.owner(KEY_A) != keys.owner(KEY_B)
        stored = b"".join(p.read_bytes() for p in gw.settings.data_dir.rglob("*") if p.is_file())
        for key in (KEY_A, KEY_B):
            assert key.encode() not in stored  # history, its WAL, the journal, objects
            assert keys.owner(key).encode() in stored


async def test_pass_through_bearers_are_separate_owners(tmp_path: Path) -> None:
    """QG_KEY_PASSTHROUGH: two tenants with their own DashScope keys and one conversation id."""
    alice, bob = "sk-tenant-alice-1111", "sk-tenant-bob-2222"
    config = SimulatorConfig(api_key=None)  # any sk- key
    async with gateway(tmp_path, config, api_keys=(), key_passthrough=True) as gw:
        gw.sim.set_reply(lambda body: "好的。")
        assert (await _chat(gw, alice, "租户甲的合同号是42")).status_code == 200
        await gw.services.storage.outbox.drained()
        await _audio_turn(gw, bob, "租户乙的问题", seed=5)
        assert "租户甲" not in _said(gw, 1)
        await _audio_turn(gw, alice, "租户甲的问题", seed=6)
        assert "租户甲的合同号是42" in _said(gw, 2) and "租户乙" not in _said(gw, 2)
        await gw.services.storage.outbox.drained()
        keys = gw.services.keys
        assert keys.owner(alice) != keys.owner(bob)
        assert (
            len(await gw.services.storage.history.conversation(SHARED, owner=keys.owner(bob))) == 1
        )


async def test_open_keyless_mode_is_one_anonymous_owner(tmp_path: Path) -> None:
    async with gateway(tmp_path, api_keys=()) as gw:
        gw.sim.set_reply(lambda body: "好的。")
        assert (await _chat(gw, "anything", "匿名的第一句话")).status_code == 200
        await gw.services.storage.outbox.drained()
        await _audio_turn(gw, "something-else", "匿名的第二句话", seed=7)
        assert "匿名的第一句话" in _said(gw, 1)
        await gw.services.storage.outbox.drained()
        turns = await gw.services.storage.history.conversation(SHARED, owner=ANONYMOUS_OWNER)
        assert [t.owner for t in turns] == [ANONYMOUS_OWNER] * 2


async def test_a_conversation_id_with_control_characters_is_a_400_before_the_upstream(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, api_keys=(KEY_A,)) as gw:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http:
            for user in ("a\nb", "a\rb", "x\x00y", "tab\tbed"):
                response = await http.post(
                    "/v1/chat/completions",
                    headers=_bearer(KEY_A),
                    json={"messages": [{"role": "user", "content": "hi"}], "user": user},
                )
                assert response.status_code == 400, user
                error = response.json()["error"]
                assert error["code"] == "invalid_value" and error["param"] == "user"
                assert error["type"] == "invalid_request_error"
            response = await http.post(
                "/v1/chat/completions",
                headers={**_bearer(KEY_A), "X-Conversation-Id": "conv\tid"},
                json={"messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 400
            assert "X-Conversation-Id" in response.json()["error"]["message"]
            # a name that can be echoed keeps working (the seed's clients send e-mails, names ...)
            response = await http.post(
                "/v1/chat/completions",
                headers=_bearer(KEY_A),
                json={"messages": [{"role": "user", "content": "hi"}], "user": "张三@example.com"},
            )
            assert response.status_code == 200
        assert len(gw.sim.log.chat_requests) == 1  # the refused ones cost no upstream call

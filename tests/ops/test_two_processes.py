"""Two gateway processes, one deployment: one MariaDB, one object store (fake OSS), one upstream (the simulator).

Each process has its own data dir (so its own journal and nothing else shared on disk), as two hosts behind a load
balancer would. Chat and voice turns of one conversation go alternately through both; the history is one
consistent conversation, and each voice turn's chat request carries the turns the *other* process stored.
Both processes start at once on a database that does not exist yet: the migrations run concurrently.
"""

from __future__ import annotations

import asyncio
import hashlib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from qwen_gateway.auth import KeyChecker
from qwen_gateway.simulator import Simulator, SimulatorConfig
from qwen_gateway.storage import TurnRecord
from qwen_gateway.storage.migrations import MIGRATIONS
from tests.fakes.oss import FakeOss
from tests.storage.conftest import OSS_AK, OSS_BUCKET, OSS_REGION, OSS_SK
from tests.voice_ws.conftest import Client, packets, wav_bytes

from .conftest import GatewayProcess, MariaDB, distinct_free_ports, start_gateway

UPSTREAM_KEY = "sk-upstream-two-processes"
GATEWAY_KEY = "gk-two-processes"
#: every process serving one history must name a caller's conversations with the same owner id
OWNER_SECRET = "two-processes-owner-secret-0123456789abcdef"
OWNER = KeyChecker(
    [hashlib.sha256(GATEWAY_KEY.encode()).digest()],
    enabled=True,
    owner_secret=OWNER_SECRET.encode(),
).owner(GATEWAY_KEY)
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


def gateway_env(sim: Simulator, mariadb: MariaDB, database: str, oss: FakeOss) -> dict[str, str]:
    return {
        **sim.env,
        "QWEN_API_KEY": UPSTREAM_KEY,
        "QG_API_KEYS": GATEWAY_KEY,
        "QG_OWNER_SECRET": OWNER_SECRET,
        "DB_HOST": mariadb.host,
        "DB_PORT": str(mariadb.port),
        "DB_USER": mariadb.user,
        "DB_PASSWORD": mariadb.password,
        "DB_NAME": database,
        "BUCKET": OSS_BUCKET,
        "ACCESSKEY_ID": OSS_AK,
        "ACCESSKEY_SECRET": OSS_SK,
        "REGIN": OSS_REGION,
        "QG_OSS_ENDPOINT": oss.endpoint,
        "QG_UPSTREAM_RETRIES": "1",
        "QG_LOG_LEVEL": "WARNING",
    }


async def chat_turn(gw: GatewayProcess, conversation: str, question: str) -> str:
    async with httpx.AsyncClient(timeout=30.0) as http:
        resp = await http.post(
            f"{gw.base_url}/v1/chat/completions",
            headers={**AUTH, "X-Conversation-Id": conversation},
            json={"messages": [{"role": "user", "content": question}]},
        )
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Conversation-Id"] == conversation
    answer: str = resp.json()["choices"][0]["message"]["content"]
    return answer


async def voice_turn(gw: GatewayProcess, conversation: str, audio: bytes) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{gw.port}/v1/chat/audio?conversation_id={conversation}"
    async with connect(url, additional_headers=AUTH, ping_interval=None, max_size=None) as ws:
        c = Client(ws, "audio")
        await c.until("connected")
        await c.send_all(packets(audio))
        await c.until("audio_complete", wait=60.0)
    (complete,) = c.bodies("audio_complete")
    assert complete["transcription_success"] and complete["chat_success"], complete
    return complete


async def stored_turns(
    mariadb: MariaDB, database: str, conversation: str, count: int
) -> list[TurnRecord]:
    """The conversation once it holds ``count`` turns (turns reach the database through each process's outbox)."""
    store = mariadb.store(database)
    try:
        async with asyncio.timeout(30):
            while len(turns := await store.conversation(conversation, owner=OWNER)) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await store.aclose()
    return turns


def context_of_last_chat(sim: Simulator) -> list[tuple[str, str]]:
    """(role, content) of the messages of the simulator's last chat request, system prompt left out."""
    messages = sim.log.chat_requests[-1].messages
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]


async def test_one_conversation_through_two_processes(
    tmp_path: Path, mariadb: MariaDB, fake_oss: FakeOss
) -> None:
    database = mariadb.new_database_name()  # not created yet: both processes migrate it at once
    async with Simulator(
        SimulatorConfig(api_key=UPSTREAM_KEY, tts_realtime_factor=0), host="127.0.0.1", port=0
    ) as sim:
        env = gateway_env(sim, mariadb, database, fake_oss)
        with ExitStack() as stack:
            port_a, port_b = distinct_free_ports(2)  # both start at once: no port picked twice
            a = stack.enter_context(
                start_gateway(
                    tmp_path, "a", {**env, "QG_DATA_DIR": str(tmp_path / "a" / "data")}, port=port_a
                )
            )
            b = stack.enter_context(
                start_gateway(
                    tmp_path, "b", {**env, "QG_DATA_DIR": str(tmp_path / "b" / "data")}, port=port_b
                )
            )
            health_a, health_b = await asyncio.gather(a.wait_healthy(), b.wait_healthy())
            assert health_a["status"] == health_b["status"] == "healthy"
            assert health_a["process"] != health_b["process"]

            # Concurrent migrations: each version applied once, the schema complete.
            versions = await mariadb.query(
                database, "SELECT version FROM schema_migrations ORDER BY version"
            )
            assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]

            conv = "conv-two-processes-0001"
            sim.set_reply("第一个回答。")
            assert await chat_turn(a, conv, "第一个问题？") == "第一个回答。"
            await stored_turns(mariadb, database, conv, 1)

            # Voice through B: its chat context is the turn A stored.
            q2 = wav_bytes(1.0, seed=2)
            sim.register_transcript(q2, "第二个问题？")
            sim.set_reply("第二个回答。")
            complete = await voice_turn(b, conv, q2)
            assert complete["transcription_text"] == "第二个问题？"
            assert context_of_last_chat(sim) == [
                ("user", "第一个问题？"),
                ("assistant", "第一个回答。"),
                ("user", "第二个问题？"),
            ]
            await stored_turns(mariadb, database, conv, 2)

            sim.set_reply("第三个回答。")
            assert await chat_turn(b, conv, "第三个问题？") == "第三个回答。"
            await stored_turns(mariadb, database, conv, 3)

            # Voice through A: it sees A's chat, B's voice turn and B's chat.
            q4 = wav_bytes(1.0, seed=4)
            sim.register_transcript(q4, "第四个问题？")
            sim.set_reply("第四个回答。")
            await voice_turn(a, conv, q4)
            assert context_of_last_chat(sim) == [
                ("user", "第一个问题？"),
                ("assistant", "第一个回答。"),
                ("user", "第二个问题？"),
                ("assistant", "第二个回答。"),
                ("user", "第三个问题？"),
                ("assistant", "第三个回答。"),
                ("user", "第四个问题？"),
            ]

            turns = await stored_turns(mariadb, database, conv, 4)
            assert [(t.channel, t.user_content, t.assistant_content) for t in turns] == [
                ("chat", "第一个问题？", "第一个回答。"),
                ("audio", "第二个问题？", "第二个回答。"),
                ("chat", "第三个问题？", "第三个回答。"),
                ("audio", "第四个问题？", "第四个回答。"),
            ]
            # Both processes wrote to the one bucket: the uploads are there, whichever process took them.
            blob = fake_oss.object(OSS_BUCKET, turns[1].audio_key or "")
            assert blob is not None and blob.data == q2
            blob = fake_oss.object(OSS_BUCKET, turns[3].audio_key or "")
            assert blob is not None and blob.data == q4
            rows = await mariadb.query(
                database, "SELECT COUNT(*) FROM turns WHERE conversation_id = %s", conv
            )
            assert rows == [(4,)]

            assert await a.stop() == 0, a.output()
            assert await b.stop() == 0, b.output()
            for gw in (a, b):
                assert "Traceback" not in gw.output(), gw.output()

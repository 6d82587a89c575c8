"""Driving ``/v1/realtime`` with the official ``openai`` SDK against the gateway and the DashScope simulator over
loopback. Every server event received is validated against the committed ``schemas/realtime.schema.json`` and
parsed by the SDK's own models."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from qwen_gateway.simulator.audio import synthesize
from tests.voice_ws.conftest import GATEWAY_KEY, Gateway

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "realtime.schema.json").read_text())
    root = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/ServerMessage"}
    return jsonschema.Draft202012Validator(root)


VALIDATOR = _validator()

#: What the user says (the simulator's recogniser does not read the buzz: it answers with a transcript of its own).
QUESTION = "今天天气怎么样？我想出去走走。"


def speech(rate: int = 24000, text: str = QUESTION) -> bytes:
    """Speech-like pcm16 at ``rate`` (the simulator's synthetic voice)."""
    return synthesize(text, rate)


def silence(seconds: float, rate: int = 24000) -> bytes:
    return bytes(int(seconds * rate) * 2)


@dataclass
class Session:
    """A realtime connection and every event it received (raw dicts, schema-checked; SDK models)."""

    conn: AsyncRealtimeConnection
    events: list[dict[str, Any]] = field(default_factory=list)

    async def recv(self, wait: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(wait):
            raw = await self.conn.recv_bytes()
        data = json.loads(raw)
        VALIDATOR.validate(data)
        self.conn.parse_event(raw)  # the SDK's models accept it
        self.events.append(data)
        return data

    async def until(self, kind: str, wait: float = 30.0) -> list[dict[str, Any]]:
        """Events up to and including the first of type ``kind``."""
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(wait):
            while True:
                event = await self.recv(wait)
                got.append(event)
                if event["type"] == kind:
                    return got

    async def send_audio(self, pcm: bytes, chunk: int = 4800) -> None:
        """Append ``pcm`` in chunks (4800 bytes: 100 ms of 24 kHz pcm16)."""
        for start in range(0, len(pcm), chunk):
            piece = pcm[start : start + chunk]
            await self.conn.input_audio_buffer.append(audio=base64.b64encode(piece).decode())

    def of(self, kind: str, events: Iterable[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [e for e in (self.events if events is None else events) if e["type"] == kind]

    def types(self, events: Iterable[dict[str, Any]] | None = None) -> list[str]:
        return [e["type"] for e in (self.events if events is None else events)]

    def audio(self, events: Iterable[dict[str, Any]] | None = None) -> bytes:
        return b"".join(
            base64.b64decode(e["delta"]) for e in self.of("response.output_audio.delta", events)
        )


def sdk_client(gw: Gateway, key: str = GATEWAY_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=f"{gw.base_url}/v1", max_retries=0)


@asynccontextmanager
async def realtime(
    gw: Gateway, model: str = "qwen-plus", *, key: str = GATEWAY_KEY, **options: Any
) -> AsyncIterator[Session]:
    """A connected session whose ``session.created`` was received."""
    async with sdk_client(gw, key).realtime.connect(model=model, **options) as conn:
        session = Session(conn)
        first = await session.recv()
        assert first["type"] == "session.created"
        yield session

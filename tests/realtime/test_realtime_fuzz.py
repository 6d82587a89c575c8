"""Fuzzing ``/v1/realtime`` through one running gateway: seeded random mixes of client events (valid ones with
random values, and broken ones), sent without waiting. After each batch a probe (an unknown event type with its
own ``event_id``) must be answered by its ``error``: the session is still there and every reply to the batch
arrived. Every event received validates against the schema and the SDK's models (the harness); no log record at
ERROR or with a traceback; every response that began ends with its ``response.done``.

300 frames in ``make test`` (3,000 with ``QG_TEST_LONG=1``); ``QG_FUZZ_SEED`` picks another mix."""

from __future__ import annotations

import base64
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from qwen_gateway.simulator import SimulatorConfig
from tests.long import scaled
from tests.realtime.harness import realtime
from tests.voice_ws.conftest import UPSTREAM_KEY, gateway

FRAMES = scaled(300, 3_000)
BATCH = 30


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.bad.append(record)


def _value(rng: random.Random) -> Any:
    return rng.choice(
        [None, True, 0, -1, 2**40, 0.5, "", "x" * rng.randint(0, 40), [], {}, [1, "a"], {"a": 1}]
    )


def _frame(rng: random.Random, ids: list[str]) -> str:
    """One client frame: a valid-looking event with random values, or a broken one."""
    item_id = rng.choice([*ids, "item_nope", "", "root"]) if ids or rng.random() < 0.5 else "x"
    audio = base64.b64encode(rng.randbytes(rng.choice([0, 1, 3, 480, 4800]))).decode()
    events: list[dict[str, Any]] = [
        {"type": "input_audio_buffer.append", "audio": audio},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {
            "type": "session.update",
            "session": rng.choice(
                [
                    {"instructions": _value(rng)},
                    {"output_modalities": rng.choice([["text"], ["audio"], [], ["video"]])},
                    {
                        "audio": {
                            "input": {
                                "turn_detection": rng.choice([None, {"type": "server_vad"}, {}])
                            }
                        }
                    },
                    {
                        "audio": {
                            "output": {
                                "format": {"type": rng.choice(["audio/pcm", "audio/pcmu", "x"])}
                            }
                        }
                    },
                    {"tools": [{"type": "function", "name": rng.choice(["a", "b", "bad name!"])}]},
                    {
                        "tool_choice": rng.choice(
                            ["auto", "none", {"type": "function", "name": "zz"}]
                        )
                    },
                    {"max_output_tokens": _value(rng)},
                    {
                        "modalities": ["text"],
                        "input_audio_format": rng.choice(["pcm16", "g711_alaw", "opus"]),
                    },
                ]
            ),
        },
        {
            "type": "conversation.item.create",
            "previous_item_id": rng.choice([None, item_id]),
            "item": rng.choice(
                [
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "你好"}],
                    },
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "text", "text": "嗯"}],
                    },
                    {"type": "message", "role": "robot", "content": []},
                    {"type": "function_call_output", "call_id": "c1", "output": "{}"},
                    {"type": "function_call", "name": "f", "arguments": "{}"},
                    {"type": "nope"},
                ]
            ),
        },
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": rng.choice([0, 1]),
            "audio_end_ms": rng.choice([0, 10, 10**9, -5]),
        },
        {"type": "conversation.item.delete", "item_id": item_id},
        {"type": "conversation.item.retrieve", "item_id": item_id},
        {
            "type": "response.create",
            "response": rng.choice(
                [
                    {},
                    {"output_modalities": ["text"]},
                    {"conversation": "none"},
                    {"max_output_tokens": 0},
                ]
            ),
        },
        {"type": "response.cancel"},
        {"type": "input_image_buffer.append", "image": "aGk="},
    ]
    event = rng.choice(events)
    if rng.random() < 0.5:
        event["event_id"] = f"evt_{rng.randint(0, 10**6)}"
    text = json.dumps(event, ensure_ascii=False)
    breakage = rng.random()
    if breakage < 0.1:
        return text[: rng.randint(0, len(text))]  # cut short
    if breakage < 0.15:
        return text.replace('"type"', '"tipe"')
    if breakage < 0.2:
        return "[" * rng.randint(1, 3000)
    return text


async def test_random_event_mixes_never_break_the_session(tmp_path: Path) -> None:
    recorder = _Recorder()
    logging.getLogger().addHandler(recorder)
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tokens_per_second=0, tts_realtime_factor=0)
    try:
        async with gateway(tmp_path, config) as gw, realtime(gw) as s:
            gw.sim.set_reply("好的。")
            rng = random.Random(int(os.environ.get("QG_FUZZ_SEED", "14")))
            for batch in range(FRAMES // BATCH):
                ids = [str(e["item"]["id"]) for e in s.of("conversation.item.added")]
                for _ in range(BATCH):
                    await s.conn.send_raw(_frame(rng, ids[-5:]))
                probe = f"probe-{batch}"
                await s.conn.send_raw(json.dumps({"type": "probe", "event_id": probe}))
                while True:
                    event = await s.recv(wait=30)
                    if event["type"] == "error" and event["error"]["event_id"] == probe:
                        break
                    if event["type"] == "error":
                        assert event["error"]["code"] and event["error"]["message"]
            # every response that began also ended (completed, failed or cancelled)
            while len(s.of("response.done")) < len(s.of("response.created")):
                await s.recv(wait=30)
            created = [e["response"]["id"] for e in s.of("response.created")]
            assert created == [e["response"]["id"] for e in s.of("response.done")]
    finally:
        logging.getLogger().removeHandler(recorder)
    assert not recorder.bad, [(r.name, r.getMessage()) for r in recorder.bad[:5]]
    # the mixes did reach the pipeline: answers were given and cancelled, items added
    assert s.of("response.done") and s.of("conversation.item.added")

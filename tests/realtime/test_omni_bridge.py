"""OmniBridge (the Qwen-Omni backend of ``/v1/realtime``) driven directly against the simulator's Omni socket:
GA client events in through a queue, GA server events out through ``send``, the simulator's records for what
reached DashScope."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import typing
from array import array
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pydantic
import pytest
from openai.types.realtime import RealtimeServerEvent
from websockets.asyncio.server import ServerConnection, serve

from qwen_gateway.config import Settings, load_settings
from qwen_gateway.providers.dashscope.catalogue import omni_model
from qwen_gateway.providers.dashscope.policy import Backoff, Timeouts
from qwen_gateway.realtime.omni import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    OmniBridge,
    OmniTurn,
    OmniUsage,
)
from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig
from qwen_gateway.simulator.audio import synthesize
from qwen_gateway.voice.convert import G711Decoder, wire_format

KEY = "sk-omni-test"
MODEL = "qwen3-omni-flash-realtime"
REPLY = "今天晴，适合散步。记得带水。"
#: Speech-shaped PCM at the client's 24 kHz (the simulator's energy VAD hears it once resampled to 16 kHz).
SPEECH_24K = synthesize("今天天气怎么样？我想出去走走。", 24000)
SILENCE_24K = bytes(24000 * 2)  # one second
CHUNK = 9600  # 200 ms of 24 kHz PCM16 per append
#: The openai SDK's own models of GA server events, by type: every event the bridge sends must validate.
GA_SERVER_EVENTS: dict[str, type[pydantic.BaseModel]] = {
    typing.get_args(model.model_fields["type"].annotation)[0]: model
    for model in typing.get_args(typing.get_args(RealtimeServerEvent)[0])
}
#: Beta (DashScope) names that must never reach a GA client.
BETA_ONLY = {
    "conversation.item.created",
    "response.audio.delta",
    "response.audio.done",
    "response.audio_transcript.delta",
    "response.audio_transcript.done",
    "response.text.delta",
    "response.text.done",
}


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(api_key=KEY)


@pytest.fixture
async def sim(sim_config: SimulatorConfig) -> AsyncIterator[Simulator]:
    async with Simulator(sim_config, host="127.0.0.1", port=0) as simulator:
        yield simulator


def settings_for(sim: Simulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"qwen_api_key": KEY, "connect_timeout": 5.0, "read_timeout": 10.0}
    values.update(overrides)
    return load_settings(sim.env, dotenv=None, **values)


def ga_problems(event: dict[str, Any]) -> list[str]:
    """Why the openai SDK's GA model of ``event``'s type refuses it (nothing when it validates)."""
    model = GA_SERVER_EVENTS.get(event["type"])
    if model is None:
        return [f"{event['type']} is not a GA server event"]
    try:
        model.model_validate(json.loads(json.dumps(event)))
    except pydantic.ValidationError as exc:
        return [f"{event['type']}: {exc}"]
    return []


class Client:
    """The endpoint's side of a bridge: a queue of client events, the server events sent, the turns."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.turns: list[OmniTurn] = []
        self.usage: list[OmniUsage] = []
        #: events the openai SDK's GA models refuse (checked by the ``client`` fixture at the end)
        self.invalid: list[str] = []
        self._changed = asyncio.Condition()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while (event := await self.inbox.get()) is not None:
            yield event

    async def send(self, event: dict[str, Any]) -> None:
        assert isinstance(event.get("event_id"), str) and isinstance(event.get("type"), str)
        self.invalid.extend(ga_problems(event))
        async with self._changed:
            self.sent.append(event)
            self._changed.notify_all()

    async def on_turn(self, turn: OmniTurn) -> None:
        self.turns.append(turn)

    def put(self, type: str, **fields: Any) -> None:
        self.inbox.put_nowait({"type": type, **fields})

    def append(self, pcm: bytes, chunk: int = CHUNK, *, decoded: bool = False) -> None:
        """Audio as base64 (``decoded``: as the bytes an endpoint's decoder already made of it)."""
        for i in range(0, len(pcm), chunk):
            piece = pcm[i : i + chunk]
            audio = piece if decoded else base64.b64encode(piece).decode()
            self.put("input_audio_buffer.append", audio=audio)

    def of(self, type: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e["type"] == type]

    def types(self) -> list[str]:
        return [e["type"] for e in self.sent]

    async def wait_for(self, type: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th event of ``type`` (a guard against a hang, not a timing assertion)."""
        async with asyncio.timeout(20), self._changed:
            await self._changed.wait_for(lambda: len(self.of(type)) >= count)
        return self.of(type)[count - 1]


@pytest.fixture
def client() -> Iterator[Client]:
    """A client whose every received event is checked against the openai SDK's GA models."""
    made = Client()
    yield made
    assert made.invalid == []


def bridge(sim: Simulator, client: Client, **kwargs: Any) -> OmniBridge:
    settings = kwargs.pop("settings", None) or settings_for(sim)
    return OmniBridge(
        settings=settings,
        model=kwargs.pop("model", MODEL),
        api_key=kwargs.pop("api_key", None),
        send=client.send,
        on_usage=client.usage.append,
        on_turn=client.on_turn,
        backoff=Backoff(retries=0),
        **kwargs,
    )


async def start(sim: Simulator, client: Client, **kwargs: Any) -> asyncio.Task[None]:
    task = asyncio.create_task(bridge(sim, client, **kwargs).run(client.events()))
    await client.wait_for("session.created")
    return task


async def finish(task: asyncio.Task[None], client: Client) -> None:
    client.inbox.put_nowait(None)
    async with asyncio.timeout(10):
        await task


def wire_audio(client: Client) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in client.of("response.output_audio.delta"))


def rms(pcm: bytes) -> float:
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def session_update(**session: Any) -> dict[str, Any]:
    return {"type": "realtime", **session}


# ------------------------------------------------------------------------------------------------ turns


async def test_server_vad_turn_answers_in_the_clients_g711(sim: Simulator, client: Client) -> None:
    sim.set_reply(REPLY)
    task = await start(sim, client)
    created = client.of("session.created")[0]["session"]
    assert created["type"] == "realtime" and created["model"] == MODEL
    assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert created["audio"]["output"]["voice"] == "Cherry"
    assert created["output_modalities"] == ["audio"]

    client.put(
        "session.update",
        session=session_update(
            audio={
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy"},
            },
            instructions="Be brief.",
        ),
    )
    updated = (await client.wait_for("session.updated"))["session"]
    assert updated["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert updated["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert updated["instructions"] == "Be brief."
    client.append(SILENCE_24K + SPEECH_24K + SILENCE_24K)
    done = await client.wait_for("response.done")
    await finish(task, client)

    types = client.types()
    assert not BETA_ONLY & set(types)
    assert set(types) <= set(SERVER_EVENTS.values()) | {"conversation.item.done"}
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio_transcript.done",
        "response.output_audio.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert [t for t in types if t in order] == order
    # every item is added and done in GA shape, the assistant's with GA content types
    added = client.of("conversation.item.added")
    assert [a["item"]["role"] for a in added] == ["user", "assistant"]
    assert [d["item"]["id"] for d in client.of("conversation.item.done")] == [
        a["item"]["id"] for a in added
    ]
    assert client.of("conversation.item.done")[1]["item"]["content"][0]["type"] == "output_audio"
    assert (
        client.of("response.content_part.done")[0]["part"]["type"] == "audio"
    )  # GA's part name too
    assert done["response"]["status"] == "completed"
    assert done["response"]["output_modalities"] == ["audio"]
    assert done["response"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    usage = done["response"]["usage"]
    assert usage["output_token_details"]["audio_tokens"] > 0

    # the audio: G.711 mu-law at 8 kHz, as long as the 24 kHz PCM Omni sent, and not silence
    (record,) = sim.log.omni_sessions
    (response,) = record.responses
    ulaw = wire_audio(client)
    upstream_ms = response.audio_bytes / 2 / 24
    assert abs(len(ulaw) / 8 - upstream_ms) <= 20  # within a resampler's few ms
    assert rms(G711Decoder(wire_format("audio/pcmu")).decode(ulaw)) > 100
    transcript = "".join(e["delta"] for e in client.of("response.output_audio_transcript.delta"))
    assert transcript == REPLY
    (completed,) = client.of("conversation.item.input_audio_transcription.completed")
    stopped = client.of("input_audio_buffer.speech_stopped")[0]["audio_end_ms"]
    started = client.of("input_audio_buffer.speech_started")[0]["audio_start_ms"]
    assert completed["usage"]["seconds"] == (stopped - started) / 1000 > 0
    assert client.turns[0].input_audio_ms == stopped - started

    # what reached DashScope: its own session fields, 16 kHz PCM about 2/3 of the client's 24 kHz bytes
    assert record.session["voice"] == "Cherry"  # "alloy" is OpenAI's: the model's default instead
    assert record.session["input_audio_format"] == "pcm16"
    assert record.session["output_audio_format"] == "pcm24"
    assert record.session["instructions"] == "Be brief."
    assert record.session["modalities"] == ["text", "audio"]
    sent = len(SILENCE_24K + SPEECH_24K + SILENCE_24K)
    assert abs(len(record.audio) - sent * 2 / 3) <= 2 * 16 * 100  # a resampler holds some ms back
    assert [i.via for i in record.items] == ["vad"]

    # the turn reported for history and quotas
    (turn,) = client.turns
    assert turn.status == "completed" and turn.assistant_transcript == REPLY
    assert turn.user_transcript == sim_user_text(sim)
    assert turn.user_item_ids == (added[0]["item"]["id"],)
    assert turn.assistant_item_ids == (added[1]["item"]["id"],)
    assert turn.audio_ms == len(ulaw) // 8
    assert turn.timings.first_audio_ms is not None and turn.timings.first_audio_ms >= 0
    assert turn.timings.gateway_first_audio_ms is not None
    assert client.usage == [turn.usage]
    assert turn.usage is not None and turn.usage.total_tokens == usage["total_tokens"]
    await sim.wait_closed("omni")


def sim_user_text(sim: Simulator) -> str:
    """What the simulator recognises in audio it has no transcript registered for."""
    return SimulatorConfig().asr_default_text


async def test_manual_commit_then_response_create(sim: Simulator, client: Client) -> None:
    sim.set_reply(REPLY)
    task = await start(sim, client)
    client.put(
        "session.update",
        session=session_update(audio={"input": {"turn_detection": None}}),
    )
    updated = (await client.wait_for("session.updated"))["session"]
    assert updated["audio"]["input"]["turn_detection"] is None
    client.append(SPEECH_24K, decoded=True)
    client.put("input_audio_buffer.commit", event_id="evt_commit")
    await client.wait_for("input_audio_buffer.committed")
    client.put("response.create", event_id="evt_create", response={})
    done = await client.wait_for("response.done")
    await finish(task, client)
    assert done["response"]["status"] == "completed"
    types = client.types()
    assert "input_audio_buffer.speech_started" not in types
    assert types.index("input_audio_buffer.committed") < types.index("response.created")
    (record,) = sim.log.omni_sessions
    assert record.session["turn_detection"] is None
    assert [i.via for i in record.items] == ["commit"]
    assert record.events[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert len(wire_audio(client)) > 24000  # 24 kHz PCM16 for the client: over half a second
    (turn,) = client.turns
    assert turn.user_transcript == sim_user_text(sim) and turn.assistant_transcript == REPLY
    (completed,) = client.of("conversation.item.input_audio_transcription.completed")
    assert completed["usage"] == {"type": "duration", "seconds": len(SPEECH_24K) / 48000}
    assert turn.input_audio_ms == len(SPEECH_24K) // 48


async def test_text_only_session(sim: Simulator, client: Client) -> None:
    sim.set_reply(REPLY)
    task = await start(sim, client)
    client.put(
        "session.update",
        session=session_update(
            output_modalities=["text"], audio={"input": {"turn_detection": None}}
        ),
    )
    assert (await client.wait_for("session.updated"))["session"]["output_modalities"] == ["text"]
    client.put(
        "conversation.item.create",
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "天气？"}],
        },
    )
    await client.wait_for("conversation.item.done")
    client.put("response.create", response={})
    done = await client.wait_for("response.done")
    await finish(task, client)
    types = client.types()
    assert "response.output_audio.delta" not in types
    assert "".join(e["delta"] for e in client.of("response.output_text.delta")) == REPLY
    assert client.of("response.output_text.done")[0]["text"] == REPLY
    assert done["response"]["output_modalities"] == ["text"]
    assert client.of("response.content_part.done")[0]["part"] == {"type": "text", "text": REPLY}
    assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": REPLY}]
    (record,) = sim.log.omni_sessions
    assert record.session["modalities"] == ["text"]
    (turn,) = client.turns
    assert turn.user_transcript == "天气？" and turn.assistant_transcript == REPLY
    assert turn.audio_ms == 0 and turn.timings.first_audio_ms is None


async def test_response_cancel_passes_through(sim: Simulator, client: Client) -> None:
    sim.configure(tts_realtime_factor=1.0)
    sim.set_reply("一段很长的回答。" * 20)
    task = await start(sim, client)
    client.put("session.update", session=session_update(audio={"input": {"turn_detection": None}}))
    await client.wait_for("session.updated")
    client.append(SPEECH_24K)
    client.put("input_audio_buffer.commit")
    client.put("response.create", response={})
    await client.wait_for("response.output_audio.delta")
    client.put("response.cancel", event_id="evt_cancel")
    done = await client.wait_for("response.done")
    # the client cuts what it played: answered by the bridge (DashScope has no such event)
    item_id = done["response"]["output"][0]["id"]
    client.put("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=300)
    truncated = await client.wait_for("conversation.item.truncated")
    client.put("conversation.item.truncate", event_id="evt_t", item_id="item_nope", audio_end_ms=1)
    client.put("conversation.item.delete", event_id="evt_del", item_id=item_id)
    not_found = (await client.wait_for("error"))["error"]
    deleted = (await client.wait_for("error", 2))["error"]  # DashScope's answer, passed back
    await finish(task, client)
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 300)
    assert (not_found["event_id"], not_found["code"]) == ("evt_t", "item_not_found")
    assert deleted["event_id"] == "evt_del"
    assert done["response"]["status"] == "cancelled"
    (record,) = sim.log.omni_sessions
    assert "response.cancel" in record.events and "conversation.item.delete" in record.events
    assert "conversation.item.truncate" not in record.events
    assert record.responses[0].status == "cancelled"
    (turn,) = client.turns
    assert turn.status == "cancelled"
    assert 0 < turn.audio_ms < 20 * 1000  # some audio went out, far from the whole answer


async def test_image_append_passes_through(sim: Simulator, client: Client) -> None:
    task = await start(sim, client)
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg").decode()
    client.put("input_image_buffer.append", event_id="evt_img", image=jpeg)
    client.put("input_image_buffer.append", event_id="evt_bad_img", image="")
    error = await client.wait_for("error")
    await finish(task, client)
    (record,) = sim.log.omni_sessions
    assert record.images == 1
    assert record.events.count("input_image_buffer.append") == 2
    assert error["error"]["event_id"] == "evt_bad_img" and error["error"]["param"] == "image"


# ------------------------------------------------------------------------------------------------ errors


async def test_upstream_error_names_the_clients_event_and_the_session_goes_on(
    sim: Simulator, client: Client
) -> None:
    task = await start(sim, client)
    client.put("input_audio_buffer.commit", event_id="evt_empty_commit")  # nothing appended
    error = (await client.wait_for("error"))["error"]
    assert error["event_id"] == "evt_empty_commit"
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
    assert "buffer too small" in error["message"]
    # refused by the bridge itself: a format it cannot convert; nothing is sent for it
    client.put(
        "session.update",
        event_id="evt_opus",
        session=session_update(audio={"input": {"format": {"type": "audio/opus"}}}),
    )
    refused = (await client.wait_for("error", 2))["error"]
    assert refused["event_id"] == "evt_opus"
    assert refused["param"] == "session.audio.input.format"
    client.put("input_audio_buffer.append", event_id="evt_b64", audio="@@ not base64 @@")
    bad_audio = (await client.wait_for("error", 3))["error"]
    assert (bad_audio["event_id"], bad_audio["code"]) == ("evt_b64", "invalid_base64")
    client.put("session.update", session=session_update(instructions="still here"))
    updated = await client.wait_for("session.updated")
    assert updated["session"]["instructions"] == "still here"
    await finish(task, client)
    (record,) = sim.log.omni_sessions
    assert record.events == ["input_audio_buffer.commit", "session.update"]


async def test_upstream_error_event_then_close(sim: Simulator, client: Client) -> None:
    sim.faults.add(
        Fault.ws_error(endpoint="omni", after=1, code="InternalError", message="boom", close=True)
    )
    task = await start(sim, client)
    client.put("session.update", session=session_update(audio={"input": {"turn_detection": None}}))
    client.append(SPEECH_24K)
    client.put("input_audio_buffer.commit")
    client.put("response.create", response={})
    async with asyncio.timeout(10):
        await task  # the bridge ends by itself
    errors = [e["error"] for e in client.of("error")]
    assert [(e["type"], e["code"]) for e in errors] == [
        ("server_error", "InternalError"),  # DashScope's own event, passed on
        ("server_error", "upstream_closed"),  # then the bridge's: the upstream is gone
    ]
    assert client.turns == []
    await sim.wait_closed("omni")


async def test_upstream_drop_ends_the_bridge_with_an_error(sim: Simulator, client: Client) -> None:
    sim.set_reply("一段很长的回答。" * 10)
    sim.faults.add(Fault.drop(2, endpoint="omni"))
    task = await start(sim, client)
    client.put("session.update", session=session_update(audio={"input": {"turn_detection": None}}))
    client.append(SPEECH_24K)
    client.put("input_audio_buffer.commit")
    client.put("response.create", response={})
    async with asyncio.timeout(10):
        await task
    (error,) = client.of("error")
    assert error["error"]["code"] == "upstream_closed" and error["error"]["type"] == "server_error"
    assert client.of("response.output_audio.delta")  # what came before the drop was passed on
    assert client.types()[-1] == "error"
    await sim.wait_closed("omni")


async def test_silent_upstream_times_out(sim: Simulator, client: Client) -> None:
    sim.faults.add(Fault.stall(1, None, endpoint="omni"))
    task = await start(sim, client, timeouts=Timeouts(connect=5, read=0.3, write=5, close=0.5))
    client.put("session.update", session=session_update(audio={"input": {"turn_detection": None}}))
    client.append(SPEECH_24K)
    client.put("input_audio_buffer.commit")
    client.put("response.create", response={})
    async with asyncio.timeout(10):
        await task
    assert client.of("error")[-1]["error"]["code"] == "upstream_timeout"
    await sim.wait_closed("omni")


async def test_refused_key_is_an_error_event(sim: Simulator, client: Client) -> None:
    task = asyncio.create_task(bridge(sim, client, api_key="sk-wrong").run(client.events()))
    async with asyncio.timeout(10):
        await task
    (error,) = client.of("error")
    assert error["error"]["code"] == "invalid_api_key"
    assert client.types() == ["error"]


async def test_cancellation_closes_the_upstream_socket(sim: Simulator, client: Client) -> None:
    task = await start(sim, client)
    client.append(SPEECH_24K)
    await asyncio.sleep(0)
    assert sim.log.open_connections("omni")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sim.wait_closed("omni")
    assert sim.log.open_connections("omni") == []


async def test_client_leaving_closes_the_upstream_socket(sim: Simulator, client: Client) -> None:
    task = await start(sim, client)
    await finish(task, client)
    await sim.wait_closed("omni")
    assert [c.kind for c in sim.log.connections] == ["omni"]


# ------------------------------------------------------------------------------------------------ tables


def test_the_tables_speak_ga_to_the_client_and_beta_upstream() -> None:
    assert not BETA_ONLY & set(SERVER_EVENTS.values())
    assert SERVER_EVENTS["response.audio.delta"] == "response.output_audio.delta"
    assert SERVER_EVENTS["conversation.item.created"] == "conversation.item.added"
    assert CLIENT_EVENTS["input_image_buffer.append"] == "input_image_buffer.append"


@pytest.mark.parametrize(
    ("name", "voice", "output_format"),
    [
        ("qwen3-omni-flash-realtime", "Cherry", "pcm24"),
        ("qwen3-omni-flash-realtime-2025-12-01", "Cherry", "pcm24"),
        ("qwen-omni-turbo-realtime", "Chelsie", "pcm16"),
        ("qwen-omni-turbo-realtime-latest", "Chelsie", "pcm16"),
        ("qwen3.5-omni-plus-realtime", "Tina", "pcm24"),
    ],
)
def test_catalogue_knows_the_omni_models(name: str, voice: str, output_format: str) -> None:
    model = omni_model(name)
    assert model is not None and model.name == name
    assert (model.default_voice, model.output_format) == (voice, output_format)
    assert (model.input_rate, model.output_rate) == (16000, 24000)


@pytest.mark.parametrize("name", ["qwen-plus", "qwen3-asr-flash-realtime", "qwen-omni-turbo"])
def test_catalogue_refuses_other_models(name: str) -> None:
    assert omni_model(name) is None
    with pytest.raises(ValueError, match="not a Qwen-Omni realtime model"):
        OmniBridge(
            settings=Settings(),
            model=name,
            api_key=None,
            send=Client().send,
            on_usage=lambda usage: None,
            on_turn=Client().on_turn,
        )


# ------------------------------------------------------------------------------------------------ scripted upstream


async def test_late_transcript_and_a_function_call_from_a_scripted_upstream(client: Client) -> None:
    """DashScope sends the user's transcript after ``response.done`` (it may) and answers with a function call:
    the call's events pass through in GA shape, and the turn is reported once its transcript is in."""
    received: list[dict[str, Any]] = []

    async def upstream(ws: ServerConnection) -> None:
        def ev(type: str, **fields: Any) -> str:
            return json.dumps({"event_id": "event_up", "type": type, **fields})

        await ws.send(
            ev("session.created", session={"id": "sess_1", "modalities": ["text", "audio"]})
        )
        async for message in ws:
            event = json.loads(message)
            received.append(event)
            if event["type"] != "input_audio_buffer.commit":
                continue
            user = {
                "id": "item_u",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}],
            }
            call = {
                "id": "item_f",
                "type": "function_call",
                "status": "in_progress",
                "name": "clock",
                "call_id": "call_1",
                "arguments": "",
            }
            ids = {"response_id": "resp_1", "item_id": "item_f", "output_index": 0}
            for out in [
                ev("input_audio_buffer.committed", previous_item_id=None, item_id="item_u"),
                ev("conversation.item.created", previous_item_id=None, item=user),
                ev(
                    "response.created",
                    response={
                        "id": "resp_1",
                        "status": "in_progress",
                        "modalities": ["text", "audio"],
                        "output": [],
                    },
                ),
                ev("response.output_item.added", response_id="resp_1", output_index=0, item=call),
                ev(
                    "response.function_call_arguments.delta",
                    **ids,
                    call_id="call_1",
                    delta='{"tz":',
                ),
                ev(
                    "response.function_call_arguments.delta",
                    **ids,
                    call_id="call_1",
                    delta='"UTC"}',
                ),
                ev(
                    "response.function_call_arguments.done",
                    **ids,
                    call_id="call_1",
                    arguments='{"tz":"UTC"}',
                ),
                ev(
                    "response.output_item.done",
                    response_id="resp_1",
                    output_index=0,
                    item=call | {"status": "completed", "arguments": '{"tz":"UTC"}'},
                ),
                ev(
                    "response.done",
                    response={
                        "id": "resp_1",
                        "status": "completed",
                        "modalities": ["text", "audio"],
                        "output": [call],
                        "usage": {"input_tokens": 7, "output_tokens": 3},
                    },
                ),
                ev(
                    "conversation.item.input_audio_transcription.completed",
                    item_id="item_u",
                    content_index=0,
                    transcript="几点了？",
                ),
            ]:
                await ws.send(out)

    async with serve(upstream, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = Settings(
            qwen_api_key=KEY, realtime_base=f"ws://127.0.0.1:{port}/api-ws/v1/realtime"
        )
        task = asyncio.create_task(
            OmniBridge(
                settings=settings,
                model=MODEL,
                api_key=None,
                send=client.send,
                on_usage=client.usage.append,
                on_turn=client.on_turn,
            ).run(client.events())
        )
        client.put(
            "session.update",
            session=session_update(
                tools=[{"type": "function", "name": "clock", "parameters": {"type": "object"}}],
                tool_choice="auto",
            ),
        )
        client.append(SPEECH_24K)
        client.put("input_audio_buffer.commit")
        await client.wait_for("conversation.item.input_audio_transcription.completed")
        await finish(task, client)

    assert received[0]["type"] == "session.update"
    assert received[0]["session"]["tools"][0]["name"] == "clock"
    assert received[0]["session"]["tool_choice"] == "auto"
    deltas = client.of("response.function_call_arguments.delta")
    assert "".join(d["delta"] for d in deltas) == '{"tz":"UTC"}'
    assert client.of("response.function_call_arguments.done")[0]["arguments"] == '{"tz":"UTC"}'
    assert [a["item"]["type"] for a in client.of("conversation.item.added")] == [
        "message",
        "function_call",
    ]
    assert client.of("conversation.item.done")[-1]["item"]["arguments"] == '{"tz":"UTC"}'
    assert client.of("response.done")[0]["response"]["usage"]["total_tokens"] == 10
    (turn,) = client.turns
    assert turn.user_transcript == "几点了？" and turn.user_item_ids == ("item_u",)
    assert turn.assistant_item_ids == ("item_f",) and turn.assistant_transcript == ""
    assert client.usage == [OmniUsage(input_tokens=7, output_tokens=3, total_tokens=10)]


async def test_semantic_vad_runs_as_server_vad(sim: Simulator, client: Client) -> None:
    task = await start(sim, client)
    client.put(
        "session.update",
        session=session_update(
            audio={"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}
        ),
    )
    updated = (await client.wait_for("session.updated"))["session"]
    await finish(task, client)
    (record,) = sim.log.omni_sessions
    assert record.session["turn_detection"] == {"type": "server_vad", "silence_duration_ms": 400}
    assert updated["audio"]["input"]["turn_detection"]["type"] == "server_vad"

"""The simulator serves each recognition model only where DashScope does (``simulator/models.py``), with the
documented sample-rate rules, and answers Qwen-ASR file transcription in its own shapes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets

from qwen_gateway.simulator import Simulator
from qwen_gateway.simulator.models import MODELS, Endpoint

from .conftest import AUTH, connect, finish_task, pcm_tone, recv_json, run_task
from .test_file_asr import FileServer, _wav

ASYNC = AUTH | {"X-DashScope-Async": "enable"}


@pytest.fixture
async def files() -> Any:
    async with FileServer() as server:
        yield server


async def _run_task_answer(sim: Simulator, model: str, rate: int = 16000) -> dict[str, Any]:
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("t", model=model, parameters={"format": "pcm", "sample_rate": rate}))
    answer = await recv_json(ws)
    if answer["header"]["event"] == "task-failed":
        with pytest.raises(websockets.ConnectionClosed):
            await recv_json(ws)
    else:
        await ws.close()
    return answer


# --- the task socket ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model",
    [
        "paraformer-v2",  # a file model
        "qwen3-asr-flash-filetrans",
        "qwen3-asr-flash-realtime",  # the realtime protocol's
        "cosyvoice-v2",  # a synthesis model with task "asr"
        "paraformer-realtime-v3",  # no such model
    ],
)
async def test_a_model_not_served_on_the_task_socket_fails_the_task(
    sim: Simulator, model: str
) -> None:
    answer = await _run_task_answer(sim, model)
    assert answer["header"]["event"] == "task-failed"
    assert answer["header"]["error_code"] == "ModelNotFound"
    assert answer["header"]["error_message"] == f"Model not found ({model})!"
    assert sim.log.asr_sessions == []


@pytest.mark.parametrize("model", sorted(MODELS[Endpoint.TASK_ASR]))
async def test_every_task_recognition_model_starts(sim: Simulator, model: str) -> None:
    rate = 8000 if "8k" in model else 16000
    answer = await _run_task_answer(sim, model, rate)
    assert answer["header"]["event"] == "task-started"


async def test_a_dated_snapshot_is_the_same_model(sim: Simulator) -> None:
    answer = await _run_task_answer(sim, "paraformer-realtime-v2-2025-01-01")
    assert answer["header"]["event"] == "task-started"


@pytest.mark.parametrize(
    ("model", "rate", "allowed"),
    [
        ("paraformer-realtime-v1", 8000, "16000"),
        ("paraformer-realtime-v1", 48000, "16000"),
        ("paraformer-realtime-8k-v2", 16000, "8000"),
        ("paraformer-realtime-8k-v1", 16000, "8000"),
        ("fun-asr-realtime-8k", 16000, "8000"),
    ],
)
async def test_sample_rate_rules(sim: Simulator, model: str, rate: int, allowed: str) -> None:
    answer = await _run_task_answer(sim, model, rate)
    assert answer["header"]["error_code"] == "InvalidParameter"
    assert (
        answer["header"]["error_message"] == f"Model {model} only supports sample_rate {allowed}."
    )


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
async def test_any_rate_models_take_any_rate(sim: Simulator, rate: int) -> None:
    answer = await _run_task_answer(sim, "paraformer-realtime-v2", rate)
    assert answer["header"]["event"] == "task-started"


async def test_qwen_audio_streaming_answers_in_sentences(sim: Simulator) -> None:
    audio = pcm_tone(1.0)
    sim.register_transcript(audio, "千问流式识别。")
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("q", model="qwen-audio-3.1-asr-flash-streaming"))
    assert (await recv_json(ws))["header"]["event"] == "task-started"
    await ws.send(audio)
    await ws.send(finish_task("q"))
    finals = []
    while (event := await recv_json(ws))["header"]["event"] != "task-finished":
        sentence = event["payload"]["output"]["sentence"]
        if sentence["sentence_end"]:
            finals.append(sentence["text"])
    assert finals == ["千问流式识别。"]
    await ws.close()


async def test_gummy_partials_carry_current_time(sim: Simulator) -> None:
    audio = pcm_tone(3.0)
    sim.register_transcript(audio, "今天天气很好，我们出去走走吧。")
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("g", model="gummy-realtime-v1"))
    await recv_json(ws)
    for start in range(0, len(audio), 3200):
        await ws.send(audio[start : start + 3200])
    await ws.send(finish_task("g"))
    events = []
    while (event := await recv_json(ws))["header"]["event"] != "task-finished":
        events.append(event["payload"]["output"]["transcription"])
    partials = [t for t in events if not t["sentence_end"]]
    assert partials and all(isinstance(t["current_time"], int) for t in partials)
    assert all("current_time" not in t for t in events if t["sentence_end"])
    await ws.close()


# --- the file endpoint -------------------------------------------------------------------------------------
def _submit_url(sim: Simulator) -> str:
    return f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/services/audio/asr/transcription"


@pytest.mark.parametrize(
    "model", ["no-such-model", "paraformer-realtime-v2", "qwen3-asr-flash-realtime", "qwen-plus"]
)
async def test_a_model_the_file_endpoint_does_not_serve_is_refused(
    sim: Simulator, http: httpx.AsyncClient, model: str
) -> None:
    body = {"model": model, "input": {"file_urls": ["http://127.0.0.1:9/a.wav"]}, "parameters": {}}
    answer = await http.post(_submit_url(sim), json=body, headers=ASYNC)
    assert answer.status_code == 404
    assert answer.json() | {"request_id": None} == {
        "request_id": None,
        "code": "ModelNotFound",
        "message": f"Model not found ({model})!",
    }
    assert sim.log.file_asr_tasks == []


@pytest.mark.parametrize(
    ("model", "source", "message"),
    [
        (
            "qwen3-asr-flash-filetrans",
            {"file_urls": ["http://x/a.wav"]},
            "input must contain file_url",
        ),
        (
            "qwen3-asr-flash-filetrans",
            {"file_url": ["http://x/a.wav"]},
            "input must contain file_url",
        ),
        ("paraformer-v2", {"file_url": "http://x/a.wav"}, "input must contain file_urls"),
        (
            "qwen-audio-3.1-asr-flash-filetrans",
            {"file_url": "http://x/a.wav"},
            "input must contain file_urls",
        ),
    ],
)
async def test_the_wrong_input_key_for_the_model(
    sim: Simulator, http: httpx.AsyncClient, model: str, source: dict[str, Any], message: str
) -> None:
    body = {"model": model, "input": source, "parameters": {}}
    answer = await http.post(_submit_url(sim), json=body, headers=ASYNC)
    assert answer.status_code == 400
    assert (answer.json()["code"], answer.json()["message"]) == ("InvalidParameter", message)


async def _run_qwen_task(
    sim: Simulator, http: httpx.AsyncClient, url: str, **parameters: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    body = {
        "model": "qwen3-asr-flash-filetrans",
        "input": {"file_url": url},
        "parameters": parameters,
    }
    submitted = await http.post(_submit_url(sim), json=body, headers=ASYNC)
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["output"]["task_id"]
    polls = []
    while True:
        answer = await http.get(
            f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/tasks/{task_id}", headers=AUTH
        )
        assert answer.status_code == 200
        polls.append(answer.json())
        if answer.json()["output"]["task_status"] in ("SUCCEEDED", "FAILED"):
            return answer.json(), polls


async def test_qwen_filetrans_answers_in_the_qwen_asr_shapes(
    sim: Simulator, http: httpx.AsyncClient, files: FileServer
) -> None:
    audio = _wav(pcm_tone(2.0))
    files.files["/q.wav"] = audio
    sim.register_transcript(audio, "欢迎使用阿里云。Welcome to Alibaba Cloud.")
    done, polls = await _run_qwen_task(sim, http, files.url("/q.wav"))
    running = [p for p in polls if p["output"]["task_status"] == "RUNNING"]
    assert running and all("task_metrics" not in p["output"] for p in running)
    output = done["output"]
    assert set(output) == {
        "task_id", "task_status", "submit_time", "scheduled_time", "end_time", "result",
    }  # fmt: skip
    assert "results" not in output and done["usage"] == {"seconds": 2}
    result = (await http.get(output["result"]["transcription_url"])).json()
    assert result["file_url"] == files.url("/q.wav")
    assert result["audio_info"] == {"format": "wav", "sample_rate": 16000}
    (transcript,) = result["transcripts"]
    assert transcript["channel_id"] == 0
    assert transcript["text"] == "欢迎使用阿里云。Welcome to Alibaba Cloud."
    sentences = transcript["sentences"]
    assert [s["sentence_id"] for s in sentences] == [0, 1]
    assert all(s["language"] == "zh" and s["emotion"] == "neutral" for s in sentences)
    assert all("words" not in s for s in sentences)  # only with enable_words


async def test_qwen_filetrans_words_on_request(
    sim: Simulator, http: httpx.AsyncClient, files: FileServer
) -> None:
    files.files["/w.wav"] = _wav(pcm_tone(1.0))
    done, _ = await _run_qwen_task(sim, http, files.url("/w.wav"), enable_words=True)
    result = (await http.get(done["output"]["result"]["transcription_url"])).json()
    assert all(s["words"] for s in result["transcripts"][0]["sentences"])


async def test_qwen_filetrans_unreachable_file_fails_the_whole_task(
    sim: Simulator, http: httpx.AsyncClient, files: FileServer
) -> None:
    done, _ = await _run_qwen_task(sim, http, files.url("/missing.wav"))
    assert done["output"]["task_status"] == "FAILED"
    assert done["output"]["code"] == "FILE_DOWNLOAD_FAILED"
    assert "result" not in done["output"] and done["usage"] is None
    (task,) = sim.log.file_asr_tasks
    assert task.file_urls == [files.url("/missing.wav")] and task.status == "FAILED"


async def test_qwen_audio_filetrans_takes_a_list(
    sim: Simulator, http: httpx.AsyncClient, files: FileServer
) -> None:
    files.files["/l.wav"] = _wav(pcm_tone(1.0))
    body = {
        "model": "qwen-audio-3.1-asr-flash-filetrans",
        "input": {"file_urls": [files.url("/l.wav")]},
        "parameters": {},
    }
    submitted = await http.post(_submit_url(sim), json=body, headers=ASYNC)
    assert submitted.status_code == 200
    task_id = submitted.json()["output"]["task_id"]
    while True:
        answer = (
            await http.get(f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/tasks/{task_id}", headers=AUTH)
        ).json()
        if answer["output"]["task_status"] == "SUCCEEDED":
            break
    assert answer["output"]["results"][0]["subtask_status"] == "SUCCEEDED"
    assert json.dumps(answer["usage"]).startswith('{"duration"')

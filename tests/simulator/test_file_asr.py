"""File recognition: submit, PENDING -> RUNNING -> SUCCEEDED, downloads over loopback, result files, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from qwen_gateway.simulator import Fault, Simulator

from .conftest import AUTH, pcm_tone


class FileServer:
    """A tiny loopback HTTP server for the ``file_urls`` the simulator downloads."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FileServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            self.requests.append(path)
            body = self.files.get(path)
            status = b"200 OK" if body is not None else b"404 Not Found"
            body = body or b""
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with FileServer() as server:
        yield server


ASYNC = AUTH | {"X-DashScope-Async": "enable"}


def _submit_body(*urls: str) -> dict:
    return {
        "model": "paraformer-v2",
        "input": {"file_urls": list(urls)},
        "parameters": {"channel_id": [0], "language_hints": ["zh", "en"]},
    }


async def _submit(sim: Simulator, http: httpx.AsyncClient, *urls: str) -> str:
    response = await http.post(
        f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/services/audio/asr/transcription",
        json=_submit_body(*urls),
        headers=ASYNC,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"]["task_status"] == "PENDING"
    assert body["request_id"]
    task_id: str = body["output"]["task_id"]
    return task_id


async def _poll(sim: Simulator, http: httpx.AsyncClient, task_id: str) -> dict:
    response = await http.get(f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/tasks/{task_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


def _wav(pcm: bytes, rate: int = 16000) -> bytes:
    import struct

    return (
        struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF",
            36 + len(pcm),
            b"WAVE",
            b"fmt ",
            16,
            1,
            1,
            rate,
            rate * 2,
            2,
            16,
            b"data",
            len(pcm),
        )
        + pcm
    )


async def test_submit_poll_and_fetch(
    sim: Simulator, http: httpx.AsyncClient, files: FileServer
) -> None:
    known = _wav(pcm_tone(3.0))
    files.files["/known.wav"] = known
    files.files["/other.wav"] = _wav(pcm_tone(2.0, seed=3))
    sim.register_transcript(known, "Hello world, 这里是阿里巴巴语音实验室。")
    task_id = await _submit(
        sim, http, files.url("/known.wav"), files.url("/other.wav"), files.url("/missing.wav")
    )
    running = await _poll(sim, http, task_id)
    assert running["output"]["task_status"] == "RUNNING"
    assert running["output"]["task_metrics"] == {"TOTAL": 3, "SUCCEEDED": 0, "FAILED": 0}
    assert running["usage"] is None and files.requests == []
    done = await _poll(sim, http, task_id)
    output = done["output"]
    assert output["task_status"] == "SUCCEEDED"
    assert output["task_metrics"] == {"TOTAL": 3, "SUCCEEDED": 2, "FAILED": 1}
    assert done["usage"] == {"duration": 5}
    assert {"submit_time", "scheduled_time", "end_time"} <= set(output)
    first, second, missing = output["results"]
    assert missing == {
        "file_url": files.url("/missing.wav"),
        "code": "InvalidFile.DownloadFailed",
        "message": "The audio file cannot be downloaded.",
        "subtask_status": "FAILED",
    }
    assert first["subtask_status"] == "SUCCEEDED" and first["file_url"] == files.url("/known.wav")
    result = (await http.get(first["transcription_url"])).json()  # pre-signed: no key needed
    assert result["file_url"] == files.url("/known.wav")
    assert result["properties"]["original_duration_in_milliseconds"] == 3000
    assert result["properties"]["original_sampling_rate"] == 16000
    (transcript,) = result["transcripts"]
    assert transcript["text"] == "Hello world, 这里是阿里巴巴语音实验室。"
    words = transcript["sentences"][0]["words"]
    assert words[0] == {
        "begin_time": 0,
        "end_time": words[0]["end_time"],
        "text": "Hello ",
        "punctuation": "",
    }
    assert words[1]["text"] == "world" and words[1]["punctuation"] == ", "
    other = (await http.get(second["transcription_url"])).json()
    assert other["transcripts"][0]["text"] == sim.config.asr_default_text
    (record,) = sim.log.file_asr_tasks
    assert record.status == "SUCCEEDED" and record.polls == 2
    assert record.downloads == [
        (files.url("/known.wav"), len(known)),
        (files.url("/other.wav"), len(files.files["/other.wav"])),
        (files.url("/missing.wav"), None),
    ]
    again = await _poll(sim, http, task_id)
    assert again["output"]["results"] == output["results"]
    assert files.requests.count("/known.wav") == 1


async def test_state_machine_is_configurable(
    sim: Simulator, http: httpx.AsyncClient, files: FileServer
) -> None:
    sim.configure(file_asr_pending_polls=2, file_asr_running_polls=2)
    files.files["/a.wav"] = _wav(pcm_tone(1.0))
    task_id = await _submit(sim, http, files.url("/a.wav"))
    states = [(await _poll(sim, http, task_id))["output"]["task_status"] for _ in range(5)]
    assert states == ["PENDING", "PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]


async def test_submit_errors(sim: Simulator, http: httpx.AsyncClient) -> None:
    url = f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/services/audio/asr/transcription"
    sync = await http.post(url, json=_submit_body("http://127.0.0.1:9/a.wav"), headers=AUTH)
    assert sync.status_code == 403
    assert sync.json() | {"request_id": None} == {
        "request_id": None,
        "code": "AccessDenied",
        "message": "current user api does not support synchronous calls.",
    }
    no_files = await http.post(url, json={"model": "paraformer-v2", "input": {}}, headers=ASYNC)
    assert no_files.status_code == 400
    assert no_files.json()["message"] == "input must contain file_urls"
    assert no_files.json()["code"] == "InvalidParameter"
    bad_key = await http.post(
        url, json=_submit_body("http://x/a.wav"), headers={"X-DashScope-Async": "enable"}
    )
    assert bad_key.status_code == 401
    assert (
        bad_key.json()["code"] == "InvalidApiKey"
        and bad_key.json()["message"] == "Invalid API-key provided."
    )
    unknown = await http.get(f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/tasks/nope", headers=AUTH)
    assert unknown.status_code == 404


async def test_faults(sim: Simulator, http: httpx.AsyncClient, files: FileServer) -> None:
    files.files["/a.wav"] = _wav(pcm_tone(1.0))
    sim.faults.add(Fault.task_failed("file_asr", code="FILE_403_FORBIDDEN", message="forbidden"))
    task_id = await _submit(sim, http, files.url("/a.wav"))
    await _poll(sim, http, task_id)
    failed = (await _poll(sim, http, task_id))["output"]
    assert failed["task_status"] == "FAILED"
    assert (failed["code"], failed["message"]) == ("FILE_403_FORBIDDEN", "forbidden")

    sim.faults.add(Fault.http_error(503, endpoint="tasks", times=1))
    task_id = await _submit(sim, http, files.url("/a.wav"))
    unavailable = await http.get(
        f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/tasks/{task_id}", headers=AUTH
    )
    assert unavailable.status_code == 503 and unavailable.json()["code"] == "ModelUnavailable"
    assert (await _poll(sim, http, task_id))["output"]["task_status"] == "RUNNING"

    sim.faults.add(Fault.http_error(429, code="Throttling.RateQuota", endpoint="file_asr"))
    response = await http.post(
        f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/services/audio/asr/transcription",
        json=_submit_body(files.url("/a.wav")),
        headers=ASYNC,
    )
    assert response.status_code == 429 and response.json()["code"] == "Throttling.RateQuota"


async def test_result_file_fault(
    sim: Simulator, http: httpx.AsyncClient, files: FileServer
) -> None:
    files.files["/a.wav"] = _wav(pcm_tone(1.0))
    task_id = await _submit(sim, http, files.url("/a.wav"))
    await _poll(sim, http, task_id)
    url = (await _poll(sim, http, task_id))["output"]["results"][0]["transcription_url"]
    sim.faults.add(Fault.http_error(500, endpoint="result"))
    assert (await http.get(url)).status_code == 500
    assert (await http.get(url)).json()["transcripts"][0]["text"] == sim.config.asr_default_text


async def test_cancel_pending(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.configure(file_asr_pending_polls=5)
    task_id = await _submit(sim, http, "http://127.0.0.1:9/a.wav")
    response = await http.post(
        f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/tasks/{task_id}/cancel", headers=AUTH
    )
    assert response.status_code == 200
    assert (await _poll(sim, http, task_id))["output"]["task_status"] == "CANCELED"
    again = await http.post(
        f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/tasks/{task_id}/cancel", headers=AUTH
    )
    assert again.status_code == 400
    unknown = await http.post(
        f"{sim.env['DASHSCOPE_HTTP_BASE_URL']}/tasks/nope/cancel", headers=AUTH
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "NotFound"

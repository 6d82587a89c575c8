"""File recognition as DashScope runs it: an async task submitted over HTTP and polled (§5, §10).

``POST /api/v1/services/audio/asr/transcription`` (``X-DashScope-Async: enable``) answers ``PENDING``; polls of
``GET /api/v1/tasks/<id>`` move it ``PENDING`` -> ``RUNNING`` -> ``SUCCEEDED``. At completion the simulator downloads
every file with httpx, looks its SHA-256 up in the transcript registry (else the default text) and serves the
result JSON itself at each ``transcription_url``.

Two request/answer families share the endpoint, by model (:data:`.models.MODELS`):

* ``Endpoint.FILE_ASR_URLS`` (paraformer, fun-asr, qwen-audio-3.1-asr-flash-filetrans): ``input.file_urls`` (a list),
  answered with ``output.results[]`` (one per file, each with its ``subtask_status``) and ``usage.duration``;
  result files carry ``properties`` and ``transcripts[].sentences[]`` (``sentence_id`` from 1).
* ``Endpoint.FILE_ASR_URL`` (qwen3-asr-flash-filetrans, the Qwen-ASR API): ``input.file_url`` (one string),
  answered with ``output.result.transcription_url`` and ``usage.seconds``; a file that cannot be fetched fails the
  whole task (``output.code`` / ``output.message``); result files carry ``audio_info`` and sentences numbered
  from 0, with ``words`` only when ``parameters.enable_words`` is true.

Any other model is refused at submission as DashScope refuses an unknown model (404 ``ModelNotFound``), and the
wrong input key for the model's family is a 400 ``InvalidParameter``.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import msgspec

from .asgi import BodyTooLarge, HttpRequest, bearer_key
from .audio import duration_of, sniff_format
from .errors import find_family, native_body
from .faults import Endpoint, Fault
from .models import Endpoint as ModelEndpoint
from .models import serves
from .records import FileAsrTaskRecord
from .state import SimulatorState
from .transcripts import plan_transcript

__all__ = ["FileTask", "handle_cancel", "handle_poll", "handle_result", "handle_submit"]


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class FileTask:
    """A submitted transcription task and, once complete, its results."""

    record: FileAsrTaskRecord
    submit_time: str
    fail_with: Fault | None = None
    scheduled_time: str = ""
    end_time: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any] | None] = field(default_factory=list)
    duration: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    diarization: bool = False
    #: the Qwen-ASR shapes (``input.file_url``, ``output.result``, ``audio_info``)
    single: bool = False
    words: bool = True
    #: the whole task's failure (code, message) when its one file could not be fetched (Qwen-ASR)
    failure: tuple[str, str] | None = None


class _Refused(Exception):
    def __init__(self, status: int, code: str | None = None, message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers: dict[str, str] = {}


async def _guard(
    state: SimulatorState, req: HttpRequest, endpoint: Endpoint, call: str, *, auth: bool = True
) -> None:
    """The delay fault, the key check and an injected error, in DashScope's order."""
    delay = state.faults.take(endpoint, frozenset({"delay"}), call).get("delay")
    if delay is not None:
        await asyncio.sleep(delay.seconds or 0.0)
    if auth and not state.config.key_ok(bearer_key(req.headers)):
        raise _Refused(401)
    injected = state.faults.take(endpoint, frozenset({"http_error"}), call).get("http_error")
    if injected is not None:
        refused = _Refused(injected.status, injected.code, injected.message)
        if injected.retry_after is not None:
            refused.headers["retry-after"] = f"{injected.retry_after:g}"
        raise refused


async def _serve(
    state: SimulatorState, req: HttpRequest, kind: str, handler: Any, *args: Any
) -> None:
    conn = state.log.open(kind, req.path, req.headers)
    request_id = str(uuid.uuid4())
    why, status = "error", 500
    try:
        status, body = await handler(state, req, request_id, *args)
        why = "complete"
    except _Refused as refused:
        family = find_family(refused.status, refused.code)
        status = refused.status
        body = native_body(family, request_id, message=refused.message)
        why = "rejected"
        await req.respond_json(status, body, refused.headers)
        return
    except asyncio.CancelledError:
        why = "shutdown"
        raise
    finally:
        state.log.close(conn, why, status=status)
    await req.respond_json(status, body)


# ---------------------------------------------------------------------- submit


async def handle_submit(state: SimulatorState, req: HttpRequest) -> None:
    """``POST /api/v1/services/audio/asr/transcription``."""
    await _serve(state, req, "file_asr", _submit)


async def _submit(
    state: SimulatorState, req: HttpRequest, request_id: str
) -> tuple[int, dict[str, Any]]:
    await _guard(state, req, "file_asr", request_id)
    if req.headers.get("x-dashscope-async", "").strip().lower() != "enable":
        raise _Refused(403, "AccessDenied", "current user api does not support synchronous calls.")
    try:
        body = msgspec.json.decode(await req.body(state.config.max_body_bytes))
    except BodyTooLarge:
        raise _Refused(413, "InvalidParameter", "Request body too large.") from None
    except msgspec.DecodeError:
        raise _Refused(400, "InvalidParameter", "Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _Refused(400, "InvalidParameter", "Request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refused(400, "InvalidParameter", "Missing required parameter 'model'!")
    single = serves(ModelEndpoint.FILE_ASR_URL, model)
    if not single and not serves(ModelEndpoint.FILE_ASR_URLS, model):
        # A streaming model (paraformer-realtime-v2) or an unknown name. [U] the message's wording.
        raise _Refused(404, "ModelNotFound", f"Model not found ({model})!")
    source = body.get("input")
    if single:
        url = source.get("file_url") if isinstance(source, dict) else None
        if not isinstance(url, str) or not url:
            # [U] wording, by analogy with the documented "input must contain file_urls".
            raise _Refused(400, "InvalidParameter", "input must contain file_url")
        urls: Any = [url]
    else:
        urls = source.get("file_urls") if isinstance(source, dict) else None
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise _Refused(400, "InvalidParameter", "input must contain file_urls")
    task_id = str(uuid.uuid4())
    faults = state.faults.take("file_asr", frozenset({"task_failed"}), task_id)
    record = FileAsrTaskRecord(task_id, body, list(urls))
    state.log.file_asr_tasks.append(record)
    params = body.get("parameters")
    state.file_tasks[task_id] = FileTask(
        record,
        _now(),
        fail_with=faults.get("task_failed"),
        diarization=isinstance(params, dict) and params.get("diarization_enabled") is True,
        single=single,
        words=not single or (isinstance(params, dict) and params.get("enable_words") is True),
    )
    state.log.touch()
    return 200, {"request_id": request_id, "output": {"task_id": task_id, "task_status": "PENDING"}}


# ---------------------------------------------------------------------- poll


async def _known_task(
    state: SimulatorState, req: HttpRequest, request_id: str, task_id: str
) -> FileTask:
    """The task ``task_id`` of a ``/tasks`` request, once the request passed the guard.

    Raises:
        _Refused: the guard refused the request, or there is no such task (404).
    """
    await _guard(state, req, "tasks", request_id)
    task: FileTask | None = state.file_tasks.get(task_id)
    if task is None:
        # [U] DashScope's answer for an unknown task id is undocumented.
        raise _Refused(404, "NotFound", f"Task {task_id} does not exist.")
    return task


async def handle_poll(state: SimulatorState, req: HttpRequest, task_id: str) -> None:
    """``GET /api/v1/tasks/<id>``."""
    await _serve(state, req, "tasks", _poll, task_id)


async def _poll(
    state: SimulatorState, req: HttpRequest, request_id: str, task_id: str
) -> tuple[int, dict[str, Any]]:
    task = await _known_task(state, req, request_id, task_id)
    cfg = state.config
    record = task.record
    record.polls += 1
    if record.status in ("PENDING", "RUNNING"):
        if record.polls <= cfg.file_asr_pending_polls:
            record.status = "PENDING"
        elif record.polls <= cfg.file_asr_pending_polls + cfg.file_asr_running_polls:
            record.status = "RUNNING"
            task.scheduled_time = task.scheduled_time or _now()
        else:
            async with task.lock:
                if record.status in ("PENDING", "RUNNING"):
                    await _complete(state, task)
    state.log.touch()
    return 200, _status_body(task, request_id)


def _status_body(task: FileTask, request_id: str) -> dict[str, Any]:
    record = task.record
    total = len(record.file_urls)
    output: dict[str, Any] = {
        "task_id": record.task_id,
        "task_status": record.status,
        "submit_time": task.submit_time,
    }
    if record.status == "PENDING":
        return {"request_id": request_id, "output": output, "usage": None}
    output["scheduled_time"] = task.scheduled_time
    if record.status == "RUNNING":
        if not task.single:
            output["task_metrics"] = {"TOTAL": total, "SUCCEEDED": 0, "FAILED": 0}
        return {"request_id": request_id, "output": output, "usage": None}
    output["end_time"] = task.end_time
    if record.status == "FAILED":
        if task.fail_with is not None:
            output["code"] = task.fail_with.code or "InternalError"
            output["message"] = task.fail_with.message or "Internal server error!"
        elif task.failure is not None:
            output["code"], output["message"] = task.failure
        return {"request_id": request_id, "output": output, "usage": None}
    if record.status == "CANCELED":
        return {"request_id": request_id, "output": output, "usage": None}
    if task.single:
        # The Qwen-ASR answer: one result object, billed in seconds (query-result page's example) [H].
        (result,) = task.results
        output["result"] = {"transcription_url": result["transcription_url"]}
        return {
            "request_id": request_id,
            "output": output,
            "usage": {"seconds": math.ceil(task.duration)},
        }
    ok = sum(1 for r in task.results if r["subtask_status"] == "SUCCEEDED")
    output["results"] = task.results
    output["task_metrics"] = {"TOTAL": total, "SUCCEEDED": ok, "FAILED": total - ok}
    return {
        "request_id": request_id,
        "output": output,
        "usage": {"duration": math.ceil(task.duration)},
    }


async def _complete(state: SimulatorState, task: FileTask) -> None:
    record = task.record
    task.scheduled_time = task.scheduled_time or _now()
    if task.fail_with is not None:
        record.status = "FAILED"
        task.end_time = _now()
        return
    timeout = httpx.Timeout(state.config.file_fetch_timeout)
    downloads: list[bytes | None] = [None] * len(record.file_urls)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:

        async def fetch(i: int, url: str) -> None:
            try:
                response = await client.get(url)
            except (httpx.HTTPError, ValueError):
                return
            if response.status_code == 200:
                downloads[i] = response.content

        async with asyncio.TaskGroup() as tg:
            for i, url in enumerate(record.file_urls):
                tg.create_task(fetch(i, url))
    expires = int(time.time()) + 86400
    for i, (url, data) in enumerate(zip(record.file_urls, downloads, strict=True)):
        record.downloads.append((url, None if data is None else len(data)))
        if data is None:
            record.transcripts.append(None)
            task.files.append(None)
            if task.single:
                # [T] a Qwen-ASR file that cannot be fetched fails the task (FILE_403_FORBIDDEN seen); [U] code.
                task.failure = ("FILE_DOWNLOAD_FAILED", "The audio file cannot be downloaded.")
                continue
            task.results.append(
                {
                    "file_url": url,
                    "code": "InvalidFile.DownloadFailed",
                    "message": "The audio file cannot be downloaded.",
                    "subtask_status": "FAILED",
                }
            )
            continue
        text = state.registry.lookup(data)
        if text is None:
            text = state.config.asr_default_text
        record.transcripts.append(text)
        if task.single:
            result, seconds = _qwen_result_file(url, data, text, words=task.words)
        else:
            result, seconds = _result_file(url, data, text, task.diarization)
        task.duration += seconds
        task.files.append(result)
        task.results.append(
            {
                "file_url": url,
                "transcription_url": f"{state.base_url}/simulator/results/{record.task_id}/{i}.json"
                f"?Expires={expires}&OSSAccessKeyId=simulator&Signature=simulator",
                "subtask_status": "SUCCEEDED",
            }
        )
    record.status = "FAILED" if task.failure is not None else "SUCCEEDED"
    task.end_time = _now()


def _probe(data: bytes) -> tuple[str, int, float]:
    """The container, sample rate and duration of ``data`` (rate 16 kHz unless a WAV header says otherwise)."""
    fmt = sniff_format(data)
    rate = 16000
    if fmt == "wav" and len(data) >= 28:
        rate = int.from_bytes(data[24:28], "little") or rate
    return fmt, rate, duration_of(data, fmt, rate)


_CJK = re.compile(r"[\u3400-\u9fff]")


def _qwen_result_file(
    url: str, data: bytes, text: str, *, words: bool
) -> tuple[dict[str, Any], float]:
    """The result file of a Qwen-ASR task: ``audio_info``, sentences from 0, ``language``/``emotion``."""
    fmt, rate, seconds = _probe(data)
    sentences = plan_transcript(text, duration=seconds or None)
    language = "zh" if _CJK.search(text) else "en"
    sentence_json = []
    for s in sentences:
        item: dict[str, Any] = {
            "sentence_id": s.id - 1,
            "begin_time": round(s.begin * 1000),
            "end_time": round(s.end * 1000),
            "text": s.text,
            "language": language,
            "emotion": "neutral",
        }
        if words:
            item["words"] = [w.as_json() for w in s.words]
        sentence_json.append(item)
    result = {
        "file_url": url,
        "audio_info": {"format": fmt, "sample_rate": rate},
        "transcripts": [
            {
                "channel_id": 0,
                "text": text.strip() if sentences else "",
                "sentences": sentence_json,
            }
        ],
    }
    return result, seconds


def _result_file(
    url: str, data: bytes, text: str, diarization: bool
) -> tuple[dict[str, Any], float]:
    fmt, rate, seconds = _probe(data)
    sentences = plan_transcript(text, duration=seconds or None)
    sentence_json = []
    for s in sentences:
        item: dict[str, Any] = {
            "begin_time": round(s.begin * 1000),
            "end_time": round(s.end * 1000),
            "text": s.text,
            "sentence_id": s.id,
            "words": [w.as_json() for w in s.words],
        }
        if diarization:
            item["speaker_id"] = 0
        sentence_json.append(item)
    content_ms = round((sentences[-1].end - sentences[0].begin) * 1000) if sentences else 0
    result = {
        "file_url": url,
        "properties": {
            "audio_format": "pcm_s16le" if fmt in ("wav", "pcm") else fmt,
            "channels": [0],
            "original_sampling_rate": rate,
            "original_duration_in_milliseconds": round(seconds * 1000),
        },
        "transcripts": [
            {
                "channel_id": 0,
                "content_duration_in_milliseconds": content_ms,
                "text": text.strip() if sentences else "",
                "sentences": sentence_json,
            }
        ],
    }
    return result, seconds


# ---------------------------------------------------------------------- result file & cancel


async def handle_result(state: SimulatorState, req: HttpRequest, task_id: str, index: int) -> None:
    """``GET`` a ``transcription_url`` (a pre-signed URL: no API key)."""
    await _serve(state, req, "result", _result, task_id, index)


async def _result(
    state: SimulatorState, req: HttpRequest, request_id: str, task_id: str, index: int
) -> tuple[int, dict[str, Any]]:
    await _guard(state, req, "result", request_id, auth=False)
    task = state.file_tasks.get(task_id)
    if task is None or not 0 <= index < len(task.files) or task.files[index] is None:
        raise _Refused(404, "NotFound", "The specified key does not exist.")
    result = task.files[index]
    assert result is not None
    return 200, result


async def handle_cancel(state: SimulatorState, req: HttpRequest, task_id: str) -> None:
    """``POST /api/v1/tasks/<id>/cancel``: only a PENDING task can be canceled."""
    await _serve(state, req, "tasks", _cancel, task_id)


async def _cancel(
    state: SimulatorState, req: HttpRequest, request_id: str, task_id: str
) -> tuple[int, dict[str, Any]]:
    task = await _known_task(state, req, request_id, task_id)
    if task.record.status != "PENDING":
        raise _Refused(
            400,
            "UnsupportedOperation",
            "Failed to cancel the task, please confirm if the task is in PENDING status.",
        )
    task.record.status = "CANCELED"
    task.end_time = _now()
    state.log.touch()
    return 200, {"request_id": request_id}

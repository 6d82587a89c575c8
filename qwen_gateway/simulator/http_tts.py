"""``POST /api/v1/services/aigc/multimodal-generation/generation``: HTTP speech synthesis (``qwen3-tts-flash``,
``qwen-tts``; :data:`~.models.MODELS` ``[Endpoint.HTTP_TTS]``), ``dashscope-protocols.md`` §3.6 and §10.

The body is ``{"model", "input": {"text", "voice", ["language_type"]}, ["parameters"]}``. Without
``X-DashScope-SSE: enable`` the answer is one JSON object whose ``output.audio.url`` names a WAV file (served by the
simulator at ``/simulator/audio/<id>.wav``); with it, a ``text/event-stream`` of native DashScope SSE events::

    id:1
    event:result
    :HTTP_STATUS/200
    data:{"output":{"finish_reason":"null","audio":{"data":"<base64 PCM16LE 24 kHz>","expires_at":..,"id":..}},
          "usage":{...},"request_id":".."}

then a last event with ``finish_reason`` ``"stop"``, empty ``data`` and the ``url`` (shapes from a captured
``qwen-tts`` stream [T]). A failure inside the stream is an ``event:error`` event with the native ``code`` and
``message``. ``qwen-tts`` bills tokens (audio: 50 a second), ``qwen3-tts-flash`` characters.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import msgspec

from .asgi import BodyTooLarge, HttpRequest, bearer_key, dumps
from .audio import synthesize, wav_header
from .corpus import count_tokens
from .errors import ERROR_FAMILIES, find_family, native_body
from .faults import Fault
from .models import TTS_RATES, Endpoint, base_name, serves
from .records import HttpTtsRecord
from .state import SimulatorState
from .wsconn import Pacer

__all__ = ["handle_http_tts", "handle_tts_audio"]

_STREAM_FAULTS = frozenset({"stall", "drop", "stream_error", "malformed", "slow_audio"})
_LANGUAGES = frozenset(
    {
        "Auto",
        "Chinese",
        "English",
        "German",
        "Italian",
        "Portuguese",
        "Spanish",
        "Japanese",
        "Korean",
        "French",
        "Russian",
    }
)
_FORMATS = frozenset({"pcm", "wav"})
#: Non-streamed answers whose WAV stays downloadable (the oldest go first).
_KEPT_AUDIO = 32
#: How long ``output.audio.url`` is said to stay valid (DashScope: 24 hours).
_URL_SECONDS = 24 * 3600


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def handle_http_tts(state: SimulatorState, req: HttpRequest) -> None:
    """Serve one HTTP synthesis request."""
    log = state.log
    conn = log.open("http_tts", req.path, req.headers)
    rec = HttpTtsRecord(str(uuid.uuid4()), conn, req.headers, b"")
    log.http_tts_requests.append(rec)
    reason = "error"
    try:
        try:
            rec.raw = await req.body(state.config.max_body_bytes)
        except BodyTooLarge:
            await _refuse(req, rec, _Refused(413, "InvalidParameter", "Request body too large."))
            reason = "rejected"
            return
        call = _HttpTtsCall(state, req, rec)
        outcome = await req.unless_disconnected(call.run())
        # None: the client went away
        reason = outcome if outcome is not None else ("complete" if rec.completed else "client")
    except asyncio.CancelledError:
        reason = "shutdown"
        raise
    finally:
        log.close(conn, reason, status=rec.status)


async def handle_tts_audio(state: SimulatorState, req: HttpRequest, audio_id: str) -> None:
    """``GET /simulator/audio/<id>.wav``: the file a non-streamed synthesis named in ``output.audio.url``."""
    wav = state.tts_audio.get(audio_id)
    if wav is None:
        body = native_body(
            find_family(404, "NotFound"), str(uuid.uuid4()), message="No such audio."
        )
        await req.respond_json(404, body)
        return
    await req.respond(200, wav, "audio/wav")


async def _refuse(req: HttpRequest, rec: HttpTtsRecord, err: _Refused) -> None:
    family = find_family(err.status, err.code)
    rec.status = err.status
    rec.error_code = family.native_code
    body = native_body(family, rec.request_id, message=err.message)
    await req.respond_json(err.status, body, {"x-request-id": rec.request_id})


class _HttpTtsCall:
    def __init__(self, state: SimulatorState, req: HttpRequest, rec: HttpTtsRecord) -> None:
        self.state = state
        self.cfg = state.config
        self.req = req
        self.rec = rec

    async def run(self) -> str:
        state, req, rec = self.state, self.req, self.rec
        call = rec.request_id
        delay = state.faults.take("http_tts", frozenset({"delay"}), call).get("delay")
        if delay is not None:
            await asyncio.sleep(delay.seconds or 0.0)
        if not self.cfg.key_ok(bearer_key(req.headers)):
            family = find_family(401)
            await _refuse(req, rec, _Refused(401, family.native_code, family.native_message))
            return "rejected"
        injected = state.faults.take("http_tts", frozenset({"http_error"}), call).get("http_error")
        if injected is not None:
            family = find_family(injected.status, injected.code)
            await _refuse(
                req,
                rec,
                _Refused(
                    injected.status, family.native_code, injected.message or family.native_message
                ),
            )
            return "rejected"
        try:
            model, text = self._validate()
        except _Refused as err:
            await _refuse(req, rec, err)
            return "rejected"
        rec.text = text
        rec.stream = req.headers.get("x-dashscope-sse", "").lower() == "enable"
        pcm = synthesize(text, 24000)
        usage = self._usage(model, text, pcm)
        audio_id = f"audio_{rec.request_id}"
        expires_at = int(time.time()) + _URL_SECONDS
        url = self._keep(audio_id, pcm)
        if not rec.stream:
            rec.status = 200
            rec.audio_bytes = len(pcm)
            rec.completed = True
            audio = {"url": url, "expires_at": expires_at, "id": audio_id, "data": ""}
            await req.respond_json(
                200,
                {
                    "output": {"finish_reason": "stop", "audio": audio},
                    "usage": usage,
                    "request_id": rec.request_id,
                },
                {"x-request-id": rec.request_id},
            )
            return "complete"
        faults = state.faults.take("http_tts", _STREAM_FAULTS, call)
        return await self._stream(pcm, usage, audio_id, expires_at, url, faults)

    def _validate(self) -> tuple[str, str]:
        """(model, text) of a well-formed request, else :class:`_Refused` as DashScope answers."""
        try:
            body = msgspec.json.decode(self.rec.raw)
        except msgspec.DecodeError:
            raise _Refused(400, "InvalidParameter", "Request body is not valid JSON.") from None
        self.rec.body = body
        if not isinstance(body, dict):
            raise _Refused(400, "InvalidParameter", "Request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Refused(400, "InvalidParameter", "Missing required parameter 'model'.")
        if not serves(Endpoint.HTTP_TTS, model):
            raise _Refused(
                404,
                "ModelNotFound",
                f"The model {model} does not exist or you do not have access to it.",
            )
        source = body.get("input")
        if not isinstance(source, dict):
            raise _Refused(400, "InvalidParameter", "Missing required parameter 'input'.")
        text = source.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _Refused(400, "InvalidParameter", "Input text can not be empty.")
        voice = source.get("voice", "Cherry")
        if not isinstance(voice, str) or not voice:
            raise _Refused(
                400, "InvalidParameter", f"The requested voice {voice!r} is not supported."
            )
        language = source.get("language_type")
        if language is not None and language not in _LANGUAGES:
            raise _Refused(400, "InvalidParameter", f"Invalid language_type: {language!r}.")
        params = body.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _Refused(400, "InvalidParameter", "'parameters' must be an object.")
        options = {**(params or {}), **source}
        fmt = options.get("format")
        if fmt is not None and fmt not in _FORMATS:
            raise _Refused(400, "InvalidParameter", f"Unsupported format: {fmt!r}.")
        rate = options.get("sample_rate")
        if rate is not None and rate not in TTS_RATES[base_name(model)]:
            raise _Refused(400, "InvalidParameter", f"Unsupported sample_rate: {rate!r}.")
        return model, text

    def _usage(self, model: str, text: str, pcm: bytes) -> dict[str, Any]:
        if base_name(model) == "qwen-tts":
            seconds = len(pcm) / (2 * 24000)
            input_tokens = count_tokens(text)
            output_tokens = max(50, round(seconds * 50))
            return {
                "total_tokens": input_tokens + output_tokens,
                "input_tokens_details": {"text_tokens": input_tokens},
                "output_tokens": output_tokens,
                "input_tokens": input_tokens,
                "output_tokens_details": {"audio_tokens": output_tokens, "text_tokens": 0},
            }
        return {"characters": len(text)}

    def _keep(self, audio_id: str, pcm: bytes) -> str:
        kept = self.state.tts_audio
        kept[audio_id] = wav_header(24000, len(pcm)) + pcm
        while len(kept) > _KEPT_AUDIO:
            del kept[next(iter(kept))]
        return f"{self.state.base_url}/simulator/audio/{audio_id}.wav"

    async def _stream(
        self,
        pcm: bytes,
        usage: dict[str, Any],
        audio_id: str,
        expires_at: int,
        url: str,
        faults: dict[str, Fault],
    ) -> str:
        req, rec, cfg = self.req, self.rec, self.cfg
        await req.start(
            200,
            "text/event-stream;charset=UTF-8",
            {"cache-control": "no-cache", "x-request-id": rec.request_id},
        )
        rec.status = 200
        slow = faults.get("slow_audio")
        pacer = Pacer(
            realtime_factor=slow.factor if slow is not None else cfg.tts_realtime_factor,
            first_delay=cfg.tts_first_audio_delay,
        )
        step = max(2, 24000 * cfg.tts_chunk_ms // 1000 * 2)
        for start in range(0, len(pcm), step):
            piece = pcm[start : start + step]
            outcome = await self._fault(faults, rec.events_sent)
            if outcome is not None:
                return outcome
            await pacer.wait(len(piece) / 48000)
            audio = {
                "data": base64.b64encode(piece).decode("ascii"),
                "expires_at": expires_at,
                "id": audio_id,
            }
            await self._event("result", 200, {"finish_reason": "null", "audio": audio}, usage)
            rec.audio_bytes += len(piece)
        outcome = await self._fault(faults, rec.events_sent)
        if outcome is not None:
            return outcome
        audio = {"expires_at": expires_at, "id": audio_id, "data": "", "url": url}
        await self._event("result", 200, {"finish_reason": "stop", "audio": audio}, usage)
        rec.completed = True
        await req.write(b"", more=False)
        return "complete"

    async def _event(
        self, name: str, status: int, output: dict[str, Any], usage: dict[str, Any]
    ) -> None:
        body = {"output": output, "usage": usage, "request_id": self.rec.request_id}
        await self._write(name, status, body)

    async def _write(self, name: str, status: int, body: dict[str, Any]) -> None:
        self.rec.events_sent += 1
        head = f"id:{self.rec.events_sent}\nevent:{name}\n:HTTP_STATUS/{status}\ndata:".encode()
        await self.req.write(head + dumps(body) + b"\n\n")
        self.state.log.touch()

    async def _fault(self, faults: dict[str, Fault], position: int) -> str | None:
        """Play the faults set at event ``position``; the close reason when one ended the stream."""
        req, rec = self.req, self.rec
        malformed = faults.get("malformed")
        if malformed is not None and malformed.after == position:
            bad = malformed.payload or 'data:{"output":{"finish_reason":"null","audio":{"data":"AAA'
            await req.write(bad.encode() + b"\n\n")
        stall = faults.get("stall")
        if stall is not None and stall.after == position:
            if stall.seconds is None:
                await asyncio.Event().wait()
            await asyncio.sleep(stall.seconds or 0.0)
        error = faults.get("stream_error")
        if error is not None and error.after == position:
            family = next(
                (f for f in ERROR_FAMILIES if error.code in (f.native_code, f.compat_code)),
                find_family(500, error.code),
            )
            rec.error_code = family.native_code
            body = native_body(family, rec.request_id, message=error.message)
            await self._write("error", family.status, body)
            await req.write(b"", more=False)
            return "failed"
        drop = faults.get("drop")
        if drop is not None and drop.after == position:
            return "dropped"
        return None

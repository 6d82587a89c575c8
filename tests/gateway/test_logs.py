"""Logs for people and for machines: ``QG_LOG_FORMAT`` (JSON lines or one readable line), secrets masked in both,
and the upstream's request id on the lines about upstream calls."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwen_gateway.logs import bind, configure, json_lines_for
from qwen_gateway.simulator.faults import Fault
from tests.api.conftest import GATEWAY_KEY, start_gateway
from tests.voice_ws.conftest import client, gateway, packets, wav_bytes

SECRET = "sk-SECRETlogformat1234"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_json_unless_on_a_terminal() -> None:
    assert json_lines_for("auto", io.StringIO()) is True
    assert json_lines_for("auto", _Tty()) is False
    assert json_lines_for("json", _Tty()) is True
    assert json_lines_for("text", io.StringIO()) is False


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def _emit_sample() -> None:
    token = bind(request_id="req-1", session_id="s 1")
    try:
        logging.getLogger("qwen_gateway.test").warning(
            "key %s refused",
            SECRET,
            extra={"fields": {"turn_id": 3, "note": f"with {SECRET} inside", "ok": True}},
        )
    finally:
        from qwen_gateway.logs import _ids

        _ids.reset(token)


@pytest.mark.parametrize("json_lines", [True, False])
def test_both_formats_carry_ids_and_fields_and_mask_secrets(
    json_lines: bool, restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", json_lines=json_lines, secrets=[SECRET])
    _emit_sample()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "qwen_gateway.test" in line]
    assert len(lines) == 1, err
    (line,) = lines
    assert SECRET not in err and "***" in line
    if json_lines:
        record = json.loads(line)
        assert record["level"] == "warning" and record["request_id"] == "req-1"
        assert record["session_id"] == "s 1" and record["turn_id"] == 3 and record["ok"] is True
    else:
        assert not line.startswith("{")
        assert "WARNING" in line and "qwen_gateway.test: key *** refused" in line
        assert "request_id=req-1" in line and 'session_id="s 1"' in line
        assert "turn_id=3" in line and "ok=true" in line and 'note="with *** inside"' in line


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


async def test_chat_retries_and_failure_carry_the_upstream_request_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async for gw in start_gateway(tmp_path, upstream_retries=1):
        gw.sim.faults.add(Fault.http_error(503, code="ServiceUnavailable", times=None))
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(
                f"{gw.api_base}/chat/completions",
                headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                json={"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert resp.status_code >= 500
        ids = [r.request_id for r in gw.sim.log.chat_requests]
    upstream = [r for r in caplog.records if "upstream_request_id" in _fields(r)]
    retry = [r for r in upstream if "retry" in r.getMessage()]
    failed = [r for r in upstream if r.getMessage() == "upstream error"]
    assert len(ids) == 2 and len(retry) == 1 and len(failed) == 1
    assert _fields(retry[0])["upstream_request_id"] == ids[0]
    assert _fields(failed[0])["upstream_request_id"] == ids[1]
    assert _fields(failed[0])["upstream"] == "chat"


async def test_voice_upstream_lines_carry_the_upstream_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway(tmp_path) as gw:
        audio = wav_bytes(1.0)
        gw.sim.register_transcript(audio, "你好")
        gw.sim.set_reply("你好。")
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(audio))
            await c.until("audio_complete")
    provider_lines = [r for r in caplog.records if r.name.startswith("qwen_gateway.providers")]
    assert provider_lines
    for record in provider_lines:
        assert _fields(record).get("upstream_request_id"), record.getMessage()
    upstreams = {_fields(r)["upstream"] for r in provider_lines}
    assert {"asr", "tts"} <= upstreams

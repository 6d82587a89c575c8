"""No secret anywhere it can leak: a whole session (chat calls, voice turns, a refused key) with known secret values
configured (DashScope key, gateway key, owner secret, database password, OSS keys), logged at DEBUG; no log line and
no repr of the settings or of any service reachable from them shows one."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncmy
import httpx
import pytest

from qwen_gateway.config import Settings
from qwen_gateway.logs import JsonFormatter, configure
from qwen_gateway.simulator import SimulatorConfig
from qwen_gateway.voice.runner import handshake
from tests.fakes.oss import FakeOss
from tests.storage.conftest import MariaDB, mariadb  # noqa: F401  (the fixture)

from .conftest import client, gateway, packets, png_bytes, wav_bytes

UPSTREAM = "sk-SECRETupstream7f3a9c2e11"
GATEWAY = "gk-SECRETgateway51d2e8aa"
OWNER_SECRET = "ownerSECRET-" + "9" * 32
DB_PASSWORD = "dbSECRETpass-93kqZ"
OSS_AK = "LTAI5tSECRETakid77qq"
OSS_SK = "ossSECRETsk-x8Qz1mmN"
BUCKET = "qg-leak-bucket"
SECRETS = (UPSTREAM, GATEWAY, OWNER_SECRET, DB_PASSWORD, OSS_AK, OSS_SK)


_CLIENT_LOG = "tests.voice_ws.leak_client"


class _Collect(logging.Handler):
    """Every record, formatted as the gateway writes it (JSON with fields and tracebacks) and raw."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_CLIENT_LOG):
            return  # the test's own WebSocket client (it sends the key, and logs its request at DEBUG)
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))
        self.lines.append(repr(getattr(record, "fields", None)))


@pytest.fixture
def debug_logs() -> Iterator[_Collect]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure("DEBUG")  # what `qwen-gateway serve` does with QG_LOG_LEVEL=DEBUG
    collect = _Collect()
    root.addHandler(collect)
    try:
        yield collect
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)


@pytest.fixture
async def db_user(mariadb: MariaDB) -> Any:  # noqa: F811
    """A MariaDB user with a password, allowed one fresh database; dropped afterwards."""
    user = f"qg_leak_{secrets.token_hex(3)}"
    database = mariadb.new_database_name()
    conn = await asyncmy.connect(
        host=mariadb.host,
        port=mariadb.port,
        user=mariadb.user,
        password=mariadb.password,
        autocommit=True,
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{DB_PASSWORD}'")
            await cur.execute(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%'")
        yield {
            "db_host": mariadb.host,
            "db_port": mariadb.port,
            "db_user": user,
            "db_name": database,
        }
        async with conn.cursor() as cur:
            await cur.execute(f"DROP USER '{user}'@'%'")
    finally:
        conn.close()


def _safe_repr(obj: object) -> str | None:
    try:
        return repr(obj)
    except Exception:  # a half-closed object may refuse: nothing shown, nothing leaked
        return None


def _reprs(root: object, limit: int = 4000) -> Iterator[tuple[str, str]]:
    """(path, repr) of every object reachable from ``root`` through attributes, slots and containers.

    Strings and bytes are where secrets legitimately live: they are walked past, not shown; everything else
    (settings, services, clients, stores, sessions, pools ...) must have a repr that hides them.
    """
    seen: set[int] = set()
    todo: list[tuple[str, object, int]] = [("root", root, 0)]
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    while todo and len(seen) < limit:
        path, obj, depth = todo.pop()
        if id(obj) in seen or isinstance(obj, skip) or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, str | bytes | bytearray | int | float | bool):
            continue
        if depth > 6:
            continue
        children: list[tuple[str, object]] = []
        if isinstance(obj, dict):
            children = [(f"{path}[{k!r}]", v) for k, v in obj.items() if not isinstance(k, bytes)]
        elif isinstance(obj, list | tuple | set | frozenset):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
        else:
            text = _safe_repr(obj)
            if text is not None:
                yield path, text
            names = list(getattr(obj, "__dict__", {}) or {})
            for cls in type(obj).__mro__:
                names += [s for s in getattr(cls, "__slots__", ()) if isinstance(s, str)]
            for name in names:
                with contextlib.suppress(AttributeError):
                    children.append((f"{path}.{name}", object.__getattribute__(obj, name)))
        todo.extend((p, v, depth + 1) for p, v in children)


def _assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a secret: {text[:300]}"


async def test_a_whole_session_at_debug_leaks_no_secret(
    tmp_path: Path, debug_logs: _Collect, db_user: dict[str, Any]
) -> None:
    with FakeOss({OSS_AK: OSS_SK}, buckets=[BUCKET], region="cn-beijing") as fake_oss:
        overrides: dict[str, Any] = {
            "qwen_api_key": UPSTREAM,
            "api_keys": (GATEWAY,),
            "owner_secret": OWNER_SECRET,
            "db_password": DB_PASSWORD,
            "oss_access_key_id": OSS_AK,
            "oss_access_key_secret": OSS_SK,
            "oss_bucket": BUCKET,
            "oss_endpoint": fake_oss.endpoint,
            "log_level": "DEBUG",
            **db_user,
        }
        async with gateway(tmp_path, SimulatorConfig(api_key=UPSTREAM), **overrides) as gw:
            assert gw.services.storage.history.engine == "mysql"
            assert gw.services.storage.objects.engine == "oss"
            gw.sim.set_reply("好的，我记住了。")
            auth = {"Authorization": f"Bearer {GATEWAY}"}
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http:
                body = {"messages": [{"role": "user", "content": "你好"}], "user": "conv-leak"}
                assert (await http.post("/v1/chat/completions", headers=auth, json=body)).is_success
                streamed = await http.post(
                    "/v1/chat/completions", headers=auth, json={**body, "stream": True}
                )
                assert streamed.is_success and "[DONE]" in streamed.text
                refused = await http.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {GATEWAY}x"},
                    json=body,
                )
                assert refused.status_code == 401
                assert (await http.get("/v1/models", headers=auth)).is_success
                assert (await http.get("/health")).status_code in (200, 503)

            # a voice turn with the key in the query string (browsers), one with the header, a VLM turn
            audio = wav_bytes(0.4, seed=11)
            gw.sim.register_transcript(audio, "今天天气怎么样")
            query = {"conversation_id": "conv-leak", "token": GATEWAY}
            async with client(
                gw, headers={}, query=query, logger=logging.getLogger(_CLIENT_LOG)
            ) as c:
                await c.recv()
                await c.send_all(packets(audio))
                await c.until("audio_complete")
                assert c.bodies("audio_complete")[0]["oss_uploaded"] is True
                assert c.bodies("chat_tts_complete")[0]["db_saved"] is True
            async with client(
                gw,
                "vlm",
                headers=auth,
                query={"conversation_id": "conv-leak"},
                logger=logging.getLogger(_CLIENT_LOG),
            ) as c:
                await c.recv()
                await c.send_all(
                    packets(png_bytes(), 50 * 1024, type="image")
                    + packets(audio, 20 * 1024, type="audio")
                )
                await c.ws.send(json.dumps({"type": "end"}))
                await c.until("vlm_complete")
            await gw.services.storage.outbox.drained()
            turns = await gw.services.storage.history.conversation(
                "conv-leak", owner=gw.services.keys.owner(GATEWAY)
            )
            assert [t.channel for t in turns] == ["chat", "chat", "audio", "vlm"]
            assert fake_oss.requests(), "the objects went to (fake) OSS"

            shown = 0
            for path, text in _reprs(gw.services):
                _assert_clean(f"repr of services{path[4:]}", text)
                shown += 1
            assert shown > 20  # the walk did reach the services
            _assert_clean("repr(settings)", repr(gw.settings))
            _assert_clean("str(settings)", str(gw.settings))
            _assert_clean("settings.redacted()", repr(gw.settings.redacted()))
            # a voice session of a pass-through caller holds the caller's key
            shake = handshake(
                f"Bearer {UPSTREAM}",
                {},
                dataclasses.replace(gw.settings, key_passthrough=True),
                owner_of=gw.services.keys.owner,
            )
            assert shake.info.api_key == UPSTREAM
            _assert_clean("repr(SessionInfo)", repr(shake.info))
            _assert_clean("repr(Handshake)", repr(shake))

    assert len(debug_logs.lines) > 100, "DEBUG logging was on"
    for line in debug_logs.lines:
        _assert_clean("a log line", line)


def test_settings_repr_names_the_secrets_but_not_their_values() -> None:
    settings = Settings(qwen_api_key=UPSTREAM, db_password=DB_PASSWORD, api_keys=(GATEWAY,))
    text = repr(settings)
    _assert_clean("repr(Settings)", text)
    assert "chat_model='qwen-plus'" in text
    # a subclass made by dataclasses (tests do this) keeps the secrets out too
    sub = dataclasses.make_dataclass("Sub", [("extra", int, 0)], bases=(Settings,), frozen=True)
    _assert_clean("repr(subclass)", repr(sub(qwen_api_key=UPSTREAM)))


def test_the_log_output_masks_every_configured_secret(
    debug_logs: _Collect, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a library might still log (a header, an error body) reaches the log output masked."""
    settings = Settings(
        qwen_api_key=UPSTREAM,
        api_keys=(GATEWAY, "gk-other-key"),
        owner_secret=OWNER_SECRET,
        db_password=DB_PASSWORD,
        oss_access_key_id=OSS_AK,
        oss_access_key_secret=OSS_SK,
    )
    assert set(settings.secret_values()) == {*SECRETS, "gk-other-key"}
    configure("DEBUG", secrets=settings.secret_values())
    noisy = logging.getLogger("some.library")
    noisy.debug("headers: %s", {"Authorization": f"Bearer {UPSTREAM}", "X-Key": OSS_AK})
    noisy.warning("login failed", extra={"fields": {"password": DB_PASSWORD}})
    # oss2 writes request headers at DEBUG: it is kept at INFO
    assert not logging.getLogger("oss2.http").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("hypercorn.access").isEnabledFor(logging.INFO)
    err = capsys.readouterr().err
    assert err.count("***") >= 3 and "headers:" in err and "login failed" in err
    _assert_clean("the log output", err)

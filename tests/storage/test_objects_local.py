"""The local object store: seed key layout, no way out of the folder, signed links, and its Quart route."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from quart import Quart

from qwen_gateway.config import Settings
from qwen_gateway.routes.objects import objects_blueprint
from qwen_gateway.storage import (
    InvalidObjectKey,
    LocalObjectStore,
    ObjectNotFound,
    OssObjectStore,
    SQLiteHistoryStore,
    build_storage,
    new_object_key,
)
from qwen_gateway.storage.history import LEGACY_OWNER
from qwen_gateway.storage.objects import load_signing_secret

SECRET = b"s" * 32
GATEWAY_KEY = "sk-gateway-test"

#: Keys a client might try: traversal, absolute paths, NUL, very long, wrong layout or extension.
HOSTILE_KEYS = [
    "../etc/passwd",
    "audio/../../etc/passwd",
    "audio/20240101/../../../etc/passwd",
    "audio/20240101/..",
    "/etc/passwd",
    "//etc/passwd",
    "audio/20240101/a\x00.mp3",
    "audio/20240101/a.mp3\x00.jpg",
    "audio/20240101/" + "a" * 300 + ".mp3",
    "a" * 5000,
    "audio\\20240101\\a.mp3",
    "audio/20240101/.hidden.mp3",
    "audio/20240101/a.exe",
    "audio/20240101/a.mp3/",
    "audio/2024010/a.mp3",
    "secrets/20240101/a.mp3",
    "audio/20240101/a b.mp3",
    "audio/20240101/%2e%2e.mp3",
    "",
    "audio/20240101/a.mp3\n",
    "audio/20240101/ä.mp3",
]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalObjectStore]:
    s = LocalObjectStore(tmp_path / "objects", "http://gw.example:5000", SECRET)
    yield s
    await s.aclose()


def test_keys_follow_the_seed_layout() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    key = new_object_key("audio", "session-7f3a_b", "mp3", now)
    assert re.fullmatch(
        r"audio/20240101/audio_session-7f3a_b_20240101_120000_[0-9a-f]{8}\.mp3", key
    )
    image = new_object_key("image", "s1", ".JPG", now)
    assert re.fullmatch(r"image/20240101/image_s1_20240101_120000_[0-9a-f]{8}\.jpg", image)
    assert new_object_key("audio", "s", "mp3", now) != new_object_key("audio", "s", "mp3", now)


def test_session_ids_cannot_smuggle_paths_into_keys() -> None:
    key = new_object_key("audio", "../../etc/passwd\x00" + "x" * 500, "mp3")
    assert ".." not in key and "\x00" not in key and key.count("/") == 2
    assert len(key) < 200
    assert new_object_key("audio", "", "mp3").split("/")[2].startswith("audio_anon_")
    with pytest.raises(ValueError):
        new_object_key("audio", "s", "exe")
    with pytest.raises(ValueError):
        new_object_key("secrets", "s", "mp3")  # type: ignore[arg-type]


async def test_put_get_exists_delete(store: LocalObjectStore) -> None:
    key = store.new_key("audio", "sess1", "mp3")
    data = os.urandom(50_000)
    stored = await store.put(key, data, "audio/mpeg")
    assert (stored.key, stored.size, stored.content_type) == (key, 50_000, "audio/mpeg")
    assert stored.url.startswith(f"http://gw.example:5000/objects/{key}?")
    assert await store.exists(key)
    assert await store.get(key) == data
    assert (store.root / key).read_bytes() == data
    replaced = os.urandom(10)
    await store.put(key, replaced, "audio/mpeg")
    assert await store.get(key) == replaced
    await store.delete(key)
    assert not await store.exists(key)
    await store.delete(key)  # already gone: fine
    with pytest.raises(ObjectNotFound):
        await store.get(key)
    assert not [p for p in store.root.rglob("*") if p.is_file()]  # no temp files left


@pytest.mark.parametrize("key", HOSTILE_KEYS)
async def test_hostile_keys_are_refused_everywhere(store: LocalObjectStore, key: str) -> None:
    with pytest.raises(InvalidObjectKey):
        await store.put(key, b"x", "audio/mpeg")
    with pytest.raises(InvalidObjectKey):
        await store.get(key)
    with pytest.raises(InvalidObjectKey):
        await store.exists(key)
    with pytest.raises(InvalidObjectKey):
        await store.delete(key)
    with pytest.raises(InvalidObjectKey):
        store.presigned_url(key, 60)
    assert not store.verify_token(key, str(int(time.time()) + 60), "x")


async def test_a_symlink_out_of_the_folder_is_not_followed(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "audio_x_20240101_120000_00000000.mp3").write_bytes(b"secret")
    (store.root / "audio").mkdir(parents=True)
    (store.root / "audio" / "20240101").symlink_to(outside)
    with pytest.raises(InvalidObjectKey):
        await store.get("audio/20240101/audio_x_20240101_120000_00000000.mp3")


def test_presigned_tokens_bind_key_and_expiry(store: LocalObjectStore) -> None:
    key = store.new_key("image", "s", "png")
    other = store.new_key("image", "s", "png")
    query = parse_qs(urlsplit(store.presigned_url(key, 60)).query)
    expires, token = query["expires"][0], query["token"][0]
    assert store.verify_token(key, expires, token)
    assert not store.verify_token(other, expires, token)
    assert not store.verify_token(key, str(int(expires) + 1), token)
    assert not store.verify_token(key, expires, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    assert not store.verify_token(key, expires, token, now=int(expires) + 1)
    assert not store.verify_token(key, None, token)
    assert not store.verify_token(key, "１２３", token)  # non-ASCII digits
    other_store = LocalObjectStore(store.root, "http://x", b"t" * 32)
    assert not other_store.verify_token(key, expires, token)


def test_the_signing_secret_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "object-signing.key"
    first = load_signing_secret(path)
    assert len(first) == 32 and load_signing_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------- the route
@pytest.fixture
def app(store: LocalObjectStore) -> Quart:
    app = Quart(__name__)
    app.register_blueprint(objects_blueprint(store, lambda key: key == GATEWAY_KEY))
    return app


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_route_serves_a_presigned_link(app: Quart, store: LocalObjectStore) -> None:
    key = store.new_key("audio", "s", "mp3")
    stored = await store.put(key, b"ID3 mp3 bytes", "audio/mpeg")
    response = await app.test_client().get(path_and_query(stored.url))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert await response.get_data() == b"ID3 mp3 bytes"
    head = await app.test_client().head(path_and_query(stored.url))
    assert head.status_code == 200


async def test_route_serves_a_gateway_key_holder(app: Quart, store: LocalObjectStore) -> None:
    key = store.new_key("image", "s", "jpg")
    await store.put(key, b"\xff\xd8jpeg", "image/jpeg")
    client = app.test_client()
    ok = await client.get(f"/objects/{key}", headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "image/jpeg"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": GATEWAY_KEY}):
        denied = await client.get(f"/objects/{key}", headers=headers)
        assert denied.status_code == 403
        body = await denied.get_json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == "invalid_api_key"


async def test_route_refuses_bad_and_expired_links(
    app: Quart, store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = store.new_key("audio", "s", "mp3")
    await store.put(key, b"x", "audio/mpeg")
    client = app.test_client()
    an_hour_ago = time.time() - 3600
    with monkeypatch.context() as m:  # a link made an hour ago, valid for a minute
        m.setattr("qwen_gateway.storage.objects.time", SimpleNamespace(time=lambda: an_hour_ago))
        expired_link = path_and_query(store.presigned_url(key, 60))
    bad = [
        expired_link,
        f"/objects/{key}?expires=9999999999&token=forged",
        f"/objects/{key}?token=abc",
        f"/objects/{key}?expires=9999999999",
    ]
    for path in bad:
        response = await client.get(path, headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
        assert response.status_code == 403, path
        assert (await response.get_json())["error"]["code"] == "invalid_token"


async def test_route_never_leaves_the_folder(
    app: Quart, store: LocalObjectStore, tmp_path: Path
) -> None:
    (tmp_path / "secret.mp3").write_bytes(b"top secret")
    client = app.test_client()
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    for path in [
        "/objects/../secret.mp3",
        "/objects/audio/20240101/../../../secret.mp3",
        "/objects/audio/20240101/%2e%2e/%2e%2e/%2e%2e/secret.mp3",
        "/objects/audio/20240101/a%00.mp3",
        "/objects/audio/20240101/" + "a" * 4000 + ".mp3",
        "/objects/audio/20240101/audio_s_20240101_120000_00000000.mp3",  # well-formed, not stored
    ]:
        response = await client.get(path, headers=auth)
        assert response.status_code == 404, path
        assert (await response.get_json())["error"]["code"] == "not_found"
        assert b"top secret" not in await response.get_data()


# ---------------------------------------------------------------------- build_storage
async def test_build_storage_embedded_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", public_url="https://gw.example")
    storage = build_storage(settings)
    assert isinstance(storage.history, SQLiteHistoryStore)
    assert isinstance(storage.objects, LocalObjectStore)
    async with storage:
        assert storage.status()["history"] == "sqlite"
        assert storage.status()["objects"] == "local"
        assert await storage.check() == {"history": True, "objects": True}
        key = storage.objects.new_key("audio", "s", "mp3")
        stored = await storage.objects.put(key, b"abc", "audio/mpeg")
        assert stored.url.startswith("https://gw.example/objects/audio/")
        from qwen_gateway.storage import TurnRecord

        record = TurnRecord.new(
            conversation_id="c", channel="audio", model="m", user_content="u", audio_key=key
        )
        await storage.outbox.submit(record)
        await storage.outbox.drained()
        assert storage.status()["journal_backlog"] == 0
        assert await storage.history.conversation("c", owner=LEGACY_OWNER) == [record]
    assert settings.sqlite_path.exists() and settings.journal_path.exists()
    assert (tmp_path / "data" / "objects" / key).read_bytes() == b"abc"


def test_build_storage_chooses_mysql_and_oss_from_the_seed_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        db_host="127.0.0.1",
        oss_bucket="my-bucket",
        oss_access_key_id="ak",
        oss_access_key_secret="sk",
        oss_region="cn-hangzhou",
    )
    storage = build_storage(settings)
    assert storage.history.engine == "mysql"
    assert isinstance(storage.objects, OssObjectStore)
    assert storage.objects.endpoint == "https://oss-cn-hangzhou.aliyuncs.com"

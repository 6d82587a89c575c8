"""OssObjectStore through oss2 against the fake OSS server, signatures checked: the client under test is oss2."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import oss2
import pytest

from qwen_gateway.storage import (
    InvalidObjectKey,
    ObjectAccessDenied,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreTimeout,
    ObjectStoreUnavailable,
    OssObjectStore,
)
from qwen_gateway.storage.oss import oss_endpoint
from tests.fakes.oss import FakeOss, crc64ecma
from tests.storage.conftest import OSS_AK, OSS_BUCKET, OSS_REGION, OSS_SK


def make_store(fake: FakeOss, **overrides: object) -> OssObjectStore:
    options: dict[str, object] = {
        "access_key_id": OSS_AK,
        "access_key_secret": OSS_SK,
        "bucket": OSS_BUCKET,
        "region": OSS_REGION,
        "endpoint": fake.endpoint,
        "pool_size": 4,
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "retries": 2,
        "retry_backoff": 0.01,
    }
    options.update(overrides)
    return OssObjectStore(**options)  # type: ignore[arg-type]


@pytest.fixture
async def store(fake_oss: FakeOss) -> AsyncIterator[OssObjectStore]:
    s = make_store(fake_oss)
    yield s
    await s.aclose()


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_round_trip_with_v4_signatures(store: OssObjectStore, fake_oss: FakeOss) -> None:
    key = store.new_key("audio", "sess-1", "mp3")
    data = os.urandom(200_000)
    stored = await store.put(key, data, "audio/mpeg")
    assert (stored.key, stored.size, stored.content_type) == (key, len(data), "audio/mpeg")
    blob = fake_oss.object(OSS_BUCKET, key)
    assert blob is not None and blob.data == data and blob.content_type == "audio/mpeg"
    assert stored.etag == blob.etag
    assert await store.exists(key)
    assert await store.get(key) == data  # oss2 checks the CRC-64 the fake sent
    await store.delete(key)
    assert not await store.exists(key)
    with pytest.raises(ObjectNotFound):
        await store.get(key)
    assert {entry.auth for entry in fake_oss.requests()} == {"v4"}


async def test_presigned_urls_work_for_plain_http_clients(
    store: OssObjectStore, fake_oss: FakeOss
) -> None:
    key = store.new_key("image", "s", "jpg")
    stored = await store.put(key, b"\xff\xd8\xff jpeg", "image/jpeg")
    assert "x-oss-signature-version=OSS4-HMAC-SHA256" in stored.url
    assert f"/{OSS_BUCKET}/{key}?" in stored.url  # '/' kept in the key: readable links
    async with httpx.AsyncClient() as client:
        response = await client.get(stored.url)
        assert response.status_code == 200
        assert response.content == b"\xff\xd8\xff jpeg"
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["server"] == "AliyunOSS"
        assert response.headers["x-oss-request-id"]

        other = store.new_key("image", "s", "jpg")
        await store.put(other, b"other", "image/jpeg")
        forged = stored.url.replace(key, other)  # same signature, another object
        longer = with_query(stored.url, **{"x-oss-expires": "999999"})
        for url in (forged, longer):
            denied = await client.get(url)
            assert denied.status_code == 403
            assert "<Code>SignatureDoesNotMatch</Code>" in denied.text
            assert denied.headers["content-type"] == "application/xml"

        fake_oss.clock_offset = 25 * 3600  # a day later: the link has expired
        expired = await client.get(stored.url)
        assert expired.status_code == 403 and "<Code>AccessDenied</Code>" in expired.text

        fake_oss.clock_offset = 0
        anonymous = await client.get(stored.url.split("?")[0])
        assert anonymous.status_code == 403 and "<Code>AccessDenied</Code>" in anonymous.text


async def test_a_wrong_secret_fails_as_in_production(fake_oss: FakeOss) -> None:
    raw = oss2.Bucket(
        oss2.AuthV4(OSS_AK, "not-the-secret"), fake_oss.endpoint, OSS_BUCKET, region=OSS_REGION
    )
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as info:
        raw.put_object("audio/20240101/x.mp3", b"x")
    assert info.value.status == 403 and info.value.request_id

    store = make_store(fake_oss, access_key_secret="not-the-secret")
    try:
        before = len(fake_oss.requests())
        with pytest.raises(ObjectAccessDenied) as denied:
            await store.put(store.new_key("audio", "s", "mp3"), b"x", "audio/mpeg")
        assert denied.value.code == "SignatureDoesNotMatch" and denied.value.status == 403
        assert not denied.value.transient
        assert len(fake_oss.requests()) == before + 1  # not retried
        assert "not-the-secret" not in str(denied.value)
        with pytest.raises(ObjectAccessDenied):
            await store.ping()
    finally:
        await store.aclose()


async def test_an_unknown_access_key_is_refused(fake_oss: FakeOss) -> None:
    store = make_store(fake_oss, access_key_id="LTAIunknown")
    try:
        with pytest.raises(ObjectAccessDenied) as denied:
            await store.exists(
                store.new_key("audio", "s", "mp3")
            )  # a HEAD: the error rides in x-oss-err
        assert denied.value.code == "InvalidAccessKeyId"
    finally:
        await store.aclose()


async def test_a_skewed_clock_is_refused(store: OssObjectStore, fake_oss: FakeOss) -> None:
    fake_oss.clock_offset = 3600
    with pytest.raises(ObjectAccessDenied) as denied:
        await store.get(store.new_key("audio", "s", "mp3"))
    assert denied.value.code == "RequestTimeTooSkewed"


async def test_a_missing_bucket_is_a_configuration_error(fake_oss: FakeOss) -> None:
    store = make_store(fake_oss, bucket="no-such-bucket")
    try:
        with pytest.raises(ObjectStoreError) as info:
            await store.ping()
        assert info.value.code == "NoSuchBucket" and not isinstance(info.value, ObjectNotFound)
        with pytest.raises(ObjectStoreError):
            await store.exists(store.new_key("audio", "s", "mp3"))
    finally:
        await store.aclose()


async def test_server_errors_are_retried_then_typed(
    store: OssObjectStore, fake_oss: FakeOss
) -> None:
    key = store.new_key("audio", "s", "mp3")
    fake_oss.fail_next(1, status=503)
    await store.put(key, b"after one 503", "audio/mpeg")
    assert [e.status for e in fake_oss.requests()] == [503, 200]

    fake_oss.fail_next(10, status=500, code="InternalError")
    with pytest.raises(ObjectStoreUnavailable) as info:
        await store.get(key)
    assert info.value.status == 500 and info.value.code == "InternalError" and info.value.transient
    assert len(fake_oss.requests()) == 2 + 3  # one try and two retries


async def test_a_hanging_server_times_out_without_hanging_us(fake_oss: FakeOss) -> None:
    # the overall deadline, shorter than the socket timeouts: we return at it
    store = make_store(fake_oss, read_timeout=5.0, op_timeout=0.5, retries=0)
    try:
        fake_oss.stall_next(1)
        with pytest.raises(ObjectStoreTimeout):
            await store.put(store.new_key("audio", "s", "mp3"), b"x", "audio/mpeg")
        fake_oss.release()
    finally:
        await store.aclose()
    # the socket read timeout, with retries: each attempt times out, then the typed error
    store = make_store(fake_oss, read_timeout=0.3, retries=1)
    try:
        fake_oss.stall_next(2)
        with pytest.raises(ObjectStoreTimeout):
            await store.get(store.new_key("audio", "s", "mp3"))
        fake_oss.release()
        key = store.new_key("audio", "s", "mp3")
        await store.put(key, b"fine again", "audio/mpeg")  # the pool recovered
        assert await store.get(key) == b"fine again"
    finally:
        await store.aclose()


async def test_many_parallel_calls_share_the_bounded_pool(store: OssObjectStore) -> None:
    keys = [store.new_key("image", f"s{i}", "png") for i in range(40)]
    payloads = [os.urandom(1000 + i) for i in range(40)]
    await asyncio.gather(
        *(store.put(k, p, "image/png") for k, p in zip(keys, payloads, strict=True))
    )
    assert await asyncio.gather(*(store.get(k) for k in keys)) == payloads


async def test_signature_v1_stays_available_for_old_buckets(fake_oss: FakeOss) -> None:
    store = make_store(fake_oss, signature_version="v1")
    try:
        key = store.new_key("audio", "s", "mp3")
        stored = await store.put(key, b"v1 bytes", "audio/mpeg")
        assert await store.get(key) == b"v1 bytes"
        assert "OSSAccessKeyId=" in stored.url and "Signature=" in stored.url
        async with httpx.AsyncClient() as client:
            assert (await client.get(stored.url)).content == b"v1 bytes"
        assert {e.auth for e in fake_oss.requests()} == {"v1", "v1-presigned"}
    finally:
        await store.aclose()
    wrong = oss2.Bucket(oss2.Auth(OSS_AK, "wrong"), fake_oss.endpoint, OSS_BUCKET)
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        wrong.get_object(key)


@pytest.mark.parametrize("key", ["../x.mp3", "/etc/passwd", "audio/20240101/a\x00.mp3", "a" * 1000])
async def test_hostile_keys_never_reach_oss(
    store: OssObjectStore, fake_oss: FakeOss, key: str
) -> None:
    with pytest.raises(InvalidObjectKey):
        await store.put(key, b"x", "audio/mpeg")
    with pytest.raises(InvalidObjectKey):
        await store.get(key)
    with pytest.raises(InvalidObjectKey):
        store.presigned_url(key, 60)
    assert fake_oss.requests() == []


async def test_public_base_url_gives_plain_links(fake_oss: FakeOss) -> None:
    store = make_store(fake_oss, public_base_url="https://cdn.example.com/")
    try:
        key = store.new_key("image", "s", "jpg")
        stored = await store.put(key, b"x", "image/jpeg")
        assert stored.url == f"https://cdn.example.com/{key}"
    finally:
        await store.aclose()


def test_endpoint_is_derived_from_the_region() -> None:
    assert oss_endpoint("cn-beijing") == "https://oss-cn-beijing.aliyuncs.com"
    assert oss_endpoint("oss-cn-shanghai") == "https://oss-cn-shanghai.aliyuncs.com"
    assert oss_endpoint("cn-beijing", "oss-cn-beijing-internal.aliyuncs.com") == (
        "https://oss-cn-beijing-internal.aliyuncs.com"
    )


# ---------------------------------------------------------------------- the fake itself
def test_the_fake_checks_content_md5_and_accepts_chunked_bodies(fake_oss: FakeOss) -> None:
    bucket = oss2.Bucket(
        oss2.AuthV4(OSS_AK, OSS_SK), fake_oss.endpoint, OSS_BUCKET, region=OSS_REGION
    )
    bad_md5 = base64.b64encode(b"0" * 16).decode()
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object("x/y.bin", b"data", headers={"Content-MD5": bad_md5})
    bucket.put_object("x/chunked.bin", iter([b"ab", b"cd", b"ef"]))  # no length: chunked
    assert bucket.get_object("x/chunked.bin").read() == b"abcdef"
    assert not bucket.object_exists("x/missing.bin")


def test_the_fakes_crc64_is_the_one_oss2_checks() -> None:
    assert crc64ecma(b"123456789") == 0x995DC9BBDF1939FA  # the CRC-64/XZ check value
    crc = oss2.utils.Crc64()
    crc.update(b"hello oss")
    assert crc.crc == crc64ecma(b"hello oss")

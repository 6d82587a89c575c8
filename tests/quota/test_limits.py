"""``qwen_gateway.quota`` on its own: every limit kind, in-process and on Redis shared by two ``Quotas`` (two
processes' worth of clients), Redis stopped and restarted, and the keys-file overrides."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from redis.asyncio import Redis

from qwen_gateway.auth import KeyChecker, KeyPolicy, parse_key_line
from qwen_gateway.config import ConfigError, load_settings
from qwen_gateway.quota import Lease, Limits, Refusal, open_quotas

from .conftest import ThrowawayRedis

OWNER = "k_" + "ab" * 16


# ------------------------------------------------------------------------------------------ in-process


async def test_a_burst_up_to_the_rpm_passes_at_once_then_refused() -> None:
    async with open_quotas(Limits()) as q:
        limits = Limits(rpm=5)
        got = await asyncio.gather(*(q.admit(OWNER, limits) for _ in range(5)))
        assert got == [None] * 5
        refusal = await q.admit(OWNER, limits)
        assert isinstance(refusal, Refusal) and refusal.kind == "rpm"
        assert 0 < refusal.retry_after <= 60 and 1 <= refusal.retry_seconds <= 60
        assert not refusal.is_quota
        # another key has its own window; a key without a limit is never refused
        assert await q.admit("k_" + "cd" * 16, limits) is None
        assert all([await q.admit(OWNER, Limits()) is None for _ in range(20)])


async def test_daily_quotas_refuse_once_used_up() -> None:
    async with open_quotas(Limits()) as q:
        limits = Limits(tokens_per_day=100, tts_chars_per_day=10, audio_seconds_per_day=2.5)
        assert await q.admit(OWNER, limits, ("tokens", "tts_chars", "audio_seconds")) is None
        q.record(OWNER, {"tokens": 60, "tts_chars": 4, "audio_seconds": 1.25})
        await q.flush()
        assert await q.admit(OWNER, limits, ("tokens",)) is None  # 60 < 100: a request may start
        q.record(OWNER, {"tokens": 40})
        await q.flush()
        refusal = await q.admit(OWNER, limits, ("tokens",))
        assert isinstance(refusal, Refusal) and refusal.kind == "tokens" and refusal.is_quota
        assert 0 < refusal.retry_after <= 86400  # until midnight UTC
        # a quota the request does not spend does not refuse it
        assert await q.admit(OWNER, limits, ("tts_chars",)) is None
        q.record(OWNER, {"tts_chars": 6, "audio_seconds": 1.25})
        await q.flush()
        for kind in ("tts_chars", "audio_seconds"):
            refusal = await q.admit(OWNER, limits, (kind,))
            assert isinstance(refusal, Refusal) and refusal.kind == kind
        day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        usage = await q.usage(OWNER, day)
        assert usage == {"requests": 3, "tokens": 100, "tts_chars": 10, "audio_seconds": 2.5}


async def test_sessions_are_leases_given_back() -> None:
    async with open_quotas(Limits()) as q:
        limits = Limits(sessions=2)
        a = await q.open_session(OWNER, limits)
        b = await q.open_session(OWNER, limits)
        assert isinstance(a, Lease) and isinstance(b, Lease)
        refused = await q.open_session(OWNER, limits)
        assert isinstance(refused, Refusal) and refused.kind == "sessions"
        await q.release(a)
        c = await q.open_session(OWNER, limits)
        assert isinstance(c, Lease)
        await q.release(b)
        await q.release(c)
        await q.release(c)  # twice: harmless


async def test_upstream_cap_waits_briefly_then_refuses() -> None:
    async with open_quotas(Limits(), max_upstream=2, upstream_wait=0.3) as q:
        held = [await q.upstream_slot() for _ in range(2)]
        assert all(isinstance(h, Lease) for h in held)
        refused = await q.upstream_slot()
        assert isinstance(refused, Refusal) and refused.kind == "upstream"

        # a waiting request gets the slot freed while it waits
        async def free_soon() -> None:
            await asyncio.sleep(0.05)
            await q.release(held[0])

        waiter, _ = await asyncio.gather(q.upstream_slot(), free_soon())
        assert isinstance(waiter, Lease)
        await q.release(waiter)
        await q.release(held[1])


async def test_no_upstream_cap_takes_nothing() -> None:
    async with open_quotas(Limits()) as q:
        slots = [await q.upstream_slot() for _ in range(50)]
        assert all(isinstance(s, Lease) and not s.held for s in slots)


# ------------------------------------------------------------------------------------------ keys file


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_old_keys_files_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# fleet\n{_digest('gk-one')}\n\n{_digest('gk-two')}  # comment\n")
    checker = KeyChecker.from_settings(
        load_settings({"QG_API_KEYS_FILE": str(path)}, dotenv=None), owner_secret=b"s" * 32
    )
    assert checker.check("gk-one") and checker.check("gk-two") and not checker.check("gk-three")
    assert checker.policy("gk-one") == KeyPolicy() and not checker.is_admin("gk-one")


def test_keys_file_names_overrides_and_admin(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(
        f"{_digest('gk-fleet')} name=fleet-a rpm=120 sessions=3 tokens_per_day=none "
        "tts_chars_per_day=5000 audio_seconds_per_day=600.5\n"
        f"{_digest('gk-ops')} name=ops admin\n"
        f"{_digest('gk-plain')}\n"
    )
    settings = load_settings(
        {
            "QG_API_KEYS_FILE": str(path),
            "QG_LIMIT_RPM": "60",
            "QG_LIMIT_TOKENS_PER_DAY": "1000",
            "QG_LIMIT_SESSIONS": "",
        },
        dotenv=None,
    )
    checker = KeyChecker.from_settings(settings, owner_secret=b"s" * 32)
    fleet = checker.policy("gk-fleet")
    assert fleet.name == "fleet-a" and not fleet.admin
    limits = settings.default_limits.merged(fleet.limits)
    assert limits == Limits(
        rpm=120,
        sessions=3,
        tokens_per_day=None,
        tts_chars_per_day=5000,
        audio_seconds_per_day=600.5,
    )
    assert settings.default_limits.merged(checker.policy("gk-plain").limits) == Limits(
        rpm=60, tokens_per_day=1000
    )
    assert checker.is_admin("gk-ops") and not checker.is_admin("gk-fleet")
    assert not checker.is_admin("gk-unknown")
    assert checker.named("fleet-a") == fleet and checker.named("nobody") is None


@pytest.mark.parametrize(
    "words",
    ["rpm=-1", "rpm=ten", "colour=blue", "sessions", "name=has space=x"],
)
def test_keys_file_bad_fields_name_the_line(words: str) -> None:
    with pytest.raises(ConfigError, match="line 7"):
        parse_key_line(f"{_digest('k')} {words}", 7)


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("QG_LIMIT_RPM", "-3"),
        ("QG_LIMIT_AUDIO_SECONDS_PER_DAY", "x"),
        ("QG_MAX_UPSTREAM_SESSIONS", "0"),
    ],
)
def test_bad_limit_settings_name_the_variable(env: str, value: str) -> None:
    with pytest.raises(ConfigError, match=env):
        load_settings({env: value}, dotenv=None)


def test_redis_url_must_be_one() -> None:
    with pytest.raises(ConfigError, match="QG_REDIS_URL"):
        load_settings({"QG_REDIS_URL": "http://localhost:6379"}, dotenv=None)
    assert load_settings({"QG_REDIS_URL": "redis://h:6379/2"}, dotenv=None).redis_url


# ------------------------------------------------------------------------------------------ Redis


async def test_limits_are_shared_through_redis(redis_url: str, prefix: str) -> None:
    """Two Quotas with their own clients (as two processes): requests through both count together."""
    async with (
        open_quotas(Limits(), redis_url=redis_url, prefix=prefix, max_upstream=3) as a,
        open_quotas(Limits(), redis_url=redis_url, prefix=prefix, max_upstream=3) as b,
    ):
        assert a.backend == b.backend == "redis"
        limits = Limits(rpm=6, sessions=2, tokens_per_day=50)
        burst = await asyncio.gather(*(q.admit(OWNER, limits) for q in (a, b) * 3))
        assert burst == [None] * 6  # the whole burst passes at once
        for q in (a, b):
            refusal = await q.admit(OWNER, limits)
            assert isinstance(refusal, Refusal) and refusal.kind == "rpm"
            assert 0 < refusal.retry_after <= 60

        s1 = await a.open_session(OWNER, limits)
        s2 = await b.open_session(OWNER, limits)
        assert isinstance(s1, Lease) and isinstance(s2, Lease)
        assert isinstance(await a.open_session(OWNER, limits), Refusal)
        assert isinstance(await b.open_session(OWNER, limits), Refusal)
        await a.release(s1)
        s3 = await b.open_session(OWNER, limits)
        assert isinstance(s3, Lease)

        slots = [await q.upstream_slot() for q in (a, b, a)]
        assert all(isinstance(s, Lease) for s in slots)
        b.upstream_wait = 0.1
        assert isinstance(await b.upstream_slot(), Refusal)

        a.record(OWNER, {"tokens": 30})
        b.record(OWNER, {"tokens": 20, "audio_seconds": 1.5})
        await asyncio.gather(a.flush(), b.flush())
        other = "k_" + "ef" * 16
        assert await a.admit(other, Limits(tokens_per_day=50), ("tokens",)) is None
        refusal = await b.admit(OWNER, Limits(tokens_per_day=50), ("tokens",))
        assert isinstance(refusal, Refusal) and refusal.kind == "tokens"
        day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        usage = await a.usage(OWNER, day)
        assert usage["tokens"] == 50 and usage["audio_seconds"] == 1.5 and usage["requests"] == 6

        await a.name_owner("fleet-a", OWNER)
        assert await b.owner_of("fleet-a") == OWNER
        for q, lease in ((b, s2), (b, s3), (a, slots[0]), (b, slots[1]), (a, slots[2])):
            assert isinstance(lease, Lease)
            await q.release(lease)

    # the Redis key names carry the owner id, never a key, and expire
    client = Redis.from_url(redis_url)
    try:
        keys = sorted([k.decode() async for k in client.scan_iter(match=prefix + "*")])
        assert any(OWNER in k for k in keys)
        for k in keys:
            assert k.startswith(prefix)
            if k != prefix + "names":
                assert await client.ttl(k) > 0, k
    finally:
        await client.aclose()


async def test_redis_stopped_and_restarted(throwaway_redis: ThrowawayRedis) -> None:
    """Redis goes away mid-run: admission goes on in-process (degraded), nothing raises; once Redis is back the
    shared limits resume, with the usage counted meanwhile added."""
    url = throwaway_redis.url
    async with (
        open_quotas(Limits(), redis_url=url, prefix="t:") as a,
        open_quotas(Limits(), redis_url=url, prefix="t:") as b,
    ):
        limits = Limits(rpm=4, sessions=1)
        assert await a.admit(OWNER, limits) is None
        assert await b.admit(OWNER, limits) is None
        assert (await a.check())["status"] == "up" and not a.degraded

        await throwaway_redis.stop()
        # in-process limits meanwhile: each process its own window of 4
        got = [await a.admit(OWNER, limits) for _ in range(5)]
        assert got[:4] == [None] * 4 and isinstance(got[4], Refusal)
        assert a.degraded
        assert (await a.check())["status"] == "down"
        session = await a.open_session(OWNER, limits)
        assert isinstance(session, Lease)
        a.record(OWNER, {"tokens": 7})
        await a.flush()
        await a.release(session)

        await throwaway_redis.start()
        await asyncio.sleep(1.1)  # the retry delay after a failure (REDIS_RETRY_SECONDS)
        # the shared window again: 2 were counted in Redis before it stopped (a fresh server: empty, so 0)
        shared = [await q.admit(OWNER, limits) for q in (a, b, a, b, a)]
        assert shared[:4] == [None] * 4 and isinstance(shared[4], Refusal)
        assert not a.degraded and (await a.check())["status"] == "up"
        day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        assert (await b.usage(OWNER, day))["tokens"] == 7  # written to Redis once it answered


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_admission_and_upstream_slot_in_one_step(
    backend: str, redis_url: str, prefix: str
) -> None:
    url = redis_url if backend == "redis" else ""
    async with open_quotas(
        Limits(), redis_url=url, prefix=prefix, max_upstream=1, upstream_wait=0.2
    ) as q:
        limits = Limits(rpm=3, tokens_per_day=10)
        first = await q.admit_upstream(OWNER, limits, ("tokens",))
        assert isinstance(first, Lease) and first.held
        busy = await q.admit_upstream(
            OWNER, limits, ("tokens",)
        )  # counted, then no free slot in time
        assert isinstance(busy, Refusal) and busy.kind == "upstream"
        q.release_soon(first)
        await q.flush()
        second = await q.admit_upstream(OWNER, limits, ("tokens",))
        assert isinstance(second, Lease)
        q.release_soon(second)
        refused = await q.admit_upstream(
            OWNER, limits, ("tokens",)
        )  # the 4th request in the minute
        assert isinstance(refused, Refusal) and refused.kind == "rpm"
        q.record(OWNER, {"tokens": 10})
        await q.flush()
        assert isinstance(await q.admit_upstream("k_" + "12" * 16, limits), Lease)
        spent = await q.admit_upstream(OWNER, Limits(tokens_per_day=10), ("tokens",))
        assert isinstance(spent, Refusal) and spent.kind == "tokens"
        assert not q.degraded


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_held_leases_are_renewed_and_dead_ones_expire(
    backend: str, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qwen_gateway import quota

    monkeypatch.setattr(quota, "LEASE_SECONDS", 0.6)  # renewed every 0.2 s
    url = redis_url if backend == "redis" else ""
    async with open_quotas(Limits(), redis_url=url, prefix=prefix) as q:
        limits = Limits(sessions=1)
        held = await q.open_session(OWNER, limits)
        assert isinstance(held, Lease)
        await asyncio.sleep(1.5)  # well past one lease's life: kept alive by the renewer
        assert isinstance(await q.open_session(OWNER, limits), Refusal)
        await q.release(held)
        # a lease whose holder died (taken, never renewed nor released) is free again after its life
        store = held.store
        assert await store.acquire("sessions:" + OWNER, "dead-holder", 1, 0.6)
        assert isinstance(await q.open_session(OWNER, limits), Refusal)
        await asyncio.sleep(0.8)
        again = await q.open_session(OWNER, limits)
        assert isinstance(again, Lease)
        await q.release(again)

"""Quotas and limits per key, shared by every gateway process through Redis (``QG_REDIS_URL``).

Per caller (its owner id, :meth:`qwen_gateway.auth.KeyChecker.owner`): requests per minute, concurrent voice
sessions, and per UTC day chat tokens, TTS characters and recognised audio seconds; plus one cap on the concurrent
upstream sessions of the whole deployment (``QG_MAX_UPSTREAM_SESSIONS``: DashScope limits concurrency per account).

* Requests per minute: a one-minute window opened by the first request (``INCR`` + ``PEXPIRE``), so a burst up to
  the limit passes at once; ``Retry-After`` is what is left of the window.
* Sessions and upstream slots: leases in a sorted set scored by their expiry, renewed while held (a process that
  dies leaks nothing longer than a lease).
* Daily quotas: counters in a hash per owner and day (TTL :data:`USAGE_TTL_DAYS`), checked before a request or turn
  starts (one that starts under the quota may end over it) and raised when it ends (:meth:`Quotas.record`).

Every Redis step is one Lua script (atomic); Redis key names carry the owner id (already a keyed hash), never a key.
Without Redis, or while Redis does not answer, the same limits are held in this process (:class:`MemoryStore`):
the node keeps serving, ``/health`` says ``degraded``, and the shared limits resume once Redis answers again (usage
counted meanwhile is added to Redis then).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

__all__ = [
    "DAILY_KINDS",
    "Lease",
    "Limits",
    "MemoryStore",
    "Quotas",
    "RedisStore",
    "Refusal",
    "SlotRequest",
    "open_quotas",
]

log = logging.getLogger("qwen_gateway.quota")

#: Daily counters: the name in usage reports and keys files -> the :class:`Limits` field that caps it.
DAILY_KINDS: Mapping[str, str] = {
    "tokens": "tokens_per_day",
    "tts_chars": "tts_chars_per_day",
    "audio_seconds": "audio_seconds_per_day",
}
#: Usage counters are kept this many days.
USAGE_TTL_DAYS = 35
#: Life of a session or upstream-slot lease; a holder renews it every third of it.
LEASE_SECONDS = 60.0
#: Longest wait for one Redis step before the in-process limits take over.
REDIS_TIMEOUT = 0.5
#: After a Redis failure, the next attempt waits this long (meanwhile: in-process limits).
REDIS_RETRY_SECONDS = 1.0

RefusalKind = Literal["rpm", "sessions", "tokens", "tts_chars", "audio_seconds", "upstream"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one key (None: no limit)."""

    rpm: int | None = None
    sessions: int | None = None
    tokens_per_day: int | None = None
    tts_chars_per_day: int | None = None
    audio_seconds_per_day: float | None = None

    def merged(self, overrides: Mapping[str, int | float | None]) -> Limits:
        """These limits with ``overrides`` (field -> value; None lifts a limit) applied."""
        return replace(self, **overrides) if overrides else self

    def daily(self, kinds: tuple[str, ...]) -> dict[str, float]:
        """The daily limits among ``kinds`` (names of :data:`DAILY_KINDS`) that are set."""
        out: dict[str, float] = {}
        for kind in kinds:
            limit = getattr(self, DAILY_KINDS[kind])
            if limit is not None:
                out[kind] = float(limit)
        return out


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request, turn or session may not start, and when to retry (seconds)."""

    kind: RefusalKind
    retry_after: float
    limit: float

    @property
    def is_quota(self) -> bool:
        """A daily quota is used up (``insufficient_quota`` / ``quota_exceeded``), not a rate."""
        return self.kind in DAILY_KINDS

    def message(self) -> str:
        what = {
            "rpm": f"more than {self.limit:g} requests per minute",
            "sessions": f"more than {self.limit:g} concurrent voice sessions",
            "tokens": f"the daily quota of {self.limit:g} chat tokens is used up",
            "tts_chars": f"the daily quota of {self.limit:g} speech characters is used up",
            "audio_seconds": f"the daily quota of {self.limit:g} s of recognised audio is used up",
            "upstream": f"all {self.limit:g} upstream sessions of the gateway are busy",
        }[self.kind]
        return f"Limit reached for this key: {what}; retry in {self.retry_seconds} s."

    @property
    def retry_seconds(self) -> int:
        """``Retry-After`` in whole seconds (at least 1)."""
        return max(1, int(-(-self.retry_after // 1)))


def _day(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%d")


def _until_midnight(now: float) -> float:
    return 86400.0 - (now % 86400.0)


@dataclass(frozen=True, slots=True)
class SlotRequest:
    """A lease to take in the same step as an admission (one round trip instead of two)."""

    pool: str
    lease: str
    cap: int
    ttl: float


class Store(Protocol):
    """One place limits are held (Redis or this process). ``now`` is wall-clock seconds (days are UTC).

    ``admit`` counts a request unless a limit refuses it; with ``slot`` it also takes that lease when one is
    free, and answers ``Refusal("upstream")`` for a counted request whose lease is not free yet."""

    async def admit(
        self,
        owner: str,
        rpm: int | None,
        daily: Mapping[str, float],
        now: float,
        slot: SlotRequest | None = None,
    ) -> Refusal | None: ...

    async def acquire(self, pool: str, lease: str, cap: int, ttl: float) -> bool: ...

    async def renew(self, pool: str, lease: str, ttl: float) -> None: ...

    async def renew_many(self, leases: list[tuple[str, str]], ttl: float) -> None: ...

    async def release(self, pool: str, lease: str) -> None: ...

    async def add_usage(self, owner: str, day: str, amounts: Mapping[str, float]) -> None: ...

    async def write(
        self,
        releases: list[tuple[str, str]],
        usage: Mapping[tuple[str, str], Mapping[str, float]],
    ) -> None:
        """Give leases back (pool, lease) and add usage ((owner, day) -> amounts), in one step."""
        ...

    async def usage(self, owner: str, day: str) -> dict[str, float]: ...

    async def name_owner(self, name: str, owner: str) -> None: ...

    async def owner_of(self, name: str) -> str | None: ...

    async def ping(self) -> None: ...


# ------------------------------------------------------------------------------------------ in-process


class MemoryStore:
    """The limits of this process alone (no Redis, or Redis away). Same semantics as :class:`RedisStore`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # owner -> (window end, count)
        self._usage: dict[tuple[str, str], dict[str, float]] = {}
        self._pools: dict[str, dict[str, float]] = {}  # pool -> lease -> expiry
        self._names: dict[str, str] = {}

    async def admit(
        self,
        owner: str,
        rpm: int | None,
        daily: Mapping[str, float],
        now: float,
        slot: SlotRequest | None = None,
    ) -> Refusal | None:
        used = self._usage.get((owner, _day(now)), {})
        for kind, limit in daily.items():
            if used.get(kind, 0.0) >= limit:
                return Refusal(kind, _until_midnight(now), limit)  # type: ignore[arg-type]
        mono = self._clock()
        end, count = self._windows.get(owner, (0.0, 0))
        if end <= mono:
            end, count = mono + 60.0, 0
            if len(self._windows) > 10000:
                self._windows = {k: v for k, v in self._windows.items() if v[0] > mono}
        if rpm is not None and count >= rpm:
            return Refusal("rpm", end - mono, rpm)
        self._windows[owner] = (end, count + 1)
        self._add((owner, _day(now)), {"requests": 1})
        if slot is not None and not await self.acquire(slot.pool, slot.lease, slot.cap, slot.ttl):
            return Refusal("upstream", 0.0, slot.cap)
        return None

    def _live(self, pool: str) -> dict[str, float]:
        mono = self._clock()
        leases = self._pools.setdefault(pool, {})
        for lease in [k for k, exp in leases.items() if exp <= mono]:
            del leases[lease]
        return leases

    async def acquire(self, pool: str, lease: str, cap: int, ttl: float) -> bool:
        leases = self._live(pool)
        if len(leases) >= cap:
            return False
        leases[lease] = self._clock() + ttl
        return True

    async def renew(self, pool: str, lease: str, ttl: float) -> None:
        leases = self._pools.get(pool, {})
        if lease in leases:
            leases[lease] = self._clock() + ttl

    async def renew_many(self, leases: list[tuple[str, str]], ttl: float) -> None:
        for pool, lease in leases:
            await self.renew(pool, lease, ttl)

    async def release(self, pool: str, lease: str) -> None:
        leases = self._pools.get(pool)
        if leases is not None:
            leases.pop(lease, None)
            if not leases:
                del self._pools[pool]

    def _add(self, key: tuple[str, str], amounts: Mapping[str, float]) -> None:
        if key not in self._usage and len(self._usage) > 10000:
            oldest = sorted({d for _, d in self._usage})[: -USAGE_TTL_DAYS or None]
            self._usage = {k: v for k, v in self._usage.items() if k[1] not in oldest}
        counters = self._usage.setdefault(key, {})
        for kind, amount in amounts.items():
            counters[kind] = counters.get(kind, 0.0) + amount

    async def add_usage(self, owner: str, day: str, amounts: Mapping[str, float]) -> None:
        self._add((owner, day), amounts)

    async def write(
        self,
        releases: list[tuple[str, str]],
        usage: Mapping[tuple[str, str], Mapping[str, float]],
    ) -> None:
        for pool, lease in releases:
            await self.release(pool, lease)
        for key, amounts in usage.items():
            self._add(key, amounts)

    async def usage(self, owner: str, day: str) -> dict[str, float]:
        return dict(self._usage.get((owner, day), {}))

    async def name_owner(self, name: str, owner: str) -> None:
        self._names[name] = owner

    async def owner_of(self, name: str) -> str | None:
        return self._names.get(name)

    async def ping(self) -> None:
        return None


# ------------------------------------------------------------------------------------------ Redis

# KEYS: rpm window, usage hash, pool (or any key when no slot). ARGV: rpm limit (-1 none), usage ttl (s), slot cap
# (-1 no slot), lease, lease ttl (ms), then kind, limit pairs. Returns false when admitted (and the lease taken),
# {'upstream', 0} when admitted without a free lease, else {kind, retry ms} (daily kinds: -1, the caller knows
# midnight) and nothing counted.
_ADMIT = """
for i = 6, #ARGV, 2 do
  local used = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if used >= tonumber(ARGV[i + 1]) then return {ARGV[i], -1} end
end
local rpm = tonumber(ARGV[1])
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if rpm >= 0 and n >= rpm then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = 60000 end
  return {'rpm', ttl}
end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], 60000) end
redis.call('HINCRBY', KEYS[2], 'requests', 1)
redis.call('EXPIRE', KEYS[2], ARGV[2])
local cap = tonumber(ARGV[3])
if cap >= 0 then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= cap then return {'upstream', 0} end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[4])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]) * 2)
end
return false
"""

# KEYS: the pool's sorted set. ARGV: lease, cap, ttl ms. Scores are expiry times on Redis's own clock.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""


class RedisStore:
    """Limits in Redis, shared by every process using the same URL and ``prefix``."""

    def __init__(self, client: Any, prefix: str = "qg:") -> None:
        self._redis = client
        self._prefix = prefix
        self._admit = client.register_script(_ADMIT)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    def _usage_key(self, owner: str, day: str) -> str:
        return f"{self._prefix}usage:{owner}:{day}"

    async def admit(
        self,
        owner: str,
        rpm: int | None,
        daily: Mapping[str, float],
        now: float,
        slot: SlotRequest | None = None,
    ) -> Refusal | None:
        args: list[Any] = [-1 if rpm is None else rpm, USAGE_TTL_DAYS * 86400]
        args += [-1, "", 0] if slot is None else [slot.cap, slot.lease, int(slot.ttl * 1000)]
        for kind, limit in daily.items():
            args += [kind, repr(float(limit))]
        rpm_key = f"{self._prefix}rpm:{owner}"
        pool_key = rpm_key if slot is None else self._pool_key(slot.pool)
        keys = [rpm_key, self._usage_key(owner, _day(now)), pool_key]
        out = await self._admit(keys=keys, args=args)
        if not out:
            return None
        kind = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
        if kind == "rpm":
            return Refusal("rpm", int(out[1]) / 1000, float(rpm or 0))
        if kind == "upstream":
            return Refusal("upstream", 0.0, float(slot.cap if slot else 0))
        return Refusal(kind, _until_midnight(now), daily[kind])  # type: ignore[arg-type]

    def _pool_key(self, pool: str) -> str:
        return f"{self._prefix}pool:{pool}"

    async def acquire(self, pool: str, lease: str, cap: int, ttl: float) -> bool:
        got = await self._acquire(keys=[self._pool_key(pool)], args=[lease, cap, int(ttl * 1000)])
        return bool(got)

    async def renew(self, pool: str, lease: str, ttl: float) -> None:
        await self._renew(keys=[self._pool_key(pool)], args=[lease, int(ttl * 1000)])

    async def renew_many(self, leases: list[tuple[str, str]], ttl: float) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for pool, lease in leases:
                await self._renew(
                    keys=[self._pool_key(pool)], args=[lease, int(ttl * 1000)], client=pipe
                )
            await pipe.execute()

    async def release(self, pool: str, lease: str) -> None:
        await self._redis.zrem(self._pool_key(pool), lease)

    async def add_usage(self, owner: str, day: str, amounts: Mapping[str, float]) -> None:
        await self.write([], {(owner, day): amounts})

    async def write(
        self,
        releases: list[tuple[str, str]],
        usage: Mapping[tuple[str, str], Mapping[str, float]],
    ) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for pool, lease in releases:
                pipe.zrem(self._pool_key(pool), lease)
            for (owner, day), amounts in usage.items():
                key = self._usage_key(owner, day)
                for kind, amount in amounts.items():
                    if float(amount).is_integer():
                        pipe.hincrby(key, kind, int(amount))
                    else:
                        pipe.hincrbyfloat(key, kind, float(amount))
                pipe.expire(key, USAGE_TTL_DAYS * 86400)
            await pipe.execute()

    async def usage(self, owner: str, day: str) -> dict[str, float]:
        raw = await self._redis.hgetall(self._usage_key(owner, day))
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def name_owner(self, name: str, owner: str) -> None:
        await self._redis.hset(f"{self._prefix}names", name, owner)

    async def owner_of(self, name: str) -> str | None:
        got = await self._redis.hget(f"{self._prefix}names", name)
        return got.decode() if isinstance(got, bytes) else got

    async def ping(self) -> None:
        await self._redis.ping()


# ------------------------------------------------------------------------------------------ the service


@dataclass
class Lease:
    """A session or upstream slot; :meth:`Quotas.release` gives it back. ``held``: taken and not given back
    yet (renewed meanwhile by :meth:`Quotas.run_renewer`); False for a lease under no cap."""

    pool: str
    id: str
    store: Store
    held: bool = False


_SESSIONS_POOL = "sessions:"
_UPSTREAM_POOL = "upstream"


class Quotas:
    """Admission and usage of every key, on Redis when configured, else (or while Redis is away) in-process.

    Args:
        defaults: the limits of a key without overrides (``QG_LIMIT_*``).
        redis: the shared store, or None for a single node.
        max_upstream: the most concurrent upstream sessions of the deployment (None: no cap).
        upstream_wait: longest wait for an upstream slot before refusing.
    """

    def __init__(
        self,
        defaults: Limits,
        redis: Store | None = None,
        *,
        max_upstream: int | None = None,
        upstream_wait: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.defaults = defaults
        self.max_upstream = max_upstream
        self.upstream_wait = upstream_wait
        self._redis = redis
        self._memory = MemoryStore()
        self._clock = clock
        self._down_until = 0.0
        self.redis_down = False
        self._unsynced: dict[tuple[str, str], dict[str, float]] = {}
        self._named: set[tuple[str, str]] = set()
        self._held: dict[str, Lease] = {}
        #: recorded usage, and leases to give back, for :meth:`run_writer`
        self._pending: asyncio.Queue[tuple[str, str, dict[str, float]] | Lease] = asyncio.Queue(
            10000
        )

    # ---------------------------------------------------------------- store choice
    @property
    def backend(self) -> str:
        return "redis" if self._redis is not None else "memory"

    @property
    def degraded(self) -> bool:
        """Redis is configured but does not answer (the in-process limits hold meanwhile)."""
        return self._redis is not None and self.redis_down

    async def _run(self, op: Callable[[Store], Any]) -> tuple[Any, Store]:
        """``op`` on Redis when it answers, else on the in-process store."""
        redis = self._redis
        if redis is not None and time.monotonic() >= self._down_until:
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    if self.redis_down:
                        await self._resync(redis)
                    result = await op(redis)
            except Exception as exc:  # redis.RedisError, OSError, TimeoutError: all mean "away"
                if not self.redis_down:
                    log.warning(
                        "redis unavailable, in-process limits: %s",
                        type(exc).__name__,
                    )
                self.redis_down = True
                self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            else:
                if self.redis_down:
                    log.info("redis back, shared limits resume")
                self.redis_down = False
                return result, redis
        return await op(self._memory), self._memory

    async def _resync(self, redis: Store) -> None:
        """Add the usage counted in-process while Redis was away."""
        while self._unsynced:
            (owner, day), amounts = next(iter(self._unsynced.items()))
            await redis.add_usage(owner, day, amounts)
            del self._unsynced[(owner, day)]

    # ---------------------------------------------------------------- admission
    async def admit(
        self, owner: str, limits: Limits, daily: tuple[str, ...] = ()
    ) -> Refusal | None:
        """Count one request (chat call or voice turn) of ``owner``; a refusal when over a limit (then not
        counted). ``daily``: the daily quotas this request spends (names of :data:`DAILY_KINDS`)."""
        now = self._clock()
        wanted = limits.daily(daily)
        refusal, _ = await self._run(lambda s: s.admit(owner, limits.rpm, wanted, now))
        return refusal  # type: ignore[no-any-return]

    async def admit_upstream(
        self, owner: str, limits: Limits, daily: tuple[str, ...] = ()
    ) -> Lease | Refusal:
        """:meth:`admit` and :meth:`upstream_slot` in one step (one Redis round trip when a slot is free): the
        upstream lease of an admitted request, or why it is refused. A request admitted while every upstream
        session is busy waits for one (up to ``upstream_wait``), counted."""
        cap = self.max_upstream
        if cap is None:
            refusal = await self.admit(owner, limits, daily)
            return refusal if refusal is not None else Lease(_UPSTREAM_POOL, "", self._memory)
        now = self._clock()
        wanted = limits.daily(daily)
        lease = Lease(_UPSTREAM_POOL, secrets.token_hex(8), self._memory)
        slot = SlotRequest(lease.pool, lease.id, cap, LEASE_SECONDS)
        refusal, store = await self._run(lambda s: s.admit(owner, limits.rpm, wanted, now, slot))
        if refusal is None:
            self._hold(lease, store)
            return lease
        if refusal.kind != "upstream":
            return refusal  # type: ignore[no-any-return]
        return await self._wait_slot(lease, cap)

    async def open_session(self, owner: str, limits: Limits) -> Lease | Refusal:
        """A voice session of ``owner`` starts: a lease (renewed until :meth:`release`) or a refusal."""
        cap = limits.sessions
        lease = Lease(_SESSIONS_POOL + owner, secrets.token_hex(8), self._memory)
        if cap is None:
            return lease
        ok, store = await self._run(lambda s: s.acquire(lease.pool, lease.id, cap, LEASE_SECONDS))
        if not ok:
            return Refusal("sessions", 5.0, cap)
        self._hold(lease, store)
        return lease

    async def upstream_slot(self) -> Lease | Refusal:
        """One of the deployment's upstream sessions: waits up to ``upstream_wait`` for a free one."""
        cap = self.max_upstream
        lease = Lease(_UPSTREAM_POOL, secrets.token_hex(8), self._memory)
        if cap is None:
            return lease
        return await self._wait_slot(lease, cap)

    async def _wait_slot(self, lease: Lease, cap: int) -> Lease | Refusal:
        deadline = time.monotonic() + self.upstream_wait
        delay = 0.02
        while True:
            ok, store = await self._run(
                lambda s: s.acquire(lease.pool, lease.id, cap, LEASE_SECONDS)
            )
            if ok:
                self._hold(lease, store)
                return lease
            left = deadline - time.monotonic()
            if left <= 0:
                return Refusal("upstream", 1.0, cap)
            await asyncio.sleep(min(delay, left) * (0.5 + secrets.randbelow(1000) / 1000))
            delay = min(delay * 2, 0.25)

    def _hold(self, lease: Lease, store: Store) -> None:
        lease.store = store
        lease.held = True
        self._held[lease.id] = lease

    def _unhold(self, lease: Lease | None) -> bool:
        """Stop renewing ``lease``; False when it was not held (no cap, or already given back)."""
        if lease is None or not lease.held:
            return False
        lease.held = False
        self._held.pop(lease.id, None)
        return True

    async def run_renewer(self) -> None:
        """Renew every held lease, a third of a lease's life apart (runs for the life of the service): one step
        per store for all of them, instead of a task per lease."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            by_store: dict[int, tuple[Store, list[tuple[str, str]]]] = {}
            for lease in list(self._held.values()):
                by_store.setdefault(id(lease.store), (lease.store, []))[1].append(
                    (lease.pool, lease.id)
                )
            for store, leases in by_store.values():
                try:
                    async with asyncio.timeout(REDIS_TIMEOUT * 4):
                        await store.renew_many(leases, LEASE_SECONDS)
                except (
                    Exception
                ) as exc:  # Redis away: those leases expire there; nothing else to do
                    log.debug("leases not renewed: %s", type(exc).__name__)

    async def release(self, lease: Lease | None) -> None:
        """Give a session or upstream slot back (never raises)."""
        if lease is None or not self._unhold(lease):
            return
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await lease.store.release(lease.pool, lease.id)
        except Exception as exc:  # Redis away: the lease expires on its own
            log.debug("lease not released: %s", type(exc).__name__)

    def release_soon(self, lease: Lease | None) -> None:
        """:meth:`release` off the caller's path (by the usage writer, in order with the usage recorded)."""
        if lease is None or not self._unhold(lease):
            return
        try:
            self._pending.put_nowait(lease)
        except asyncio.QueueFull:  # the lease expires on its own
            log.error("lease not released: the usage queue is full")

    # ---------------------------------------------------------------- usage
    def record(self, owner: str, amounts: Mapping[str, float]) -> None:
        """Add ``amounts`` (``tokens``, ``tts_chars``, ``audio_seconds``) to today's usage of ``owner``
        (written by :meth:`run_writer`; never waits)."""
        amounts = {k: v for k, v in amounts.items() if v}
        if not amounts:
            return
        try:
            self._pending.put_nowait((owner, _day(self._clock()), amounts))
        except asyncio.QueueFull:
            log.error("usage not recorded: the usage queue is full")

    async def run_writer(self) -> None:
        """Write recorded usage and give leases back (runs for the life of the service). What has piled up is
        written in one step: one Redis round trip for a batch, however many requests ended meanwhile."""
        while True:
            batch = [await self._pending.get()]
            await asyncio.sleep(
                0
            )  # what the same request records right after (its usage) joins the batch
            while len(batch) < 256 and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            try:
                await self._write(batch)
            except Exception:  # a bug: never let the writer die
                log.exception("usage not written")
            finally:
                for _ in batch:
                    self._pending.task_done()

    async def _write(self, batch: list[tuple[str, str, dict[str, float]] | Lease]) -> None:
        usage: dict[tuple[str, str], dict[str, float]] = {}
        by_store: dict[int, tuple[Store, list[tuple[str, str]]]] = {}
        for item in batch:
            if isinstance(item, Lease):
                by_store.setdefault(id(item.store), (item.store, []))[1].append(
                    (item.pool, item.id)
                )
                continue
            owner, day, amounts = item
            counters = usage.setdefault((owner, day), {})
            for kind, amount in amounts.items():
                counters[kind] = counters.get(kind, 0.0) + amount
        shared: list[tuple[str, str]] = []
        if self._redis is not None and id(self._redis) in by_store:
            shared = by_store.pop(id(self._redis))[1]
        for store, leases in by_store.values():  # in-process leases
            await store.write(leases, {})
        if not usage and not shared:
            return
        # One step for the shared store: its leases and the usage (leases held on Redis are left to expire
        # when Redis is away meanwhile).
        _, store = await self._run(lambda s: s.write(shared if s is self._redis else [], usage))
        if store is self._memory and self._redis is not None:
            for key, amounts in usage.items():
                unsynced = self._unsynced.setdefault(key, {})
                for kind, amount in amounts.items():
                    unsynced[kind] = unsynced.get(kind, 0.0) + amount

    async def flush(self) -> None:
        """Wait until the usage recorded so far is written."""
        await self._pending.join()

    async def usage(self, owner: str, day: str) -> dict[str, float]:
        """The usage of ``owner`` on ``day`` (``YYYYMMDD``)."""
        await self.flush()
        got, _ = await self._run(lambda s: s.usage(owner, day))
        return got  # type: ignore[no-any-return]

    async def name_owner(self, name: str, owner: str) -> None:
        """Remember that the key named ``name`` (keys file) is ``owner`` (for usage queries by name)."""
        if (name, owner) in self._named:
            return
        _, store = await self._run(lambda s: s.name_owner(name, owner))
        if store is not self._memory or self._redis is None:
            self._named.add((name, owner))

    async def owner_of(self, name: str) -> str | None:
        got, _ = await self._run(lambda s: s.owner_of(name))
        return got  # type: ignore[no-any-return]

    async def check(self) -> dict[str, Any]:
        """For ``/health``: the backend and whether it answers."""
        if self._redis is None:
            return {"status": "local", "backend": "memory", "shared": False}
        try:
            async with asyncio.timeout(REDIS_TIMEOUT * 2):
                await self._redis.ping()
        except Exception as exc:
            self.redis_down = True
            return {
                "status": "down",
                "backend": "redis",
                "shared": False,
                "error": type(exc).__name__,
            }
        return {"status": "up", "backend": "redis", "shared": True}


def redis_client(url: str) -> Any:
    """An asyncio Redis client for ``url`` with short timeouts (the gateway never waits long on limits)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    # One immediate retry on a fresh connection when a pooled one turns out dead (Redis restarted): without it,
    # the first command of each process after a restart fails and a second of in-process limits follows.
    return Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        health_check_interval=0,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )


@asynccontextmanager
async def open_quotas(
    defaults: Limits,
    *,
    redis_url: str = "",
    prefix: str = "qg:",
    max_upstream: int | None = None,
    upstream_wait: float = 5.0,
) -> AsyncIterator[Quotas]:
    """:class:`Quotas` with its usage writer running; closes the Redis client on exit."""
    client = redis_client(redis_url) if redis_url else None
    store = RedisStore(client, prefix) if client is not None else None
    quotas = Quotas(defaults, store, max_upstream=max_upstream, upstream_wait=upstream_wait)
    # The writer and the renewer are owned here (cancelled and awaited on exit) rather than by a TaskGroup, so
    # that an error of the body leaves as itself, not wrapped in an ExceptionGroup.
    writer = asyncio.create_task(quotas.run_writer(), name="quota-usage-writer")
    renewer = asyncio.create_task(quotas.run_renewer(), name="quota-lease-renewer")
    try:
        try:
            yield quotas
        finally:
            try:
                async with asyncio.timeout(2.0):
                    await quotas.flush()
            except TimeoutError:
                log.warning("usage not all written at shutdown")
            writer.cancel()
            renewer.cancel()
            await asyncio.wait([writer, renewer])
    finally:
        if client is not None:
            await client.aclose()

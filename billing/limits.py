"""Exact rate limits and quotas, atomic under concurrency and across queen replicas.

Every request is *admitted* before it is dispatched and *settled* when it ends:

    decision = await limiter.admit(tenant, limits, Cost(tokens=prompt_estimate + max_tokens))
    if not decision.allowed:
        return 429 with Retry-After: decision.retry_after and decision.headers
    try:
        ... run the request ...
    finally:
        await limiter.settle(tenant, decision.ticket, Cost(tokens=actual_tokens))

Admission *reserves* the request's cost (its token estimate, its images, ...) in every
window and quota at once, so concurrent requests see each other's reservations and can
never over-admit; settle replaces the reservation by what was actually used. The only
overshoot is the one a request's actual use exceeds its reservation by, which is bounded
by that request.

Two backends share the semantics:

* ``RedisLimiter``: every admission decision is ONE Lua script (EVALSHA, with EVAL on
  NOSCRIPT), so it is atomic on the Redis server. However many queen processes share the
  Redis, a limit of 50 admits exactly 50. When the caller does not inject ``now`` the
  script reads the Redis server's clock (TIME), so replicas with skewed clocks still agree
  on windows and days. All of a tenant's keys share the hash tag ``{tenant}`` so a Redis
  Cluster keeps them on one slot.
* ``LocalLimiter``: the embedded default (one process, no Redis): the same algorithm on
  dicts under one lock. Nothing inside the lock awaits, so it is safe for asyncio tasks
  and for threads alike.

Per-minute windows: a sliding log with one-second buckets
---------------------------------------------------------
A fixed minute can be gamed at its boundary (the limit at 0:59 and again at 1:00), and the
usual two-window weighted estimate only *approximates* a sliding window: it assumes the
previous minute's traffic was uniform, so a burst at the end of one minute followed by
traffic late in the next lets nearly twice the limit through in 60 seconds. We want exact
limits, so each tenant keeps a log of what it was admitted per whole second (a hash
second -> amount, at most 61 fields). A request admitted in second ``b`` is counted by
every admission made before ``b + 61``, i.e. for 60 to 61 seconds. Hence any 60-second
span holds at most the limit - never more, at any alignment - and the price is that a
slot comes back up to one second late. The log is pruned on each admission and the hash
expires when the tenant is idle. Requests and tokens use the same log (two hashes); the
token log counts the reserved estimate at admission and settle corrects the bucket the
request was admitted in. Windows are only kept for limits that exist (a tenant that gets a
per-minute limit starts with an empty window).

Daily quotas: per UTC day, one hash per tenant and day (expires after two days) holding
used + reserved requests, tokens, images, audio (in integer milliseconds, so all
arithmetic is exact) and characters. A request is admitted only if used + reserved + cost
<= limit for requests and for every other unit the request costs (> 0): an image request
is not blocked by the token quota. If any check fails, nothing is reserved.

Concurrency: a sorted set of in-flight tickets scored by their expiry (10 minutes by
default, RBEE_CONCURRENCY_LEASE_SECONDS), so a request whose queen crashed before settling
stops holding its slot once its lease is over. A request still running renews its lease
(``renew``, from the Meter's heartbeat), so a long stream keeps its slot. Settle removes
the ticket. An *interim* settle (the usage settler's, with a request's last heartbeat
counts, when its queen is thought gone) frees the slot but keeps the ticket, marked settled
with those counts: if the request was in fact alive, its renew takes the slot back and its
final settle corrects the counters by the difference, once. The counters of an
expired-but-unsettled ticket stay reserved (conservative) until it is settled or the day
ends.

Errors talking to Redis propagate: the limiter never silently fails open; the caller
decides what an unreachable Redis means.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from kernel import redis_state
from kernel.lua import LuaScript

WINDOW_S = 60
"""Length of the per-minute windows."""
DAY_S = 86400
DAY_KEY_TTL_S = 2 * DAY_S
"""Daily counters and tickets are kept this long (so a late settle still corrects them)."""
LEASE_S = 600.0
"""How long an unsettled request holds a concurrency slot (a crashed queen never settles)."""
CONCURRENCY_RETRY_S = 1.0
"""Retry-After for a concurrency refusal: nobody knows when a request will end; a guess."""


def _store_down() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover (redis is a dependency)
        return (OSError, TimeoutError)
    return (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


STORE_DOWN: tuple[type[BaseException], ...] = _store_down()
"""What a limiter call raises when Redis is down, refuses connections or does not answer
within its timeout (the caller answers 503)."""
REDIS_TIMEOUT_S = 3.0
"""Connect and read timeout of the limiter's Redis connections (RBEE_REDIS_TIMEOUT)."""

UNITS = ("requests", "tokens", "images", "audio_seconds", "characters")
"""The units of the daily quotas and of ``usage_today``."""

_REASON_ORDER = (
    "concurrency",
    "rate_limit_requests",
    "rate_limit_tokens",
    "quota_requests",
    "quota_tokens",
    "quota_images",
    "quota_audio_seconds",
    "quota_characters",
)


@dataclass(frozen=True)
class Limits:
    """What a tenant may use; None means unlimited. Field names match billing.models.Plan."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    images_per_day: int | None = None
    audio_seconds_per_day: int | None = None
    characters_per_day: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and v < 0:
                raise ValueError(f"{f.name} must be >= 0 or None, not {v!r}")

    @classmethod
    def from_mapping(cls, values: Any) -> Limits:
        """Build from a mapping or an object with these attribute names (a Plan, a tenant's
        overrides dict); unknown keys are ignored so a Plan row can be passed as is."""
        names = [f.name for f in fields(cls)]
        if isinstance(values, dict):
            return cls(**{n: values[n] for n in names if n in values})
        return cls(**{n: getattr(values, n) for n in names if hasattr(values, n)})


@dataclass(frozen=True)
class Cost:
    """What one request may use. At admission: the reservation (tokens = prompt estimate +
    max_tokens); at settle: what it actually used."""

    requests: int = 1
    tokens: int = 0
    images: int = 0
    audio_seconds: float = 0
    characters: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v < 0 or (isinstance(v, float) and not math.isfinite(v)):
                raise ValueError(f"{f.name} must be a finite number >= 0, not {v!r}")

    def amounts(self) -> tuple[int, int, int, int, int]:
        """Integer amounts in storage units: audio in milliseconds so sums stay exact."""
        return (
            int(self.requests),
            int(self.tokens),
            int(self.images),
            _audio_ms(self.audio_seconds),
            int(self.characters),
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of one admission.

    ``retry_after`` is the soonest time (seconds) a retry could pass when refused, 0 when
    allowed; ``headers`` are OpenAI's x-ratelimit-* headers for the per-minute limits that
    exist; ``ticket`` identifies the reservation for settle ("" when refused);
    ``usage_today`` is today's used + reserved per unit after this decision."""

    allowed: bool
    reason: str
    retry_after: float
    headers: dict[str, str]
    ticket: str
    usage_today: dict[str, float] = field(default_factory=dict)


class Limiter(Protocol):
    """The interface both backends implement."""

    async def admit(
        self, tenant: str, limits: Limits, cost: Cost, *, now: float | None = None
    ) -> Decision: ...

    async def settle(
        self,
        tenant: str,
        ticket: str,
        actual: Cost,
        *,
        now: float | None = None,
        interim: bool = False,
    ) -> None: ...

    async def renew(self, tenant: str, ticket: str, *, now: float | None = None) -> bool: ...

    async def usage(self, tenant: str, *, now: float | None = None) -> dict[str, float]: ...

    async def reset(self, tenant: str) -> None: ...


# --------------------------------------------------------------------------- helpers


def _audio_ms(seconds: float) -> int:
    return round(seconds * 1000)


def _limit_args(limits: Limits) -> tuple[int, ...]:
    """Limits as integers in storage units, -1 for unlimited (the Lua script's convention)."""

    def v(x: int | None, scale: int = 1) -> int:
        return -1 if x is None else int(x) * scale

    return (
        v(limits.requests_per_minute),
        v(limits.tokens_per_minute),
        v(limits.max_concurrent),
        v(limits.requests_per_day),
        v(limits.tokens_per_day),
        v(limits.images_per_day),
        v(limits.audio_seconds_per_day, 1000),
        v(limits.characters_per_day),
    )


def format_duration(seconds: float) -> str:
    """OpenAI's duration format for x-ratelimit-reset-*: "20ms", "1s", "1.5s", "6m0s"."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{h}h{m}m{s}"
    if m:
        return f"{m}m{s}"
    return s


def _usage_dict(day: tuple[float, float, float, float, float]) -> dict[str, float]:
    req, tok, img, aud_ms, chars = day
    return {
        "requests": float(req),
        "tokens": float(tok),
        "images": float(img),
        "audio_seconds": aud_ms / 1000.0,
        "characters": float(chars),
    }


def _decision(
    limits: Limits,
    allowed: bool,
    reason: str,
    retry_after: float,
    ticket: str,
    window: tuple[float, float, float, float],
    day: tuple[float, float, float, float, float],
) -> Decision:
    """Turn the raw outcome (shared by both backends) into a Decision with headers."""
    rpm_used, rpm_reset, tpm_used, tpm_reset = window
    headers: dict[str, str] = {}
    if limits.requests_per_minute is not None:
        lim = limits.requests_per_minute
        headers["x-ratelimit-limit-requests"] = str(lim)
        headers["x-ratelimit-remaining-requests"] = str(max(0, lim - int(rpm_used)))
        headers["x-ratelimit-reset-requests"] = format_duration(rpm_reset)
    if limits.tokens_per_minute is not None:
        lim = limits.tokens_per_minute
        headers["x-ratelimit-limit-tokens"] = str(lim)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, lim - int(tpm_used)))
        headers["x-ratelimit-reset-tokens"] = format_duration(tpm_reset)
    return Decision(
        allowed=allowed,
        reason=reason,
        retry_after=0.0 if allowed else max(0.001, retry_after),
        headers=headers,
        ticket=ticket if allowed else "",
        usage_today=_usage_dict(day),
    )


def _new_ticket() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- Redis

_ADMIT_LUA = r"""
-- KEYS[1]: the tenant's key base. ARGV: now ("" = server clock), ticket, lease,
-- cost (requests, tokens, images, audio_ms, characters), limits (rpm, tpm, concurrent,
-- requests/day, tokens/day, images/day, audio_ms/day, characters/day; -1 = none).
local base = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local ticket = ARGV[2]
local lease = tonumber(ARGV[3])
local cost = {}
for i = 1, 5 do cost[i] = tonumber(ARGV[3 + i]) end
local l_rpm = tonumber(ARGV[9])
local l_tpm = tonumber(ARGV[10])
local l_conc = tonumber(ARGV[11])
local l_day = {}
for i = 1, 5 do l_day[i] = tonumber(ARGV[11 + i]) end
local WINDOW = 60
local DAY = 86400

local sec = math.floor(now)
local oldest = sec - WINDOW
local day = math.floor(now / DAY)
local day_key = base .. ':d:' .. day
local conc_key = base .. ':c'
local req_key = base .. ':r'
local tok_key = base .. ':k'
local units = {'requests', 'tokens', 'images', 'audio_ms', 'characters'}
local reasons = {'quota_requests', 'quota_tokens', 'quota_images',
                 'quota_audio_seconds', 'quota_characters'}

local function fmt(x) return string.format('%.17g', x) end

-- The sliding log: sum of the buckets not older than `oldest`, pruning the rest.
local function window(key)
  local flat = redis.call('HGETALL', key)
  local total, buckets, stale = 0, {}, {}
  for i = 1, #flat, 2 do
    local b = tonumber(flat[i])
    if b < oldest then
      stale[#stale + 1] = flat[i]
    else
      local v = tonumber(flat[i + 1])
      total = total + v
      buckets[#buckets + 1] = {b, v}
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  return total, buckets
end

-- When enough buckets have aged out for `cost` to fit (bucket b counts until b + 61).
local function wait_for(total, buckets, c, limit)
  local need = total + c - limit
  if need <= 0 then return 0 end
  if c > limit then return WINDOW end
  local freed = 0
  for _, e in ipairs(buckets) do
    freed = freed + e[2]
    if freed >= need then return e[1] + WINDOW + 1 - now end
  end
  return WINDOW
end

local function reset_in(buckets)
  if #buckets == 0 then return 0 end
  return buckets[#buckets][1] + WINDOW + 1 - now
end

local fails = {}
local function fail(reason, wait) fails[#fails + 1] = {reason, wait} end

-- Concurrency: forget expired leases, then count.
redis.call('ZREMRANGEBYSCORE', conc_key, '-inf', fmt(now))
if l_conc >= 0 and redis.call('ZCARD', conc_key) + 1 > l_conc then
  fail('concurrency', 1)
end

local rpm_used, rpm_buckets = 0, {}
if l_rpm >= 0 then
  rpm_used, rpm_buckets = window(req_key)
  if cost[1] > 0 and rpm_used + cost[1] > l_rpm then
    fail('rate_limit_requests', wait_for(rpm_used, rpm_buckets, cost[1], l_rpm))
  end
end
local tpm_used, tpm_buckets = 0, {}
if l_tpm >= 0 then
  tpm_used, tpm_buckets = window(tok_key)
  if cost[2] > 0 and tpm_used + cost[2] > l_tpm then
    fail('rate_limit_tokens', wait_for(tpm_used, tpm_buckets, cost[2], l_tpm))
  end
end

local raw = redis.call('HMGET', day_key, unpack(units))
local used = {}
for i = 1, 5 do used[i] = tonumber(raw[i]) or 0 end
local to_midnight = (day + 1) * DAY - now
for i = 1, 5 do
  if l_day[i] >= 0 and (i == 1 or cost[i] > 0) and used[i] + cost[i] > l_day[i] then
    fail(reasons[i], to_midnight)
  end
end

if #fails > 0 then
  -- Refused: nothing is reserved. The binding check is the one with the longest wait.
  local reason, wait = fails[1][1], fails[1][2]
  for i = 2, #fails do
    if fails[i][2] > wait then reason, wait = fails[i][1], fails[i][2] end
  end
  return {0, reason, fmt(wait), fmt(rpm_used), fmt(reset_in(rpm_buckets)),
          fmt(tpm_used), fmt(reset_in(tpm_buckets)),
          fmt(used[1]), fmt(used[2]), fmt(used[3]), fmt(used[4]), fmt(used[5])}
end

-- Admitted: reserve everything at once.
local rb, kb = -1, -1
if l_rpm >= 0 and cost[1] > 0 then
  redis.call('HINCRBY', req_key, sec, cost[1])
  redis.call('EXPIRE', req_key, 2 * WINDOW)
  rpm_used = rpm_used + cost[1]
  rb = sec
end
if l_tpm >= 0 and cost[2] > 0 then
  redis.call('HINCRBY', tok_key, sec, cost[2])
  redis.call('EXPIRE', tok_key, 2 * WINDOW)
  tpm_used = tpm_used + cost[2]
  kb = sec
end
local wrote = false
for i = 1, 5 do
  if cost[i] > 0 then
    used[i] = redis.call('HINCRBY', day_key, units[i], cost[i])
    wrote = true
  end
end
if wrote then redis.call('EXPIRE', day_key, math.ceil((day + 2) * DAY - now)) end
redis.call('ZADD', conc_key, fmt(now + lease), ticket)
redis.call('EXPIRE', conc_key, math.ceil(lease) + WINDOW)
local tkey = base .. ':t:' .. ticket
redis.call('HSET', tkey, 'day', day, 'rb', rb, 'kb', kb,
           'c1', cost[1], 'c2', cost[2], 'c3', cost[3], 'c4', cost[4], 'c5', cost[5])
redis.call('EXPIRE', tkey, 2 * DAY)
local rpm_reset, tpm_reset = 0, 0
if rb >= 0 then rpm_reset = sec + WINDOW + 1 - now else rpm_reset = reset_in(rpm_buckets) end
if kb >= 0 then tpm_reset = sec + WINDOW + 1 - now else tpm_reset = reset_in(tpm_buckets) end
return {1, '', '0', fmt(rpm_used), fmt(rpm_reset), fmt(tpm_used), fmt(tpm_reset),
        fmt(used[1]), fmt(used[2]), fmt(used[3]), fmt(used[4]), fmt(used[5])}
"""

_SETTLE_LUA = r"""
-- KEYS[1]: the tenant's key base. ARGV: ticket, now ("" = server clock),
-- actual (requests, tokens, images, audio_ms, characters), interim ("1" or "0").
-- Returns 1 if settled, 0 if the ticket was unknown (settled finally already, or older
-- than two days) or, for an interim settle, settled already.
-- A final settle deletes the ticket. An interim one keeps it, marked settled ('s') with
-- the amounts it now counts in c1..c5: a final settle that comes later still corrects it
-- by the difference, once.
local base = KEYS[1]
local ticket = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local interim = ARGV[8] == '1'
local tkey = base .. ':t:' .. ticket
local rec = redis.call('HMGET', tkey, 'day', 'rb', 'kb', 'c1', 'c2', 'c3', 'c4', 'c5', 's')
if not rec[1] then return 0 end
if interim and rec[9] then return 0 end
if interim then
  redis.call('HSET', tkey, 's', '1', 'c1', ARGV[3], 'c2', ARGV[4], 'c3', ARGV[5],
             'c4', ARGV[6], 'c5', ARGV[7])
else
  redis.call('DEL', tkey)
end
redis.call('ZREM', base .. ':c', ticket)
local units = {'requests', 'tokens', 'images', 'audio_ms', 'characters'}
local delta = {}
for i = 1, 5 do delta[i] = tonumber(ARGV[2 + i]) - tonumber(rec[3 + i]) end

local day = tonumber(rec[1])
local day_key = base .. ':d:' .. day
local ttl = math.ceil((day + 2) * 86400 - now)
if ttl > 0 then
  local wrote = false
  for i = 1, 5 do
    if delta[i] ~= 0 then
      if redis.call('HINCRBY', day_key, units[i], delta[i]) < 0 then
        redis.call('HSET', day_key, units[i], 0)
      end
      wrote = true
    end
  end
  if wrote then redis.call('EXPIRE', day_key, ttl) end
end

-- Correct the minute bucket the reservation went into, if it is still in the window.
local function adjust(key, bucket, d)
  if bucket < 0 or d == 0 or redis.call('HEXISTS', key, bucket) == 0 then return end
  if redis.call('HINCRBY', key, bucket, d) <= 0 then redis.call('HDEL', key, bucket) end
end
adjust(base .. ':r', tonumber(rec[2]), delta[1])
adjust(base .. ':k', tonumber(rec[3]), delta[2])
return 1
"""

_RENEW_LUA = r"""
-- KEYS[1]: the tenant's key base. ARGV: ticket, now ("" = server clock), lease.
-- Extends an unsettled ticket's concurrency lease (re-adding it if it had lapsed: the
-- request still runs, so it still holds a slot). Returns 1, or 0 for an unknown ticket.
local base = KEYS[1]
local ticket = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local lease = tonumber(ARGV[3])
if redis.call('EXISTS', base .. ':t:' .. ticket) == 0 then return 0 end
local conc_key = base .. ':c'
redis.call('ZADD', conc_key, string.format('%.17g', now + lease), ticket)
redis.call('EXPIRE', conc_key, math.ceil(lease) + 60)
return 1
"""

_USAGE_LUA = r"""
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local day = math.floor(now / 86400)
local raw = redis.call('HMGET', KEYS[1] .. ':d:' .. day,
                       'requests', 'tokens', 'images', 'audio_ms', 'characters')
for i = 1, 5 do raw[i] = raw[i] or '0' end
return raw
"""


# The limiter's scripts: one atomic call each (kernel/lua.py).
_Script = LuaScript


def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(float(now))


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


class RedisLimiter:
    """Limits kept in Redis: exact across every queen process sharing it.

    One instance may serve several event loops: an asyncio Redis client is bound to the
    loop it was created on, so a client is made per running loop (and forgotten with it)."""

    _admit = _Script(_ADMIT_LUA)
    _settle = _Script(_SETTLE_LUA)
    _usage = _Script(_USAGE_LUA)
    _renew = _Script(_RENEW_LUA)

    def __init__(
        self,
        url: str,
        prefix: str = "rbee:lim",
        *,
        lease_s: float = LEASE_S,
        max_connections: int = 32,
        timeout: float = REDIS_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.lease_s = lease_s
        # A Redis that is down or stops answering fails a call within this, never hangs it.
        self.timeout = timeout
        # A blocking pool: a burst of requests waits for one of a bounded number of
        # connections instead of opening one each (or failing with "Too many connections").
        self.max_connections = max_connections
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def _client(self) -> Any:
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff

                pool = aioredis.BlockingConnectionPool.from_url(
                    self.url,
                    max_connections=self.max_connections,
                    timeout=self.timeout,  # waiting for a free connection
                    socket_connect_timeout=self.timeout,
                    socket_timeout=self.timeout,
                    # No silent retries: a refused admission is retried by the client.
                    retry=Retry(NoBackoff(), 0),
                    health_check_interval=30,
                    decode_responses=True,
                )
                client = aioredis.Redis.from_pool(pool)
                self._clients[loop] = client
            return client

    async def aclose(self) -> None:
        """Close this loop's client (tests and shutdown; the next call makes a new one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    async def _call(
        self, script: _Script, keys: list[str], args: list[Any], *, fail_fast: bool = True
    ) -> Any:
        """One script call; at once a ConnectionError while this Redis is taken as down
        (kernel/redis_state.py: a read on the request path just failed, here or in the
        generation counters or the channel layer), so a blackholed Redis costs a request
        one timeout, not one per read. `fail_fast=False`: ask Redis all the same (a
        settle, made once and never again: failing it at once would hold its slot and
        reservation for the whole lease though Redis may well answer)."""
        reason = redis_state.down(self.url) if fail_fast else None
        if reason is not None:
            from redis.exceptions import ConnectionError as RedisConnectionError

            raise RedisConnectionError(f"Redis is not answering ({reason})")
        try:
            return await script(self._client(), keys, args)
        except STORE_DOWN as exc:
            if redis_state.is_outage(exc):
                redis_state.failed(self.url, type(exc).__name__)
            raise

    def _base(self, tenant: str) -> str:
        # The hash tag keeps every key of a tenant on one Redis Cluster slot.
        return f"{self.prefix}:{{{tenant}}}"

    async def admit(
        self, tenant: str, limits: Limits, cost: Cost, *, now: float | None = None
    ) -> Decision:
        """Check every limit and reserve ``cost`` in one atomic script call."""
        ticket = _new_ticket()
        args: list[Any] = [_now_arg(now), ticket, repr(float(self.lease_s))]
        args += cost.amounts()
        args += _limit_args(limits)
        r = await self._call(self._admit, [self._base(tenant)], args)
        allowed = int(r[0]) == 1
        nums = [float(x) for x in r[2:]]
        return _decision(
            limits,
            allowed,
            str(r[1]),
            nums[0],
            ticket,
            (nums[1], nums[2], nums[3], nums[4]),
            (nums[5], nums[6], nums[7], nums[8], nums[9]),
        )

    async def settle(
        self,
        tenant: str,
        ticket: str,
        actual: Cost,
        *,
        now: float | None = None,
        interim: bool = False,
    ) -> None:
        """Release the slot and replace the reservation by ``actual``; a no-op if repeated.
        ``interim``: counts that may not be the last (the usage settler's, from a request's
        last heartbeat): a final settle of the ticket that comes later replaces them."""
        if not ticket:
            return
        args: list[Any] = [ticket, _now_arg(now), *actual.amounts(), "1" if interim else "0"]
        await self._call(self._settle, [self._base(tenant)], args, fail_fast=False)

    async def renew(self, tenant: str, ticket: str, *, now: float | None = None) -> bool:
        """Extend the concurrency lease of a request still running (a job longer than the
        lease would otherwise lose its slot, and one an interim settle freed takes it back);
        False if the ticket is settled finally, or unknown."""
        if not ticket:
            return False
        args: list[Any] = [ticket, _now_arg(now), repr(float(self.lease_s))]
        return int(await self._call(self._renew, [self._base(tenant)], args)) == 1

    async def usage(self, tenant: str, *, now: float | None = None) -> dict[str, float]:
        """Today's (UTC) used + reserved amounts."""
        r = await self._call(self._usage, [self._base(tenant)], [_now_arg(now)])
        a, b, c, d, e = (float(x) for x in r)
        return _usage_dict((a, b, c, d, e))

    async def reset(self, tenant: str) -> None:
        """Forget everything about ``tenant`` (tests, admin)."""
        client = self._client()
        pattern = _glob_escape(self._base(tenant)) + ":*"
        batch: list[str] = []
        async for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)


# --------------------------------------------------------------------------- local


@dataclass
class _Ticket:
    day: int
    rb: int  # the requests-window bucket it was counted in, -1 if none
    kb: int  # the tokens-window bucket, -1 if none
    cost: tuple[int, int, int, int, int]  # what it counts: its reservation, or what an
    created: float  # interim settle replaced that with (then `settled`)
    settled: bool = False


@dataclass
class _TenantState:
    req: dict[int, int] = field(default_factory=dict)  # second -> requests (sliding log)
    tok: dict[int, int] = field(default_factory=dict)  # second -> tokens
    days: dict[int, list[int]] = field(default_factory=dict)  # UTC day -> amounts per unit
    conc: dict[str, float] = field(default_factory=dict)  # in-flight ticket -> lease expiry
    tickets: dict[str, _Ticket] = field(default_factory=dict)


def _window(log: dict[int, int], oldest: int) -> tuple[int, list[tuple[int, int]]]:
    for b in [b for b in log if b < oldest]:
        del log[b]
    buckets = sorted(log.items())
    return sum(v for _, v in buckets), buckets


def _wait_for(total: int, buckets: list[tuple[int, int]], c: int, limit: int, now: float) -> float:
    need = total + c - limit
    if need <= 0:
        return 0.0
    if c > limit:
        return float(WINDOW_S)
    freed = 0
    for b, v in buckets:
        freed += v
        if freed >= need:
            return b + WINDOW_S + 1 - now
    return float(WINDOW_S)


def _reset_in(buckets: list[tuple[int, int]], now: float) -> float:
    return buckets[-1][0] + WINDOW_S + 1 - now if buckets else 0.0


class LocalLimiter:
    """The same algorithm as RedisLimiter, in this process's memory (the embedded default).

    One lock around each decision; nothing inside it awaits, so the decision is atomic for
    asyncio tasks and threads. Old windows, days, leases and tickets are pruned when the
    tenant is next seen."""

    def __init__(self, *, lease_s: float = LEASE_S) -> None:
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._tenants: dict[str, _TenantState] = {}

    def _state(self, tenant: str, now: float) -> _TenantState:
        st = self._tenants.get(tenant)
        if st is None:
            st = self._tenants[tenant] = _TenantState()
            return st
        day = math.floor(now / DAY_S)
        for d in [d for d in st.days if d < day - 1]:
            del st.days[d]
        for t in [t for t, exp in st.conc.items() if exp <= now]:
            del st.conc[t]
        for t in [t for t, rec in st.tickets.items() if rec.created + DAY_KEY_TTL_S <= now]:
            del st.tickets[t]
        return st

    async def admit(
        self, tenant: str, limits: Limits, cost: Cost, *, now: float | None = None
    ) -> Decision:
        """Check every limit and reserve ``cost``, all or nothing, under the lock."""
        now = time.time() if now is None else float(now)
        c = cost.amounts()
        l_rpm, l_tpm, l_conc, *l_day = _limit_args(limits)
        sec = math.floor(now)
        oldest = sec - WINDOW_S
        day = math.floor(now / DAY_S)
        ticket = _new_ticket()
        with self._lock:
            st = self._state(tenant, now)
            fails: list[tuple[str, float]] = []
            if l_conc >= 0 and len(st.conc) + 1 > l_conc:
                fails.append(("concurrency", CONCURRENCY_RETRY_S))
            rpm_used, rpm_b = _window(st.req, oldest) if l_rpm >= 0 else (0, [])
            if l_rpm >= 0 and c[0] > 0 and rpm_used + c[0] > l_rpm:
                fails.append(("rate_limit_requests", _wait_for(rpm_used, rpm_b, c[0], l_rpm, now)))
            tpm_used, tpm_b = _window(st.tok, oldest) if l_tpm >= 0 else (0, [])
            if l_tpm >= 0 and c[1] > 0 and tpm_used + c[1] > l_tpm:
                fails.append(("rate_limit_tokens", _wait_for(tpm_used, tpm_b, c[1], l_tpm, now)))
            used = st.days.get(day, [0, 0, 0, 0, 0])
            to_midnight = (day + 1) * DAY_S - now
            for i, unit_reason in enumerate(_REASON_ORDER[3:]):
                if l_day[i] >= 0 and (i == 0 or c[i] > 0) and used[i] + c[i] > l_day[i]:
                    fails.append((unit_reason, to_midnight))
            if fails:
                reason, wait = fails[0]
                for r, w in fails[1:]:
                    if w > wait:
                        reason, wait = r, w
                return _decision(
                    limits,
                    False,
                    reason,
                    wait,
                    "",
                    (rpm_used, _reset_in(rpm_b, now), tpm_used, _reset_in(tpm_b, now)),
                    (used[0], used[1], used[2], used[3], used[4]),
                )
            rb = kb = -1
            rpm_reset, tpm_reset = _reset_in(rpm_b, now), _reset_in(tpm_b, now)
            if l_rpm >= 0 and c[0] > 0:
                st.req[sec] = st.req.get(sec, 0) + c[0]
                rpm_used += c[0]
                rb = sec
                rpm_reset = sec + WINDOW_S + 1 - now
            if l_tpm >= 0 and c[1] > 0:
                st.tok[sec] = st.tok.get(sec, 0) + c[1]
                tpm_used += c[1]
                kb = sec
                tpm_reset = sec + WINDOW_S + 1 - now
            used = st.days.setdefault(day, [0, 0, 0, 0, 0])
            for i in range(5):
                used[i] += c[i]
            st.conc[ticket] = now + self.lease_s
            st.tickets[ticket] = _Ticket(day=day, rb=rb, kb=kb, cost=c, created=now)
            return _decision(
                limits,
                True,
                "",
                0.0,
                ticket,
                (rpm_used, rpm_reset, tpm_used, tpm_reset),
                (used[0], used[1], used[2], used[3], used[4]),
            )

    async def settle(
        self,
        tenant: str,
        ticket: str,
        actual: Cost,
        *,
        now: float | None = None,
        interim: bool = False,
    ) -> None:
        """Release the slot and replace the reservation by ``actual``; a no-op if repeated.
        ``interim``: as for RedisLimiter.settle."""
        a = actual.amounts()
        with self._lock:
            st = self._tenants.get(tenant)
            if st is None:
                return
            rec = st.tickets.get(ticket)
            if rec is None or (interim and rec.settled):
                return
            if interim:
                st.tickets[ticket] = _Ticket(
                    day=rec.day, rb=rec.rb, kb=rec.kb, cost=a, created=rec.created, settled=True
                )
            else:
                del st.tickets[ticket]
            st.conc.pop(ticket, None)
            delta = [a[i] - rec.cost[i] for i in range(5)]
            used = st.days.get(rec.day)
            if used is None and any(delta):
                now = time.time() if now is None else float(now)
                if (rec.day + 2) * DAY_S > now:
                    used = st.days.setdefault(rec.day, [0, 0, 0, 0, 0])
            if used is not None:
                for i in range(5):
                    used[i] = max(0, used[i] + delta[i])
            for log, bucket, d in ((st.req, rec.rb, delta[0]), (st.tok, rec.kb, delta[1])):
                if bucket >= 0 and d and bucket in log:
                    log[bucket] += d
                    if log[bucket] <= 0:
                        del log[bucket]

    async def renew(self, tenant: str, ticket: str, *, now: float | None = None) -> bool:
        """Extend the concurrency lease of a request still running; False if the ticket is
        settled finally, or unknown."""
        now = time.time() if now is None else float(now)
        with self._lock:
            st = self._tenants.get(tenant)
            if st is None or ticket not in st.tickets:
                return False
            st.conc[ticket] = now + self.lease_s
            return True

    async def usage(self, tenant: str, *, now: float | None = None) -> dict[str, float]:
        """Today's (UTC) used + reserved amounts."""
        now = time.time() if now is None else float(now)
        day = math.floor(now / DAY_S)
        with self._lock:
            st = self._tenants.get(tenant)
            used = list(st.days.get(day, [0, 0, 0, 0, 0])) if st else [0, 0, 0, 0, 0]
        return _usage_dict((used[0], used[1], used[2], used[3], used[4]))

    async def reset(self, tenant: str) -> None:
        """Forget everything about ``tenant`` (tests, admin)."""
        with self._lock:
            self._tenants.pop(tenant, None)


# --------------------------------------------------------------------------- selection

_cache_lock = threading.Lock()
_cache: dict[tuple[int, str], Limiter] = {}


def get_limiter() -> Limiter:
    """The process's limiter: Redis when settings.REDIS_URL is set (exact across replicas),
    else one LocalLimiter per process. Cached per process and URL; the Redis limiter makes
    one client per event loop itself."""
    from django.conf import settings

    url = str(getattr(settings, "REDIS_URL", "") or "")
    lease = float(getattr(settings, "RBEE_CONCURRENCY_LEASE_SECONDS", LEASE_S))
    timeout = float(getattr(settings, "RBEE_REDIS_TIMEOUT", REDIS_TIMEOUT_S))
    # Deployments sharing one Redis keep their counters apart (tenant ids repeat).
    prefix = str(getattr(settings, "RBEE_LIMITS_PREFIX", "") or "rbee:lim")
    key = (os.getpid(), f"{url}|{prefix}|{lease}|{timeout}")
    with _cache_lock:
        limiter = _cache.get(key)
        if limiter is None:
            limiter = (
                RedisLimiter(url, prefix=prefix, lease_s=lease, timeout=timeout)
                if url
                else LocalLimiter(lease_s=lease)
            )
            _cache[key] = limiter
        return limiter

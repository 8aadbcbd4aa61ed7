"""The shared bucket in Redis: a sorted set of token times and a key holding the block.

Two Lua scripts do the check-and-take and the server feedback atomically, on the Redis server's clock (one
clock for every machine). ``redis`` is an optional dependency (the ``redis`` extra), imported only when a
connection names a ``redis://`` backend.
"""

from __future__ import annotations

import time
import uuid

from connectif_provider.ratelimit.common import USAGE_KEEP_MINUTES, RateLimitDecision, block_seconds

#: Both scripts start alike: the Redis server's clock (one clock for every machine) and the bucket's shape.
_LUA_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
"""

_ACQUIRE_LUA = _LUA_PRELUDE + """redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then
  return {tostring(blocked - now), count, '-1'}
end
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 60000)
  return {'0', count + 1, tostring(now)}
end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {tostring(tonumber(oldest[2]) + window - now), count, '-1'}
"""

_FEEDBACK_LUA = _LUA_PRELUDE + """local mode = ARGV[3]
if mode == 'block' then
  local untilv = now + tonumber(ARGV[4])
  local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
  if untilv > blocked then
    redis.call('SET', KEYS[2], tostring(untilv), 'PX', math.ceil((untilv - now) * 1000) + 1000)
  end
  return 0
end
local remaining = tonumber(ARGV[4])
local reset_in = math.min(tonumber(ARGV[5]), window)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local deficit = (limit - count) - math.max(remaining, 0)
for i = 1, deficit do
  redis.call('ZADD', KEYS[1], now + reset_in - window, ARGV[6] .. ':' .. i)
end
if deficit > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 60000)
end
return math.max(deficit, 0)
"""


class RedisBucket:
    """The same bucket as :class:`~connectif_provider.ratelimit.sql.SqlBucket`, kept in Redis."""

    def __init__(self, url: str, bucket: str, limit: int, window: float) -> None:
        import redis  # the optional ``redis`` extra: only deployments with a redis:// backend need it

        self._client = redis.Redis.from_url(url)
        self._tokens = f"connectif:rate-limit:{bucket}:tokens"
        self._blocked = f"connectif:rate-limit:{bucket}:blocked"
        self._usage_prefix = f"connectif:rate-limit:{bucket}:usage"
        self._limit = limit
        self._window = window
        self._acquire = self._client.register_script(_ACQUIRE_LUA)
        self._feedback = self._client.register_script(_FEEDBACK_LUA)

    def try_acquire(self) -> RateLimitDecision:
        wait, count, stamp = self._acquire(
            keys=[self._tokens, self._blocked], args=[self._window, self._limit, uuid.uuid4().hex]
        )
        taken_at = float(stamp)
        decision = RateLimitDecision(
            wait=float(wait), in_window=int(count), taken_at=None if taken_at < 0 else taken_at
        )
        if decision.wait == 0:
            self._count_usage(requests=1)
        return decision

    def block(self, retry_after: float | None, reset_at: float | None) -> None:
        seconds = block_seconds(time.time(), retry_after, reset_at)
        self._feedback(keys=[self._tokens, self._blocked], args=[self._window, self._limit, "block", seconds])
        self._count_usage(limited=1)

    def shrink(self, remaining: int, reset_at: float) -> int:
        reset_in = reset_at - time.time()
        if reset_in <= 0:
            return 0
        args: list[str | int | float] = [self._window, self._limit, "shrink", remaining, reset_in, uuid.uuid4().hex]
        return int(self._feedback(keys=[self._tokens, self._blocked], args=args))

    def in_window(self) -> int:
        now = time.time()
        return int(self._client.zcount(self._tokens, now - self._window, "+inf"))

    def _usage_key(self, minute: int) -> str:
        return f"{self._usage_prefix}:{minute}"

    def _count_usage(self, *, requests: int = 0, limited: int = 0) -> None:
        key = self._usage_key(int(time.time() // 60))
        pipe = self._client.pipeline()
        if requests:
            pipe.hincrby(key, "requests", requests)
        if limited:
            pipe.hincrby(key, "limited", limited)
        pipe.expire(key, USAGE_KEEP_MINUTES * 60)
        pipe.execute()

    def usage(self, first: int, last: int) -> dict[int, tuple[int, int]]:
        pipe = self._client.pipeline()
        minutes = list(range(first, last + 1))
        for m in minutes:
            pipe.hgetall(self._usage_key(m))
        out: dict[int, tuple[int, int]] = {}
        for m, h in zip(minutes, pipe.execute(), strict=True):
            if h:
                out[m] = (int(h.get(b"requests", 0)), int(h.get(b"limited", 0)))
        return out

    def reset(self) -> None:
        self._client.delete(self._tokens, self._blocked)

"""The guards' Lua scripts. Each runs atomically inside Redis, so every worker on every host sees one
consistent breaker, bucket and execution record, and each side of a call costs one round trip.

KEYS (ADMIT and SETTLE): 1 run record, 2 breaker, 3 breaker failures, 4 breaker history, 5 rate bucket,
6 stats, 7 breaker probes, 8 metrics (SETTLE only), 9 the action's cancel mark (ADMIT only; workers.cancel),
then the limits' keys (below).
Times come from Redis' own clock (TIME), not the workers' clocks.

Limits (issue 14, workers.guards.limits): the LAST KEYS and ARGV of ADMIT and SETTLE, found from the end
(ARGV[#ARGV] is their count), so that keys added after the eighth by other work do not move them. ADMIT checks the
platform's bucket, then each key's bucket and concurrency leases, and takes all or none; SETTLE gives the leases
back and, after a 429, pauses the action's buckets for every worker. The blocks are marked BEGIN/END limits.

Half-open probe slots are leases, not a counter: KEYS[7] is a sorted set of the probing attempts' tokens
scored by when their lease ends (now + lease_s). A probe that never settles (its worker was SIGKILLed,
or any path skipped settle) frees its slot when its lease runs out instead of holding the breaker in
half_open for good. Every transition clears the set.
"""

from __future__ import annotations

_COMMON = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
local function transition(to, reason, hist_max)
  local from = redis.call('HGET', KEYS[2], 'state') or 'closed'
  redis.call('HSET', KEYS[2], 'state', to, 'changed_at', fmt(now))
  redis.call('LPUSH', KEYS[4], cjson.encode({at = fmt(now), from = from, to = to, reason = reason}))
  redis.call('LTRIM', KEYS[4], 0, hist_max - 1)
  -- The probes of the state being left no longer count (HDEL: the counter of older versions).
  redis.call('DEL', KEYS[7])
  redis.call('HDEL', KEYS[2], 'inflight')
end
"""

# ARGV: 1 owner token, 2 lease_s (of the run record and of a probe slot), 3 ttl_s, 4 open_s, 5 half_open_max,
#       6 rate, 7 burst, 8 fail_fast, 9 attempt, 10 history_max, 11 the action's deadline (Unix time; '' none)
# Limits, last (workers.guards.redis_guard._limit_call): KEYS ..., config hash, waiting index, one key per limit;
#       ARGV ..., the worker's config version, 5 per limit (type r|c, rate|max, burst, kind, label), their number.
# Returns {verdict, detail, probe, reconcile}: run | done (result) | failed (error) | busy (wait) | open (wait)
#         | half_open_busy (wait) | rate_limited (wait) | concurrency_limited (wait) | open_fail (wait)
#         | cancelled (who and why, JSON) | expired (the deadline)
#         | stale (the config version, the config: the worker's limits are out of date; nothing was taken).
# For run, `reconcile` is 1 when an earlier attempt may have acted without its answer arriving (its lease ran
# out while it was `running`: its worker died; or it settled as ambiguous): the caller looks the effect up
# before calling, from `detail`, the time that earlier attempt started.
ADMIT = _COMMON + r"""
local token = ARGV[1]
local lease_s, ttl_s = tonumber(ARGV[2]), tonumber(ARGV[3])
local open_s, half_open_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local rate, burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local fail_fast, hist_max = ARGV[8] == '1', tonumber(ARGV[10])

-- 1. Idempotency: a finished action is never run again; a live lease elsewhere means "running there".
local run = redis.call('HMGET', KEYS[1], 'state', 'owner', 'lease_until', 'result', 'error', 'first_started',
                      'ambiguous')
if run[1] == 'done' then redis.call('HINCRBY', KEYS[6], 'duplicates_done', 1); return {'done', run[4] or '{}', 0} end
if run[1] == 'failed' then
  redis.call('HINCRBY', KEYS[6], 'duplicates_failed', 1)
  return {'failed', run[5] or '{}', 0}
end
if run[1] == 'running' and run[2] ~= token and (tonumber(run[3]) or 0) > now then
  redis.call('HINCRBY', KEYS[6], 'busy_waits', 1)
  return {'busy', fmt(tonumber(run[3]) - now), 0}
end

-- 1b. Cancelled, or past its deadline: not called now, in the round trip the attempt makes anyway. After the
-- checks above: a duplicate of a finished action still answers from its record, and one running elsewhere
-- finishes its call (a cancel does not interrupt a call in flight). A deadline stops only an attempt that
-- would start clean: one that must first look up an earlier attempt's effect (the record says it may have
-- acted) goes on, since that effect may exist.
if KEYS[9] then
  local cancel = redis.call('GET', KEYS[9])
  if cancel then
    redis.call('HINCRBY', KEYS[6], 'cancelled', 1)
    return {'cancelled', cancel, 0, run[1] and 1 or 0}
  end
end
if ARGV[11] and ARGV[11] ~= '' and not run[1] and now >= tonumber(ARGV[11]) then
  redis.call('HINCRBY', KEYS[6], 'expired', 1)
  return {'expired', ARGV[11], 0}
end

-- 2. Circuit breaker.
local cb = redis.call('HMGET', KEYS[2], 'state', 'opened_at', 'forced')
local state = cb[1] or 'closed'
local probe = 0
if state == 'open' then
  local ready_at = (tonumber(cb[2]) or now) + open_s
  if cb[3] == '1' or now < ready_at then
    local wait = open_s
    if cb[3] ~= '1' then wait = ready_at - now end
    redis.call('HINCRBY', KEYS[6], 'breaker_waits', 1)
    if fail_fast then return {'open_fail', fmt(wait), 0} end
    return {'open', fmt(wait), 0}
  end
  transition('half_open', 'cool-down of ' .. ARGV[4] .. 's elapsed', hist_max)
  state = 'half_open'
end
if state == 'half_open' then
  -- Probes whose lease ran out without a settle (their worker died) give their slot back.
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
  if redis.call('ZCARD', KEYS[7]) >= half_open_max then
    redis.call('HINCRBY', KEYS[6], 'breaker_waits', 1)
    if fail_fast then return {'open_fail', fmt(open_s), 0} end
    return {'half_open_busy', fmt(math.max(0.2, math.min(open_s / 5, 2))), 0}
  end
  probe = 1
end

-- 3. Limits (issue 14) ---------------------------------------------------------------------------- BEGIN limits
-- The platform's token bucket (KEYS[5]), then each key's bucket and leases: every one is checked before any is
-- taken (below), so an action short of one key's token takes nothing from the others. A bucket refills
-- continuously at `rate` per second up to `burst`; `paused_until` is a 429's Retry-After (SETTLE), for every worker.
local n_lim = tonumber(ARGV[#ARGV])
local a_lim = #ARGV - 1 - 5 * n_lim   -- ARGV[a_lim]: the config version the worker's limits come from
local k_lim = #KEYS - n_lim - 2       -- KEYS[k_lim + 1]: config hash, + 2: waiting index, + 2 + i: limit i
local version = redis.call('HGET', KEYS[k_lim + 1], 'version') or '0'
if version ~= ARGV[a_lim] then return {'stale', version, redis.call('HGETALL', KEYS[k_lim + 1])} end
local wait, conc_only, blocked = 0, true, {}
local function hold(w, key, kind, label, why)
  if w > wait then wait = w end
  if why ~= 'concurrency' then conc_only = false end
  blocked[#blocked + 1] = {w, key, kind, label, why}
end
local function refill(b, r, cap)  -- tokens now, from the bucket's last write
  local ts = tonumber(b[2]) or now
  return math.min(cap, (tonumber(b[1]) or cap) + math.max(0, now - ts) * r)
end
local pb = redis.call('HMGET', KEYS[5], 'tokens', 'ts', 'paused_until')
if (tonumber(pb[3]) or 0) > now then hold(tonumber(pb[3]) - now, KEYS[5], 'platform', '', 'pause') end
local tokens = nil
if rate > 0 then
  tokens = refill(pb, rate, burst)
  if tokens < 1 then hold((1 - tokens) / rate, KEYS[5], 'platform', '', 'rate') end
end
local key_tokens = {}
for i = 1, n_lim do
  local key, a = KEYS[k_lim + 2 + i], a_lim + 5 * (i - 1)
  local kind, label = ARGV[a + 4], ARGV[a + 5]
  if ARGV[a + 1] == 'r' then
    local r, cap = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local b = redis.call('HMGET', key, 'tokens', 'ts', 'paused_until')
    key_tokens[i] = refill(b, r, cap)
    if (tonumber(b[3]) or 0) > now then hold(tonumber(b[3]) - now, key, kind, label, 'pause') end
    if key_tokens[i] < 1 then hold((1 - key_tokens[i]) / r, key, kind, label, 'rate') end
  else
    -- Leases whose worker died (never settled) stop counting once they end, as the probe slots do.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= tonumber(ARGV[a + 2]) then
      -- A lease usually ends at its settle, long before it expires: ask again soon, not at the expiry.
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      hold(math.max(0.05, math.min(0.25, tonumber(first[2]) - now)), key, kind, label, 'concurrency')
    end
  end
end
if wait > 0 then
  local verdict = 'rate_limited'
  if conc_only then verdict = 'concurrency_limited'; redis.call('HINCRBY', KEYS[6], 'concurrency_waits', 1)
  else redis.call('HINCRBY', KEYS[6], 'rate_waits', 1) end
  -- What `opsq ratelimit status` lists as waiting, and the metrics count, by kind of key (never the key).
  for _, h in ipairs(blocked) do
    redis.call('HINCRBY', KEYS[6], 'keywaits|' .. h[3] .. '|' .. h[5], 1)
    if h[3] ~= 'platform' then redis.call('ZADD', KEYS[k_lim + 2], now + h[1], h[2] .. '|' .. h[3] .. '|' .. h[4]) end
  end
  if #blocked > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k_lim + 2], '-inf', now - 60)
    redis.call('EXPIRE', KEYS[k_lim + 2], 3600)
  end
  return {verdict, fmt(wait), 0}
end
-- ------------------------------------------------------------------------------------------------ END limits

-- All checks passed: take the probe slot, the token and the lease together.
if probe == 1 then
  redis.call('ZADD', KEYS[7], now + lease_s, token)
  redis.call('EXPIRE', KEYS[7], math.ceil(lease_s) + 1)
end
-- Limits (issue 14) -------------------------------------------------------------------------------- BEGIN limits
if tokens then
  redis.call('HSET', KEYS[5], 'tokens', fmt(tokens - 1), 'ts', fmt(now))
  redis.call('EXPIRE', KEYS[5], math.ceil(burst / rate) + 60)
end
for i = 1, n_lim do
  local key, a = KEYS[k_lim + 2 + i], a_lim + 5 * (i - 1)
  if ARGV[a + 1] == 'r' then
    redis.call('HSET', key, 'tokens', fmt(key_tokens[i] - 1), 'ts', fmt(now))
    -- Idle keys vanish: a full bucket is what a missing one means.
    redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[a + 3]) / tonumber(ARGV[a + 2])) + 60)
  else
    redis.call('ZADD', key, now + lease_s, token)
    redis.call('EXPIRE', key, math.ceil(lease_s) + 1)
  end
end
-- ------------------------------------------------------------------------------------------------ END limits
-- An attempt that may have acted before this one (its lease ran out while running: its worker died; or it
-- settled as ambiguous) makes this one reconcile first, and every later one too (the flag is sticky).
local reconcile = 0
if run[1] == 'running' or run[1] == 'ambiguous' or run[7] == '1' then reconcile = 1 end
local first = run[6] or fmt(now)
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', token, 'lease_until', fmt(now + lease_s),
           'attempt', ARGV[9], 'started', fmt(now), 'first_started', first)
if reconcile == 1 then redis.call('HSET', KEYS[1], 'ambiguous', '1') end
redis.call('EXPIRE', KEYS[1], ttl_s)
if reconcile == 1 then return {'run', first, probe, 1} end
return {'run', '', probe, 0}
"""

# ARGV: 1 owner token, 2 ok, 3 health_failure, 4 probe, 5 payload (result or error JSON), 6 final,
#       7 ttl_s, 8 failure_threshold, 9 window_s, 10 history_max, 11 error kind, 12 ambiguous (the failure may
#       have acted: the record is kept, as `ambiguous`, for the next attempt to reconcile), 13 the action's
#       outcome channel (keys.outcome_channel), 14 the metrics series ("platform|action"; empty: none),
#       15/16 the platform call's duration bucket index and seconds, 17/18 the whole attempt's, 19 reconciled
# Limits, last (workers.guards.redis_guard._settle_tail): KEYS ..., waiting index, one key per limit; ARGV ..., pause_s,
#       3 per key (type l: a concurrency lease to give back | p: a bucket to pause; kind; label), their number.
# KEYS[8]: the metrics hash (keys.metrics): the attempt's outcome and durations are counted here, in the
# settle's own round trip, so metrics cost the hot path nothing more (workers.observability.metrics).
# Returns the breaker state after this outcome.
# A success is published on the outcome channel in the same round trip: whoever waits for the action
# (workers.waiting) has it the moment Redis does. A final failure is published by the worker after the
# database has it (workers.tasks), since the failure's record there (dead letter or not) is what a waiter reads.
SETTLE = _COMMON + r"""
local token, ok, health, probe = ARGV[1], ARGV[2] == '1', ARGV[3] == '1', ARGV[4] == '1'
local ttl_s, threshold, window_s, hist_max = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
  tonumber(ARGV[10])

if probe then redis.call('ZREM', KEYS[7], token) end
local state = redis.call('HGET', KEYS[2], 'state') or 'closed'
redis.call('HINCRBY', KEYS[6], 'calls', 1)

-- Limits (issue 14) -------------------------------------------------------------------------------- BEGIN limits
-- This attempt's concurrency leases are given back. After a 429 (pause_s > 0: its Retry-After), the action's
-- buckets are paused for every worker until then: ADMIT answers rate_limited meanwhile. A pause is never shortened.
local n_lim = tonumber(ARGV[#ARGV])
local a_lim = #ARGV - 1 - 3 * n_lim
local k_lim = #KEYS - n_lim - 1
local pause = tonumber(ARGV[a_lim]) or 0
for i = 1, n_lim do
  local key, a = KEYS[k_lim + 1 + i], a_lim + 3 * (i - 1)
  if ARGV[a + 1] == 'l' then
    redis.call('ZREM', key, token)
  elseif pause > 0 then
    local until_ts = now + pause
    if (tonumber(redis.call('HGET', key, 'paused_until')) or 0) < until_ts then
      redis.call('HSET', key, 'paused_until', fmt(until_ts))
    end
    if redis.call('TTL', key) < math.ceil(pause) + 60 then redis.call('EXPIRE', key, math.ceil(pause) + 60) end
    redis.call('HINCRBY', KEYS[6], 'pauses|' .. ARGV[a + 2], 1)
    if ARGV[a + 2] ~= 'platform' then
      redis.call('ZADD', KEYS[k_lim + 1], until_ts, key .. '|' .. ARGV[a + 2] .. '|' .. ARGV[a + 3])
      redis.call('EXPIRE', KEYS[k_lim + 1], 3600)
    end
  end
end
-- ------------------------------------------------------------------------------------------------ END limits

if KEYS[8] and ARGV[14] and ARGV[14] ~= '' then
  local series = ARGV[14]
  local outcome, kind = 'succeeded', ''
  if not ok then
    kind = ARGV[11]
    if ARGV[6] == '1' then outcome = 'failed' else outcome = 'retried' end
  end
  redis.call('HINCRBY', KEYS[8], 'attempts|' .. series .. '|' .. outcome .. '|' .. kind, 1)
  if ARGV[15] ~= '' then
    redis.call('HINCRBY', KEYS[8], 'call|' .. series .. '|' .. ARGV[15], 1)
    redis.call('HINCRBYFLOAT', KEYS[8], 'call_sum|' .. series, ARGV[16])
  end
  if ARGV[17] ~= '' then
    redis.call('HINCRBY', KEYS[8], 'attempt|' .. series .. '|' .. ARGV[17], 1)
    redis.call('HINCRBYFLOAT', KEYS[8], 'attempt_sum|' .. series, ARGV[18])
  end
  if ARGV[19] == '1' then redis.call('HINCRBY', KEYS[8], 'reconciled|' .. series, 1) end
end

if ok then
  redis.call('HSET', KEYS[1], 'state', 'done', 'result', ARGV[5], 'finished', fmt(now))
  redis.call('HDEL', KEYS[1], 'lease_until')
  redis.call('EXPIRE', KEYS[1], ttl_s)
  redis.call('HINCRBY', KEYS[6], 'ok', 1)
  if ARGV[13] and ARGV[13] ~= '' then redis.call('PUBLISH', ARGV[13], 'done') end
  if probe and state == 'half_open' then
    transition('closed', 'probe succeeded', hist_max)
    redis.call('DEL', KEYS[3])
    state = 'closed'
  end
  return state
end

redis.call('HINCRBY', KEYS[6], 'failed', 1)
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[5], 'finished', fmt(now))
  redis.call('HDEL', KEYS[1], 'lease_until')
  redis.call('EXPIRE', KEYS[1], ttl_s)
elseif redis.call('HGET', KEYS[1], 'owner') == token then
  if ARGV[12] == '1' or redis.call('HGET', KEYS[1], 'ambiguous') == '1' then
    -- The effect may exist: keep the record (free of its lease) so the retry looks it up first.
    redis.call('HSET', KEYS[1], 'state', 'ambiguous', 'ambiguous', '1')
    redis.call('HDEL', KEYS[1], 'lease_until', 'owner')
    redis.call('EXPIRE', KEYS[1], ttl_s)
  else
    -- Give the claim up so the retry (a new message) can take it.
    redis.call('DEL', KEYS[1])
  end
end

if health then
  redis.call('HINCRBY', KEYS[6], 'health_failures', 1)
  if state == 'half_open' and probe then
    transition('open', 'probe failed (' .. ARGV[11] .. ')', hist_max)
    redis.call('HSET', KEYS[2], 'opened_at', fmt(now))
    state = 'open'
  elseif state == 'closed' then
    redis.call('ZADD', KEYS[3], now, token .. ':' .. fmt(now))
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window_s)
    redis.call('EXPIRE', KEYS[3], math.ceil(window_s) + 1)
    local n = redis.call('ZCARD', KEYS[3])
    if n >= threshold then
      transition('open', n .. ' failures within ' .. ARGV[9] .. 's (last: ' .. ARGV[11] .. ')', hist_max)
      redis.call('HSET', KEYS[2], 'opened_at', fmt(now))
      redis.call('DEL', KEYS[3])
      state = 'open'
    end
  end
end
return state
"""

# An admission taken back before any call (workers.guards.redis_guard: its claim reached no replica in time).
# KEYS: 1 run record, 2 breaker probes, then its concurrency leases (issue 14). ARGV: 1 owner token, 2 ttl_s.
# The record goes back to what the next attempt needs: gone, or `ambiguous` when an earlier attempt may have acted
# (ADMIT kept that flag).
RELEASE_RUN = r"""
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
local run = redis.call('HMGET', KEYS[1], 'state', 'owner', 'ambiguous')
if run[1] ~= 'running' or run[2] ~= ARGV[1] then return 0 end
if run[3] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'ambiguous')
  redis.call('HDEL', KEYS[1], 'lease_until', 'owner')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS: 1 idempotency key. ARGV: 1 action id, 2 ttl_s. Returns the first action's id, or nil if ours won.
CLAIM_KEY = r"""
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""

# KEYS: 1 idempotency key (or the beat leader lock). ARGV: 1 action id (or lock token). Deletes the key only if
# it still holds that value.
RELEASE_KEY = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# An operator's transition. KEYS: 1 breaker, 2 failures, 3 history, 4 probes.
# ARGV: 1 target state (closed | open), 2 reason, 3 history_max. Returns the state it left.
FORCE = r"""
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local from = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] == 'open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'changed_at', now, 'forced', '1')
else
  redis.call('HSET', KEYS[1], 'state', 'closed', 'changed_at', now, 'forced', '0')
  redis.call('HDEL', KEYS[1], 'opened_at')
end
redis.call('HDEL', KEYS[1], 'inflight')
redis.call('DEL', KEYS[2], KEYS[4])
redis.call('LPUSH', KEYS[3], cjson.encode({at = now, from = from, to = ARGV[1], reason = ARGV[2]}))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
return from
"""

-- Decides a login attempt against a tenant's limits in one atomic step and,
-- when allowed, reserves it: the attempt counts as a failure until it
-- succeeds, so concurrent guesses cannot slip past a limit while their
-- passwords hash. Sliding-window logs (exact), plus exponential backoff on
-- the username. Every key is in the tenant's hash slot (the client IP's
-- window, shared by all tenants, is throttle_ip.lua's).
-- KEYS[1] pair zset (username, client IP bucket)   KEYS[2] username zset
-- KEYS[3] tenant zset                               KEYS[4] lockout index zset
-- KEYS[5] pair lock details (string)                KEYS[6] username lock details (string)
-- ARGV[1] now ms  ARGV[2] attempt id (the member of every window: each
--   failure counts, from however many addresses it comes)
-- ARGV[3] pair max  ARGV[4] pair window ms
-- ARGV[5] user max  ARGV[6] user window ms  ARGV[7] user free failures
-- ARGV[8] backoff base ms  ARGV[9] backoff cap ms
-- ARGV[10] known device (1 = skip the username limit and the tenant ceiling:
--   a flood against the tenant or the username cannot lock out a device the
--   user signed in from before)
-- ARGV[11] tenant max  ARGV[12] tenant window ms
-- ARGV[13] pair lock id  ARGV[14] user lock id  ARGV[15] pair details  ARGV[16] user details
-- Returns {allowed (1/0), retry_after_ms, limit ('pair'|'username'|'tenant'|'')}
local now, id = tonumber(ARGV[1]), ARGV[2]
local pair_max, pair_window = tonumber(ARGV[3]), tonumber(ARGV[4])
local user_max, user_window, user_free = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local base, cap = tonumber(ARGV[8]), tonumber(ARGV[9])
local known_device = ARGV[10] == '1'
local tenant_max, tenant_window = tonumber(ARGV[11]), tonumber(ARGV[12])

local function lock(member, details_key, details, until_ms)
  redis.call('ZADD', KEYS[4], until_ms, member)
  redis.call('PEXPIRE', KEYS[4], math.max(user_window, pair_window))
  redis.call('SET', details_key, details, 'PX', math.max(until_ms - now, 1))
end

local function oldest_until(key, window)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - pair_window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - user_window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tenant_window)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)

if redis.call('ZCARD', KEYS[1]) >= pair_max then
  local until_ms = oldest_until(KEYS[1], pair_window)
  lock(ARGV[13], KEYS[5], ARGV[15], until_ms)
  return {0, math.max(until_ms - now, 1), 'pair'}
end

if not known_device then
  local user_count = redis.call('ZCARD', KEYS[2])
  if user_count >= user_max then
    local until_ms = oldest_until(KEYS[2], user_window)
    lock(ARGV[14], KEYS[6], ARGV[16], until_ms)
    return {0, math.max(until_ms - now, 1), 'username'}
  end
  if user_count >= user_free and user_count > 0 then
    local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
    local gap = math.min(base * (2 ^ (user_count - user_free)), cap)
    local until_ms = tonumber(newest[2]) + gap
    if now < until_ms then
      lock(ARGV[14], KEYS[6], ARGV[16], until_ms)
      return {0, math.max(until_ms - now, 1), 'username'}
    end
  end
  if redis.call('ZCARD', KEYS[3]) >= tenant_max then
    return {0, math.max(oldest_until(KEYS[3], tenant_window) - now, 1), 'tenant'}
  end
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('PEXPIRE', KEYS[3], tenant_window)
end

redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], pair_window)
redis.call('ZADD', KEYS[2], now, id)
redis.call('PEXPIRE', KEYS[2], user_window)
return {1, 0, ''}

-- Decides a login attempt against all of a tenant's limits in one atomic step
-- and, when allowed, reserves it: the attempt counts as a failure until it
-- succeeds, so concurrent guesses cannot slip past a limit while their
-- passwords hash. Sliding-window logs (exact), plus exponential backoff on
-- the username. Every key is in the tenant's hash slot.
-- KEYS[1] pair zset (username, client IP bucket)   KEYS[2] username zset
-- KEYS[3] client IP bucket zset                     KEYS[4] tenant zset
-- KEYS[5] lockout index zset (member = lock id, score = until ms)
-- KEYS[6] pair lock details (string)                KEYS[7] username lock details (string)
-- ARGV[1] now ms  ARGV[2] attempt id  ARGV[3] username member (the IP bucket's
--   hash: one IP counts at most once towards the username, so one IP cannot
--   push a username into backoff on its own)
-- ARGV[4] pair max  ARGV[5] pair window ms
-- ARGV[6] user max  ARGV[7] user window ms  ARGV[8] user free failures
-- ARGV[9] backoff base ms  ARGV[10] backoff cap ms  ARGV[11] skip user check (1 = known device)
-- ARGV[12] ip max  ARGV[13] ip window ms  ARGV[14] tenant max  ARGV[15] tenant window ms
-- ARGV[16] pair lock id  ARGV[17] user lock id  ARGV[18] pair details  ARGV[19] user details
-- Returns {allowed (1/0), retry_after_ms, limit ('pair'|'username'|'ip'|'tenant'|'')}
local now = tonumber(ARGV[1])
local id, user_member = ARGV[2], ARGV[3]
local pair_max, pair_window = tonumber(ARGV[4]), tonumber(ARGV[5])
local user_max, user_window, user_free = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local base, cap = tonumber(ARGV[9]), tonumber(ARGV[10])
local skip_user = ARGV[11] == '1'
local ip_max, ip_window = tonumber(ARGV[12]), tonumber(ARGV[13])
local tenant_max, tenant_window = tonumber(ARGV[14]), tonumber(ARGV[15])

local function lock(member, details_key, details, until_ms)
  redis.call('ZADD', KEYS[5], until_ms, member)
  redis.call('PEXPIRE', KEYS[5], math.max(user_window, pair_window))
  redis.call('SET', details_key, details, 'PX', math.max(until_ms - now, 1))
end

local function oldest_until(key, window)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - pair_window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - user_window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ip_window)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tenant_window)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)

if redis.call('ZCARD', KEYS[3]) >= ip_max then
  return {0, math.max(oldest_until(KEYS[3], ip_window) - now, 1), 'ip'}
end

if redis.call('ZCARD', KEYS[1]) >= pair_max then
  local until_ms = oldest_until(KEYS[1], pair_window)
  lock(ARGV[16], KEYS[6], ARGV[18], until_ms)
  return {0, math.max(until_ms - now, 1), 'pair'}
end

if not skip_user then
  local user_count = redis.call('ZCARD', KEYS[2])
  if user_count >= user_max then
    local until_ms = oldest_until(KEYS[2], user_window)
    lock(ARGV[17], KEYS[7], ARGV[19], until_ms)
    return {0, math.max(until_ms - now, 1), 'username'}
  end
  if user_count >= user_free and user_count > 0 then
    local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
    local gap = math.min(base * (2 ^ (user_count - user_free)), cap)
    local until_ms = tonumber(newest[2]) + gap
    if now < until_ms then
      lock(ARGV[17], KEYS[7], ARGV[19], until_ms)
      return {0, math.max(until_ms - now, 1), 'username'}
    end
  end
end

if redis.call('ZCARD', KEYS[4]) >= tenant_max then
  return {0, math.max(oldest_until(KEYS[4], tenant_window) - now, 1), 'tenant'}
end

redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], pair_window)
redis.call('ZADD', KEYS[2], now, user_member)
redis.call('PEXPIRE', KEYS[2], user_window)
redis.call('ZADD', KEYS[3], now, id)
redis.call('PEXPIRE', KEYS[3], ip_window)
redis.call('ZADD', KEYS[4], now, id)
redis.call('PEXPIRE', KEYS[4], tenant_window)
return {1, 0, ''}

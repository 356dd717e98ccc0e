-- Decides a login attempt against the tenant-scoped limits in one atomic step
-- and, when allowed, reserves it (counted as a failure until it succeeds, so
-- concurrent guesses cannot slip past the limit while their passwords hash).
-- Sliding-window logs (exact) plus exponential backoff on the username.
-- KEYS[1] pair zset (username, client IP)   KEYS[2] username zset
-- KEYS[3] tenant zset (all attempts)         KEYS[4] lockout index zset
-- KEYS[5] lockout details hash
-- ARGV[1] now ms  ARGV[2] attempt id
-- ARGV[3] pair max   ARGV[4] pair window ms
-- ARGV[5] user max   ARGV[6] user window ms  ARGV[7] user free failures
-- ARGV[8] backoff base ms  ARGV[9] backoff cap ms  ARGV[10] skip user check (1 = trusted device)
-- ARGV[11] tenant max  ARGV[12] tenant window ms
-- ARGV[13] pair lock id  ARGV[14] user lock id  ARGV[15] pair lock details  ARGV[16] user lock details
-- Returns {allowed (1/0), retry_after_ms, limit ('pair'|'username'|'tenant'|'')}
local now = tonumber(ARGV[1])
local id = ARGV[2]
local pair_max, pair_window = tonumber(ARGV[3]), tonumber(ARGV[4])
local user_max, user_window, user_free = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local base, cap = tonumber(ARGV[8]), tonumber(ARGV[9])
local skip_user = ARGV[10] == '1'
local tenant_max, tenant_window = tonumber(ARGV[11]), tonumber(ARGV[12])

local function lock(member, until_ms, details)
  redis.call('ZADD', KEYS[4], until_ms, member)
  redis.call('HSET', KEYS[5], member, details)
  redis.call('PEXPIRE', KEYS[4], math.max(user_window, pair_window))
  redis.call('PEXPIRE', KEYS[5], math.max(user_window, pair_window))
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - pair_window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - user_window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tenant_window)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)

local pair_count = redis.call('ZCARD', KEYS[1])
if pair_count >= pair_max then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local until_ms = tonumber(oldest[2]) + pair_window
  lock(ARGV[13], until_ms, ARGV[15])
  return {0, math.max(until_ms - now, 1), 'pair'}
end

if not skip_user then
  local user_count = redis.call('ZCARD', KEYS[2])
  if user_count >= user_max then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local until_ms = tonumber(oldest[2]) + user_window
    lock(ARGV[14], until_ms, ARGV[16])
    return {0, math.max(until_ms - now, 1), 'username'}
  end
  if user_count >= user_free then
    local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
    local gap = math.min(base * (2 ^ (user_count - user_free)), cap)
    local until_ms = tonumber(newest[2]) + gap
    if now < until_ms then
      lock(ARGV[14], until_ms, ARGV[16])
      return {0, math.max(until_ms - now, 1), 'username'}
    end
  end
end

if redis.call('ZCARD', KEYS[3]) >= tenant_max then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return {0, math.max(tonumber(oldest[2]) + tenant_window - now, 1), 'tenant'}
end

redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], pair_window)
redis.call('ZADD', KEYS[2], now, id)
redis.call('PEXPIRE', KEYS[2], user_window)
redis.call('ZADD', KEYS[3], now, id)
redis.call('PEXPIRE', KEYS[3], tenant_window)
return {1, 0, ''}

-- Decides a login attempt against its client IP's window, shared by every
-- tenant (the key is in the IP's own hash slot), and records it when allowed.
-- Sliding-window log of attempts. The caller takes the entry back (ZREM id)
-- when the tenant's limits then refuse the attempt.
-- KEYS[1] the IP bucket's zset
-- ARGV[1] now ms  ARGV[2] attempt id  ARGV[3] max  ARGV[4] window ms
-- Returns {allowed (1/0), retry_after_ms}
local now, id = tonumber(ARGV[1]), ARGV[2]
local max, window = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= max then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(tonumber(oldest[2]) + window - now, 1)}
end
redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0}

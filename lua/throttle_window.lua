-- Sliding-window log for one key: count what happened in the last `window`
-- and, if under the limit, record this attempt; all in one atomic step, so
-- concurrent callers can never be granted more than `max` per window.
-- Exact: no fixed-window boundary burst (error bound: the clock skew between
-- gateway instances, since `now` comes from the caller).
-- KEYS[1] zset of attempts (member = attempt id, score = time in ms)
-- ARGV[1] now (ms)  ARGV[2] window (ms)  ARGV[3] max  ARGV[4] attempt id
-- Returns {allowed (1/0), retry_after_ms, count_after}
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= max then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local retry = tonumber(oldest[2]) + window - now
  return {0, math.max(retry, 1), count}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0, count + 1}

-- Spends a refresh token of generation ARGV[1] and moves the family to the
-- next generation, atomically; detects reuse; limits rotations per session.
-- The family is one hash of fixed fields: its memory does not grow with use.
-- The token's MAC was checked by the caller, so a presented generation is one
-- the family really issued.
-- KEYS[1] family hash, KEYS[2] session hash
-- ARGV[1] presented generation, ARGV[2] now (unix s), ARGV[3] window s,
-- ARGV[4] rotations allowed per window
-- Returns {status, n, user}: status is
--   'ok'        rotated; n is the successor's generation
--   'reuse'     an older generation came back: the family is now revoked and
--               every later presentation fails; the caller ends the session
--   'throttled' too many rotations in the window; n is the seconds to wait
--               (the presented token stays valid)
--   'revoked'   the family was revoked earlier (reuse, logout)
--   'ended'     the session no longer exists
--   'unknown'   never issued, or expired
local f = redis.call('HMGET', KEYS[1], 'generation', 'revoked', 'user', 'window_start', 'window_count')
if not f[1] then
  return {'unknown', 0, ''}
end
local user = f[3] or ''
if f[2] == '1' then
  return {'revoked', 0, user}
end
local current = tonumber(f[1])
local presented = tonumber(ARGV[1])
if presented < current then
  redis.call('HSET', KEYS[1], 'revoked', 1)
  return {'reuse', 0, user}
end
if presented > current then
  return {'unknown', 0, user}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'ended', 0, user}
end
local now, window, allowed = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local start, count = tonumber(f[4] or '0'), tonumber(f[5] or '0')
if now - start >= window then
  start, count = now, 0
end
if count >= allowed then
  return {'throttled', start + window - now, user}
end
redis.call('HSET', KEYS[1], 'generation', current + 1, 'window_start', start, 'window_count', count + 1)
return {'ok', current + 1, user}

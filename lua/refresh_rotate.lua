-- Spends a refresh token and issues its successor, atomically; detects reuse.
-- KEYS[1] presented token hash, KEYS[2] family hash, KEYS[3] session hash,
-- KEYS[4] successor token hash
-- ARGV[1] presented token's SHA-256, ARGV[2] successor's SHA-256
-- Returns {status, generation, user}: status is
--   'ok'      rotated; generation is the successor's
--   'reuse'   a spent (or superseded) token was presented: the family is now
--             revoked and every later presentation fails; the caller ends the session
--   'revoked' the family was revoked earlier (reuse, logout)
--   'ended'   the session no longer exists
--   'unknown' never issued, or expired
local family = redis.call('HMGET', KEYS[2], 'current', 'generation', 'revoked', 'user')
if not family[1] then
  return {'unknown', 0, ''}
end
local user = family[4] or ''
if family[3] == '1' then
  return {'revoked', 0, user}
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return {'unknown', 0, user}
end
if state ~= 'live' or family[1] ~= ARGV[1] then
  redis.call('HSET', KEYS[2], 'revoked', 1)
  return {'reuse', 0, user}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {'ended', 0, user}
end
local ttl = redis.call('TTL', KEYS[2])
if ttl < 1 then
  return {'unknown', 0, user}
end
local generation = tonumber(family[2]) + 1
redis.call('HSET', KEYS[1], 'state', 'spent')
redis.call('HSET', KEYS[4], 'state', 'live')
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('HSET', KEYS[2], 'current', ARGV[2], 'generation', generation)
return {'ok', generation, user}

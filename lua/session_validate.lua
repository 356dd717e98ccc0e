-- Reads a session and slides its idle deadline, in one round trip.
-- The idle deadline is written back at most once per touch interval, so a busy
-- session does not write Redis on every request.
-- KEYS[1] session hash
-- ARGV[1] now (unix s)   ARGV[2] touch interval (s)   ARGV[3] idle timeout (s)
-- Returns the record as a flat field/value array, or false when the session is
-- missing or expired (an expired record is deleted).
local f = redis.call('HMGET', KEYS[1], 'last_seen_at', 'idle_expires_at', 'absolute_expires_at')
if not f[1] or not f[2] or not f[3] then
  return false
end
local now = tonumber(ARGV[1])
local idle_expires = tonumber(f[2])
local absolute_expires = tonumber(f[3])
if now >= idle_expires or now >= absolute_expires then
  redis.call('DEL', KEYS[1])
  return false
end
if now - tonumber(f[1]) >= tonumber(ARGV[2]) then
  local new_idle = math.min(now + tonumber(ARGV[3]), absolute_expires)
  redis.call('HSET', KEYS[1], 'last_seen_at', now, 'idle_expires_at', new_idle)
  redis.call('EXPIRE', KEYS[1], new_idle - now)
end
return redis.call('HGETALL', KEYS[1])

-- Starts the refresh-token family of a session at generation 1.
-- KEYS[1] family hash (one per session)
-- ARGV[1] session id, ARGV[2] user id, ARGV[3] ttl seconds
-- Returns 1, or 0 when the session already has a family (issued once).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'generation', 1, 'revoked', 0, 'session', ARGV[1], 'user', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1

-- Starts the refresh-token family of a session with its first token.
-- KEYS[1] family hash (one per session), KEYS[2] token hash (by SHA-256)
-- ARGV[1] token hash, ARGV[2] session id, ARGV[3] user id, ARGV[4] ttl seconds
-- Returns 1, or 0 when the session already has a family (issued once).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'current', ARGV[1], 'generation', 1, 'revoked', 0,
  'session', ARGV[2], 'user', ARGV[3])
redis.call('HSET', KEYS[2], 'state', 'live')
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1

-- Creates a session record and adds it to its user's session index, atomically.
-- KEYS[1] session hash   gh:{t:<tenant>}:s:<session id>
-- KEYS[2] user index     gh:{t:<tenant>}:us:<user id>   (zset: member = session id,
--                                                        score = absolute expiry, unix s)
-- ARGV[1] now (unix s)   ARGV[2] session TTL (s)   ARGV[3] index TTL (s)
-- ARGV[4] session id     ARGV[5] absolute expiry (unix s)
-- ARGV[6..] field, value, field, value, ...
-- Returns the number of live sessions the user now has.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return redis.call('ZCARD', KEYS[2])

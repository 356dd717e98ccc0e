-- Records one revocation, indexes it and appends its event to the stream,
-- atomically: an instance that reads the stream never misses a deny-list
-- write, a deny-list entry never exists without its event, and every entry
-- is in the index that mirrors load from (so loading never scans the keyspace).
-- KEYS[1] deny-list entry or revoked-before mark, KEYS[2] the event stream,
-- KEYS[3] the revocation index (sorted set: member = entry suffix, score = expiry)
-- ARGV[1] 'deny' or 'mark', ARGV[2] value (mark: unix seconds), ARGV[3] ttl s,
-- ARGV[4] approximate stream length bound, ARGV[5] now (unix s),
-- ARGV[6] the entry's index member, ARGV[7..] event field/value pairs
-- Returns the event id.
if ARGV[1] == 'mark' then
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  local value = tonumber(ARGV[2])
  if value < current then value = current end
  redis.call('SET', KEYS[1], value, 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
local now = tonumber(ARGV[5])
local expires = now + tonumber(ARGV[3])
local known = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[6]) or '0')
if expires > known then
  redis.call('ZADD', KEYS[3], expires, ARGV[6])
end
-- Entries whose keys have expired leave the index as revocations are written
-- (amortised: each entry is removed once), so the index stays as small as the deny list.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))

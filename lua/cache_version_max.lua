-- Stores a tenant's data version in the L2 cache only if it is newer than the
-- one there, so a slow reader's old version can never overwrite the version
-- an invalidation event just published (versions only grow).
-- KEYS[1] version key; ARGV[1] version; ARGV[2] TTL in ms.
-- Returns the version the key holds afterwards.
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local offered = tonumber(ARGV[1])
if offered > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return offered
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return current

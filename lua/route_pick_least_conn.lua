-- Least connections, weighted: the instance with the fewest open requests per
-- unit of weight (ties broken by ARGV[6]). Each pick opens a lease that
-- expires, so a gateway that dies mid-request cannot leak counts (ARGV[8] = 0:
-- an advisory pick that opens no lease).
-- KEYS[5] ZSET '<instance id>|<lease id>' -> lease deadline (ms);
-- KEYS[6] HASH instance id -> open leases. (After route_common.lua.)
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 1000)
for _, member in ipairs(expired) do
  if redis.call('ZREM', KEYS[5], member) == 1 then
    local id = string.sub(member, 1, string.find(member, '|', 1, true) - 1)
    if redis.call('HINCRBY', KEYS[6], id, -1) < 0 then
      redis.call('HSET', KEYS[6], id, 0)
    end
  end
end
local best, ties = nil, {}
for _, instance in ipairs(pool) do
  local load = ((tonumber(redis.call('HGET', KEYS[6], instance.id)) or 0) + 1) / instance.weight
  if not best or load < best then
    best, ties = load, { instance }
  elseif load == best then
    table.insert(ties, instance)
  end
end
local pick = ties[tonumber(ARGV[6]) % #ties + 1]
-- A lease TTL of 0 is an advisory pick: nothing is opened, nothing counts.
if tonumber(ARGV[8]) == 0 then
  return chosen(version, why, pick, nil, panic)
end
local lease = pick.id .. '|' .. ARGV[7]
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), lease)
redis.call('HINCRBY', KEYS[6], pick.id, 1)
return chosen(version, why, pick, lease, panic)

-- Smooth weighted round robin (nginx's): every instance gains its weight, the
-- highest is chosen and loses the total. Spreads picks evenly in proportion to
-- the weights, cluster-wide. KEYS[5] HASH instance id -> current weight.
-- (After route_common.lua.)
local total, best = 0, 1
local current = {}
for i, instance in ipairs(pool) do
  current[i] = (tonumber(redis.call('HGET', KEYS[5], instance.id)) or 0) + instance.weight
  total = total + instance.weight
  if current[i] > current[best] then
    best = i
  end
end
current[best] = current[best] - total
for i, instance in ipairs(pool) do
  redis.call('HSET', KEYS[5], instance.id, current[i])
end
return chosen(version, why, pool[best], nil, panic)

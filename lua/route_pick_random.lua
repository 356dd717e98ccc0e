-- Health-aware weighted random: each instance's chance is its weight times its
-- health (1..100, lowered by failures and restored by successes, see
-- route_outcome.lua). ARGV[6] is the randomness. (After route_common.lua.)
local total = 0
for _, instance in ipairs(pool) do
  instance.share = instance.weight * math.max(instance.health, 1)
  total = total + instance.share
end
local ticket = tonumber(ARGV[6]) % total
for _, instance in ipairs(pool) do
  if ticket < instance.share then
    return chosen(version, why, instance, nil, panic)
  end
  ticket = ticket - instance.share
end
return chosen(version, why, pool[#pool], nil, panic)

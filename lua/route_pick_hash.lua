-- Consistent hashing by user (by tenant when there is no user), for sticky
-- upstreams: weighted rendezvous hashing, so a user stays on one instance and
-- removing an instance moves only the users it had. (After route_common.lua.)
local key = ARGV[3] ~= '' and ARGV[3] or ARGV[2]
local best, best_score = nil, nil
for _, instance in ipairs(pool) do
  local h = tonumber(string.sub(redis.sha1hex(key .. '|' .. instance.id), 1, 8), 16)
  local score = -instance.weight / math.log((h + 1) / 4294967297)
  if not best or score > best_score then
    best, best_score = instance, score
  end
end
return chosen(version, why, best, nil, panic)

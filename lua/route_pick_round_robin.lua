-- Round robin over the version's instances, one counter per version shared by
-- every gateway. KEYS[5] HASH version -> requests routed. (After route_common.lua.)
local n = redis.call('HINCRBY', KEYS[5], version, 1)
return chosen(version, why, pool[(n - 1) % #pool + 1], nil, panic)

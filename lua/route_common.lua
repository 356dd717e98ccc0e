-- Follows route_resolve.lua in every route_pick_*.lua script: lists the
-- instances that may take the request (KEYS and ARGV as described there).

-- The instances of `version` that may take a request: alive (heartbeat not
-- missed), weight > 0, not the one ARGV[11] leaves out, breaker closed or due
-- a half-open probe. When fewer
-- than ARGV[9] percent of the alive ones qualify, every alive one does
-- (panic: better a degraded instance than none). Sorted by id.
local function pool_of(version)
  local all = redis.call('HGETALL', KEYS[2])
  local live = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
    live[id] = true
  end
  local alive, wanted = {}, {}
  local excluded = ARGV[11] or ''
  for i = 1, #all, 2 do
    local id, f = all[i], fields(all[i + 1])
    local weight = tonumber(f[2]) or 0
    if f[1] == version and weight > 0 and live[id] and id ~= excluded then
      table.insert(alive, { id = id, weight = weight, address = f[3] })
      table.insert(wanted, id .. ':o')
      table.insert(wanted, id .. ':p')
      table.insert(wanted, id .. ':h')
    end
  end
  local healthy = {}
  if #alive > 0 then
    -- Every breaker of the version in one call.
    local st = redis.call('HMGET', KEYS[4], unpack(wanted))
    for i, instance in ipairs(alive) do
      local open_until = tonumber(st[3 * i - 2]) or 0
      instance.health = tonumber(st[3 * i]) or 100
      if open_until == 0 then
        table.insert(healthy, instance)
      elseif now >= open_until and now >= (tonumber(st[3 * i - 1]) or 0) then
        instance.probe = true
        table.insert(healthy, instance)
      end
    end
  end
  local by_id = function(a, b) return a.id < b.id end
  table.sort(alive, by_id)
  table.sort(healthy, by_id)
  local panic_percent = tonumber(ARGV[9]) or 0
  if #alive > 0 and #healthy * 100 < #alive * panic_percent then
    return alive, 1
  end
  return healthy, 0
end

-- The answer for a chosen instance (a half-open one takes this request as its
-- probe and no other until the probe interval has passed).
local function chosen(version, why, instance, lease, panic)
  if instance.probe then
    redis.call('HSET', KEYS[4], instance.id .. ':p', now + tonumber(ARGV[10]))
  end
  return { version, instance.id, why, instance.address, lease or false, panic }
end

local version, why = resolve()
if not version then
  return { false, false, why, false, false, 0 }
end
local pool, panic = pool_of(version)
if #pool == 0 then
  return { version, false, 'no_instance', false, false, 0 }
end

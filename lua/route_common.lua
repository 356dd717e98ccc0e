-- Prepended to every route_pick_*.lua script when it is loaded: resolves the
-- tenant's version of one service and lists the instances that may take the
-- request. Every key arrives through KEYS and shares the service's hash tag.
--
-- KEYS[1] rollouts  HASH  tenant id -> rule; '*' -> the service's default rule
--                         rule: 'pin|<version>' or
--                         'split|<stable>|<canary>|<canary buckets of 10000>|<salt>|<t or u>'
--                         (t: one side per tenant; u: per tenant and user)
-- KEYS[2] instances HASH  instance id -> '<version>|<weight>|<address>'
-- KEYS[3] alive     ZSET  instance id -> heartbeat deadline (ms)
-- KEYS[4] breakers  HASH  '<id>:f' consecutive failures, '<id>:o' open until (ms),
--                         '<id>:n' ejections, '<id>:p' next half-open probe (ms),
--                         '<id>:h' health 1..100
-- KEYS[5] the strategy's own state (see each script)
-- KEYS[6] in flight HASH  instance id -> open leases (least connections only)
-- ARGV[1] service name        ARGV[2] tenant id       ARGV[3] user id or ''
-- ARGV[4] version a subject rule chose, or ''         ARGV[5] now (ms)
-- ARGV[6] a random integer in [0, 2^32)               ARGV[7] lease id
-- ARGV[8] lease time-to-live (ms)                     ARGV[9] panic threshold (%)
-- ARGV[10] half-open probe interval (ms)
--
-- Every script returns {version, instance id, why, address, lease, panic}:
-- version false when no rule names one; instance false when no instance can
-- take the request (the caller answers 503).

local now = tonumber(ARGV[5])

-- Splits 'a|b|c' (fields may be empty).
local function fields(text)
  local out, start = {}, 1
  while true do
    local bar = string.find(text, '|', start, true)
    if not bar then
      table.insert(out, string.sub(text, start))
      return out
    end
    table.insert(out, string.sub(text, start, bar - 1))
    start = bar + 1
  end
end

-- A stable bucket in 0..9999 (the same function as gatehouse_routing::bucket).
local function bucket(text)
  return tonumber(string.sub(redis.sha1hex(text), 1, 8), 16) % 10000
end

-- The tenant's version and why: a subject rule, the tenant's rule, or the default.
local function resolve()
  if ARGV[4] ~= '' then
    return ARGV[4], 'subject_rule'
  end
  local why = 'tenant_rule'
  local rule = redis.call('HGET', KEYS[1], ARGV[2])
  if not rule then
    why = 'default'
    rule = redis.call('HGET', KEYS[1], '*')
  end
  if not rule then
    return false, 'no_rule'
  end
  local f = fields(rule)
  if f[1] == 'pin' then
    return f[2], why
  end
  if f[1] == 'split' then
    local key = ARGV[1] .. '|' .. f[5] .. '|' .. ARGV[2]
    if f[6] == 'u' then
      key = key .. '|' .. ARGV[3]
    end
    if bucket(key) < tonumber(f[4]) then
      return f[3], why .. ':canary'
    end
    return f[2], why .. ':stable'
  end
  return false, 'bad_rule'
end

-- The instances of `version` that may take a request: alive (heartbeat not
-- missed), weight > 0, breaker closed or due a half-open probe. When fewer
-- than ARGV[9] percent of the alive ones qualify, every alive one does
-- (panic: better a degraded instance than none). Sorted by id.
local function pool_of(version)
  local all = redis.call('HGETALL', KEYS[2])
  local live = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
    live[id] = true
  end
  local alive, wanted = {}, {}
  for i = 1, #all, 2 do
    local id, f = all[i], fields(all[i + 1])
    local weight = tonumber(f[2]) or 0
    if f[1] == version and weight > 0 and live[id] then
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

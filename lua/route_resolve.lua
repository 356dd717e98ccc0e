-- Prepended to every routing script that resolves a version (route_version.lua
-- and, through route_common.lua, every route_pick_*.lua): the tenant's version
-- of one service. Every key arrives through KEYS and shares the service's hash
-- tag. (The KEYS and ARGV below are the pick scripts'; route_version.lua uses
-- KEYS[1] and ARGV[1..4] only.)
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
-- ARGV[11] an instance id to leave out, or '' (the proxy's retry after that
--          instance failed before the request was sent)
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


-- Records how a proxied request went on one instance: closes its lease, moves
-- its health, and drives its breaker. After ARGV[4] consecutive failures the
-- breaker opens for ARGV[5] ms times the number of ejections (capped at
-- ARGV[6]); once that has passed, route_common.lua lets one probe through per
-- interval; a probe that succeeds closes it, one that fails opens it again,
-- longer.
-- It also counts the request in its version's statistics for canary analysis
-- (when ARGV[8] names the version): one HASH per tenant and time slot (the
-- tenant whose rollout chose the version; its canary is judged on its own
-- traffic), fields
-- '<version>:n' requests, '<version>:e' failures, '<version>:l<k>' latency
-- histogram (k = floor(4 * log2(ms + 1)): four buckets per doubling).
-- KEYS[1] breakers HASH (see route_common.lua); KEYS[2] leases ZSET;
-- KEYS[3] in-flight HASH; KEYS[4] the tenant's statistics HASH of this slot.
-- ARGV[1] instance id; ARGV[2] '1' success, '0' failure; ARGV[3] now (ms);
-- ARGV[4] failures that open the breaker; ARGV[5] base cool-down (ms);
-- ARGV[6] longest cool-down (ms); ARGV[7] lease to close, or '';
-- ARGV[8] the version, or '' (no statistics); ARGV[9] latency (ms);
-- ARGV[10] lifetime of a statistics slot (ms).
-- Returns {state, open until, ejections, health}: state 0 closed, 1 just
-- opened, 2 open.
local id, ok, now = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local version = ARGV[8] or ''
if version ~= '' then
  local latency = math.max(0, tonumber(ARGV[9]) or 0)
  local k = math.floor(4 * math.log(latency + 1) / math.log(2))
  redis.call('HINCRBY', KEYS[4], version .. ':n', 1)
  if not ok then
    redis.call('HINCRBY', KEYS[4], version .. ':e', 1)
  end
  redis.call('HINCRBY', KEYS[4], version .. ':l' .. k, 1)
  redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[10]))
end
if ARGV[7] ~= '' and redis.call('ZREM', KEYS[2], ARGV[7]) == 1 then
  if redis.call('HINCRBY', KEYS[3], id, -1) < 0 then
    redis.call('HSET', KEYS[3], id, 0)
  end
end
local st = redis.call('HMGET', KEYS[1], id .. ':f', id .. ':o', id .. ':n', id .. ':h')
local failures = tonumber(st[1]) or 0
local open_until = tonumber(st[2]) or 0
local ejections = tonumber(st[3]) or 0
local health = tonumber(st[4]) or 100
if ok then
  -- Recover a tenth of the way back to full health per success.
  health = math.min(100, health + math.ceil((100 - health) / 10))
  -- Fully healthy and closed: the ejection count decays, one per success,
  -- so only repeated ejections lengthen the cool-down.
  if open_until == 0 and health == 100 and ejections > 0 then
    ejections = ejections - 1
  end
  redis.call('HSET', KEYS[1], id .. ':f', 0, id .. ':h', health, id .. ':n', ejections)
  if open_until > 0 and now >= open_until then
    redis.call('HDEL', KEYS[1], id .. ':o', id .. ':p')
    open_until = 0
  end
  return { open_until > 0 and 2 or 0, open_until, ejections, health }
end
health = math.max(1, math.floor(health * 0.8))
failures = failures + 1
local state = open_until > 0 and 2 or 0
local probe_failed = open_until > 0 and now >= open_until
if probe_failed or (open_until == 0 and failures >= tonumber(ARGV[4])) then
  ejections = ejections + 1
  open_until = now + math.min(tonumber(ARGV[5]) * ejections, tonumber(ARGV[6]))
  state = 1
  redis.call('HSET', KEYS[1], id .. ':o', open_until, id .. ':n', ejections)
  redis.call('HDEL', KEYS[1], id .. ':p')
end
redis.call('HSET', KEYS[1], id .. ':f', failures, id .. ':h', health)
return { state, open_until, ejections, health }

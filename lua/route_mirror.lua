-- Replaces the Redis mirror of one service's routing configuration (rules and
-- instances) in one step, unless a newer configuration is already mirrored:
-- every relay mirrors the snapshot it read after the change it publishes, and
-- the revision (the outbox id of that change) keeps a slower relay's older
-- snapshot from overwriting a newer one.
-- KEYS[1] rollouts HASH; KEYS[2] instances HASH; KEYS[3] alive ZSET;
-- KEYS[4] mirror HASH (field 'rev').
-- ARGV[1] revision; ARGV[2] n rules, then n × (tenant id or '*', rule);
-- then m instances, then m × (id, 'version|weight|address', '1' if static);
-- last: the deadline given to static instances (ms).
-- Returns 1 when written, 0 when a newer revision was already there.
local rev = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[4], 'rev')) or -1
if rev < current then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
local i = 2
local rules = tonumber(ARGV[i])
i = i + 1
for _ = 1, rules do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local instances = tonumber(ARGV[i])
i = i + 1
local deadline = ARGV[#ARGV]
for _ = 1, instances do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  if ARGV[i + 2] == '1' then
    redis.call('ZADD', KEYS[3], deadline, ARGV[i])
  end
  i = i + 3
end
redis.call('HSET', KEYS[4], 'rev', rev)
return 1

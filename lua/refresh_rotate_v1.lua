-- Spends a legacy (ghr1_) refresh token, kept for families issued before
-- tokens carried their generation: the family moves to the generation form
-- (its successor is a ghr2_ token), so it stops growing by a key per rotation.
-- KEYS[1] presented token hash, KEYS[2] family hash, KEYS[3] session hash
-- ARGV[1] presented token's SHA-256
-- Returns {status, generation, user}: 'ok' (generation is the successor's),
-- 'reuse' (a spent token: the family is now revoked), 'revoked', 'ended', 'unknown'.
local family = redis.call('HMGET', KEYS[2], 'current', 'generation', 'revoked', 'user')
if not family[2] then
  return {'unknown', 0, ''}
end
local user = family[4] or ''
if family[3] == '1' then
  return {'revoked', 0, user}
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return {'unknown', 0, user}
end
if state ~= 'live' or family[1] ~= ARGV[1] then
  redis.call('HSET', KEYS[2], 'revoked', 1)
  return {'reuse', 0, user}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {'ended', 0, user}
end
local generation = tonumber(family[2]) + 1
redis.call('HSET', KEYS[1], 'state', 'spent')
redis.call('HDEL', KEYS[2], 'current')
redis.call('HSET', KEYS[2], 'generation', generation)
return {'ok', generation, user}

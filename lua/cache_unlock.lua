-- Releases a cache fill lock only if we still hold it (our token), so a
-- loader whose lock expired never deletes the next loader's lock.
-- KEYS[1] lock key; ARGV[1] our token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

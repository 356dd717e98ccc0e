-- One round trip to publish a loaded value and release the fill lock, only
-- if we still hold it (a loader whose lock expired never deletes the next
-- loader's lock).
-- KEYS[1] value key; KEYS[2] lock key (same hash tag);
-- ARGV[1] value bytes; ARGV[2] value time-to-live in ms; ARGV[3] our lock
-- token ('' when we loaded without the lock).
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1

-- One round trip for an L2 miss: the value if it is there, else the fill lock
-- if nobody holds it. Atomic, so no fill can land between the read and the
-- lock (the caller need not read again after locking).
-- KEYS[1] value key; KEYS[2] lock key (same hash tag);
-- ARGV[1] our lock token; ARGV[2] lock time-to-live in ms.
-- Returns {1, value} (hit), {2, nil} (we hold the lock) or {0, nil} (another
-- holds it).
local value = redis.call('GET', KEYS[1])
if value then
  return {1, value}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, false}
end
return {0, false}

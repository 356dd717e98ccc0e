-- Records one revocation and appends its event to the stream, atomically:
-- an instance that reads the stream never misses a deny-list write, and a
-- deny-list entry never exists without its event.
-- KEYS[1] deny-list entry or revoked-before mark, KEYS[2] the event stream
-- ARGV[1] 'deny' or 'mark', ARGV[2] value (mark: unix seconds), ARGV[3] ttl s,
-- ARGV[4] approximate stream length bound, ARGV[5..] event field/value pairs
-- Returns the event id.
if ARGV[1] == 'mark' then
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  local value = tonumber(ARGV[2])
  if value < current then value = current end
  redis.call('SET', KEYS[1], value, 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))

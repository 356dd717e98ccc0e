-- Issues one sign-in handshake code, unless its session has issued its share
-- for this window already: a signed-in browser cannot fill Redis with codes
-- at request rate (each lives a minute).
-- KEYS[1] the session's handshake counter; KEYS[2] the code's key (both
-- under the tenant's tag).
-- ARGV[1] codes a session may issue per window; ARGV[2] the window (s);
-- ARGV[3] the code's record; ARGV[4] the code's lifetime (s).
-- Returns 1 when issued, 0 when over the limit (nothing written but the
-- counter, which expires with its window).
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
if n > tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
return 1

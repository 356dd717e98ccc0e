-- Ends sessions of one user. A session is deleted only if it is in that user's
-- index, so one user can never end another user's session by naming its id.
-- KEYS[1] user index; KEYS[2..n] session hashes
-- ARGV[1..n-1] the session ids matching KEYS[2..n]
-- Returns how many live sessions were ended.
local ended = 0
for i = 2, #KEYS do
  if redis.call('ZREM', KEYS[1], ARGV[i - 1]) == 1 then
    ended = ended + redis.call('DEL', KEYS[i])
  end
end
return ended

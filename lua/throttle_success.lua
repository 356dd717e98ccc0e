-- A login succeeded: reset the pair counter and the pair lockout, and take
-- this attempt back out of the username window (it was not a failure).
-- The per-IP and tenant counters are left alone on purpose.
-- KEYS[1] pair zset  KEYS[2] username zset  KEYS[3] lockout index  KEYS[4] pair lock details
-- ARGV[1] the attempt id  ARGV[2] pair lock id
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1

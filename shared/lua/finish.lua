-- The final result is confirmed by the broker: mark the request published and let it expire.
-- KEYS[1] meta hash, KEYS[2] parts hash, KEYS[3] finalizer lease, KEYS[4] failures hash
-- ARGV[1] status, ARGV[2] finished (epoch ms), ARGV[3] retention ms
redis.call('HSET', KEYS[1], 'state', 'published', 'status', ARGV[1], 'finished', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

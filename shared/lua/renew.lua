-- Extend the finalizer lease while a long assembly runs.
-- KEYS[1] finalizer lease; ARGV[1] holder, ARGV[2] lease ms. Returns 1 when extended, 0 when
-- the lease is not ours (expired and taken, or released).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0

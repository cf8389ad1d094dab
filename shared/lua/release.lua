-- Give the finalizer lease back after a failed finalization, so the next delivery re-claims it.
-- KEYS[1] finalizer lease; ARGV[1] holder. Returns 1 when released, 0 when not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

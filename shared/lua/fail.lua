-- A shard failed for good: claim the finalizer lease to publish one failed result.
-- KEYS[1] meta hash, KEYS[2] finalizer lease
-- ARGV[1] lease holder, ARGV[2] lease ms, ARGV[3] error code, ARGV[4] error message,
-- ARGV[5] shard index
-- Returns 1 when this caller must publish the failure, 0 when the request is already closing.
-- A request already 'failing' whose lease was released or expired is claimed again, so a
-- finalizer that could not publish the failure is re-driven by the shard's redelivery.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' and state ~= 'failing' then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'failing', 'error_code', ARGV[3], 'error', ARGV[4],
    'failed_shard', ARGV[5])
end
redis.call('HSET', KEYS[1], 'finalizer', ARGV[1])
return 1

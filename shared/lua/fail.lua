-- End a running request early: a shard failed for good, its deadline passed, or it was
-- cancelled. The request becomes 'failing' with an outcome and an error; then the caller either
-- claims the finalizer lease to publish that terminal result itself, or leaves it to the
-- sweeper (empty holder).
-- KEYS[1] meta hash, KEYS[2] finalizer lease
-- ARGV[1] lease holder ('' = do not claim), ARGV[2] lease ms, ARGV[3] error code,
-- ARGV[4] error message, ARGV[5] shard index ('' = none), ARGV[6] outcome,
-- ARGV[7] tombstone ttl ms ('' = none), ARGV[8] events channel, ARGV[9] request id
-- Publishes 'ended <request>' on the events channel when a running request starts failing.
-- Returns 1 when the caller holds the lease and must publish, 2 when marked for the sweeper,
-- 0 when the request is not running (finished, or already ending for another reason), 3 when
-- the request is not known yet and a tombstone now waits for it (a cancel that overtook it).
-- A request already 'failing' whose lease was released or expired is claimed again, so a
-- finalizer that could not publish the failure is re-driven by the shard's redelivery.
local state = redis.call('HGET', KEYS[1], 'state')
if not state and ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'state', 'failing', 'outcome', ARGV[6],
    'error_code', ARGV[3], 'error', ARGV[4], 'tombstone', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  return 3
end
if state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'failing', 'outcome', ARGV[6],
    'error_code', ARGV[3], 'error', ARGV[4])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'failed_shard', ARGV[5]) end
  -- Its unfinished shards will be skipped or not counted, so no completion event comes for
  -- them: tell the managers to forget them.
  redis.call('PUBLISH', ARGV[8], 'ended ' .. ARGV[9])
elseif state ~= 'failing' then
  return 0
end
if ARGV[1] == '' then return 2 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'finalizer', ARGV[1])
return 1

-- A worker is about to process a shard that was delivered before (AMQP redelivered, or moved
-- after a delivery): report the request's state and, while it is running, count this attempt.
-- A first delivery does not call this script (one Redis round trip less per shard): its try
-- is counted here, when the shard comes back. So a counter that does not exist yet counts the
-- uncounted first try and this one (2). Counting tries when they start, not when they fail,
-- catches shards that crash their worker outright: each redelivery is one more attempt. (A
-- first delivery put back unstarted, by a stopping worker, is counted as a try too: the worker
-- cannot tell, and counting too many only ever ends a failing shard sooner.)
-- A shard whose result or failure is already stored (a duplicate, a copy moved by a hand-off,
-- a redelivery after a lost ack) is reported as 'settled' and not counted.
-- KEYS[1] meta hash, KEYS[2] parts hash, KEYS[3] failures hash; ARGV[1] shard index
-- Returns {state or '', attempts so far including this one (0 when not running)}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'', 0} end
if state ~= 'running' then return {state, 0} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return {'settled', 0}
end
local field = 'attempts.' .. ARGV[1]
if redis.call('HSETNX', KEYS[1], field, 2) == 1 then return {state, 2} end
return {state, redis.call('HINCRBY', KEYS[1], field, 1)}

-- A worker is about to process a shard: report the request's state and, while it is running,
-- count this attempt. Counting at the start (not on failure) also catches shards that crash
-- their worker outright: each redelivery is one more attempt.
-- A shard whose result is already stored (a duplicate, a copy moved by a hand-off, a
-- redelivery after a lost ack) is reported as 'stored' and not counted.
-- KEYS[1] meta hash, KEYS[2] parts hash, KEYS[3] failures hash; ARGV[1] shard index
-- Returns {state or '', attempts so far including this one (0 when not running)}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'', 0} end
if state ~= 'running' then return {state, 0} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return {'stored', 0}
end
return {state, redis.call('HINCRBY', KEYS[1], 'attempts.' .. ARGV[1], 1)}

-- A finalizer is about to publish a request's final result: count the attempt.
-- KEYS[1] meta hash. Returns the attempt number (1 for the first publication ever), or 0 when
-- the request is gone or already published (nothing must be sent).
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'published' then
  return 0
end
return redis.call('HINCRBY', KEYS[1], 'publications', 1)

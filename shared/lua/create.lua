-- Record a new request before any shard is published, or report the existing record.
-- KEYS[1] meta hash
-- ARGV[1] ttl in ms; ARGV[2..] field/value pairs (must include total)
-- Returns {1, "running", total} when created, {0, state, total} when it already existed.
-- A tombstone (a cancel that arrived first) is filled in with the request's fields and stays
-- 'failing' with outcome 'cancelled', so the sweeper publishes the one cancelled result.
if redis.call('HGET', KEYS[1], 'tombstone') == '1' then
  for i = 2, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('HSET', KEYS[1], 'done', 0)
  redis.call('HDEL', KEYS[1], 'tombstone')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {0, 'failing', tonumber(redis.call('HGET', KEYS[1], 'total'))}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local f = redis.call('HMGET', KEYS[1], 'state', 'total')
  return {0, f[1] or '', tonumber(f[2] or '0')}
end
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'state', 'running', 'done', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1, 'running', tonumber(redis.call('HGET', KEYS[1], 'total'))}

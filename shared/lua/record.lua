-- Settle one shard: store its partial result and how long it took (meta `took.<index>`, micros),
-- or (with a failure policy that tolerates it) its failure. First writer wins per shard index: a
-- shard is settled once, as a part or a failure.
-- KEYS[1] meta hash, KEYS[2] parts hash, KEYS[3] finalizer lease, KEYS[4] failures hash
-- ARGV[1] shard index      ARGV[2] partial bytes, or the failure reason
-- ARGV[3] ttl ms           ARGV[4] lease ms         ARGV[5] lease holder   ARGV[6] engine id
-- ARGV[7] elapsed micros   ARGV[8] events channel   ARGV[9] request id     ARGV[10] 'ok'|'failed'
-- Returns {code, done, total}:
--   1 claimed: this write settled the last shard (or re-claimed an expired lease); finalize now
--   0 accepted   2 duplicate (already settled)      -1 unknown request
--  -2 closed (already published or failing)        -3 index out of range
--   4 claimed: this failure makes the quorum unreachable; the request is now failing, publish it
--   5 not recorded: the request's policy is fail-fast; fail the request instead
local f = redis.call('HMGET', KEYS[1], 'state', 'total', 'done', 'policy', 'quorum')
local state, total = f[1], tonumber(f[2])
if not state or not total then return {-1, 0, 0} end
local idx = tonumber(ARGV[1])
if idx == nil or idx < 0 or idx >= total or idx % 1 ~= 0 then return {-3, tonumber(f[3]) or 0, total} end
if state ~= 'running' and state ~= 'finalizing' then return {-2, tonumber(f[3]) or 0, total} end
local failed = ARGV[10] == 'failed'
local policy = f[4] or 'fail_fast'
if failed and policy == 'fail_fast' then return {5, tonumber(f[3]) or 0, total} end

local added = 0
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 and redis.call('HEXISTS', KEYS[4], ARGV[1]) == 0 then
  if failed then
    redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
  else
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
    redis.call('HSET', KEYS[1], 'took.' .. ARGV[1], ARGV[7])
  end
  added = 1
end
local done
if added == 1 then
  done = redis.call('HINCRBY', KEYS[1], 'done', 1)
  redis.call('PUBLISH', ARGV[8], ARGV[6] .. ' ' .. ARGV[9] .. ' ' .. ARGV[1] .. ' ' .. ARGV[7])
else
  done = tonumber(f[3]) or 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])

if added == 1 and failed and policy == 'quorum' then
  local need = tonumber(f[5]) or total
  local failures = redis.call('HLEN', KEYS[4])
  if failures > total - need then
    if redis.call('SET', KEYS[3], ARGV[5], 'NX', 'PX', ARGV[4]) then
      redis.call('HSET', KEYS[1], 'state', 'failing', 'outcome', 'failed', 'finalizer', ARGV[5],
        'error_code', 'quorum_unreachable',
        'error', failures .. ' of ' .. total .. ' shards failed; the quorum needs ' .. need)
      redis.call('PUBLISH', ARGV[8], 'ended ' .. ARGV[9])
      return {4, done, total}
    end
    return {0, done, total}
  end
end

if done >= total then
  -- The write that settles the last shard claims the finalizer lease. A duplicate delivery after
  -- the previous finalizer's lease expired (it crashed) claims it again.
  if redis.call('SET', KEYS[3], ARGV[5], 'NX', 'PX', ARGV[4]) then
    redis.call('HSET', KEYS[1], 'state', 'finalizing', 'finalizer', ARGV[5])
    return {1, done, total}
  end
end
if added == 1 then return {0, done, total} end
return {2, done, total}

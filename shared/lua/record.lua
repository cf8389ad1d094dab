-- Record one shard's partial result; first writer wins per shard index.
-- KEYS[1] meta hash, KEYS[2] parts hash, KEYS[3] finalizer lease
-- ARGV[1] shard index      ARGV[2] partial bytes   ARGV[3] ttl ms
-- ARGV[4] lease ms         ARGV[5] lease holder    ARGV[6] engine id
-- ARGV[7] elapsed micros   ARGV[8] events channel  ARGV[9] request id
-- Returns {code, done, total}:
--   1 claimed: this write completed the set (or re-claimed an expired lease); finalize now
--   0 accepted   2 duplicate (field already set)   -1 unknown request
--  -2 closed (already published or failing)      -3 index out of range
local f = redis.call('HMGET', KEYS[1], 'state', 'total', 'done')
local state, total = f[1], tonumber(f[2])
if not state or not total then return {-1, 0, 0} end
local idx = tonumber(ARGV[1])
if idx == nil or idx < 0 or idx >= total or idx % 1 ~= 0 then return {-3, tonumber(f[3]) or 0, total} end
if state ~= 'running' and state ~= 'finalizing' then return {-2, tonumber(f[3]) or 0, total} end

local added = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
local done
if added == 1 then
  done = redis.call('HINCRBY', KEYS[1], 'done', 1)
  redis.call('PUBLISH', ARGV[8], ARGV[6] .. ' ' .. ARGV[9] .. ' ' .. ARGV[1] .. ' ' .. ARGV[7])
else
  done = tonumber(f[3]) or 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])

if done >= total then
  -- The write that completes the set claims the finalizer lease. A duplicate delivery after the
  -- previous finalizer's lease expired (it crashed) claims it again, so assembly is re-driven.
  if redis.call('SET', KEYS[3], ARGV[5], 'NX', 'PX', ARGV[4]) then
    redis.call('HSET', KEYS[1], 'state', 'finalizing', 'finalizer', ARGV[5])
    return {1, done, total}
  end
end
if added == 1 then return {0, done, total} end
return {2, done, total}

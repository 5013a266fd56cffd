-- Take one of a subject's concurrent-stream slots.
-- KEYS[1]: sorted set of held slots, member -> expiry (milliseconds, Redis' clock)
-- ARGV[1]: member (replica id and stream number), ARGV[2]: limit, ARGV[3]: ttl (ms)
-- Returns 1 when taken, 0 when the subject holds `limit` live slots. Slots of a
-- replica that died expire after the ttl (live ones are renewed by their replica).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1

-- Renew the slots this replica holds in one subject's set.
-- KEYS[1]: the slot set; ARGV[1]: ttl (ms); ARGV[2..]: this replica's members there.
-- Members that expired meanwhile are added again (the stream is still open).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #ARGV - 1

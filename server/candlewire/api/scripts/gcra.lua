-- One request against a rate limit, by the generic cell rate algorithm (GCRA).
-- KEYS[1]: the subject's theoretical arrival time (TAT), microseconds, Redis' clock
-- ARGV[1]: emission interval (microseconds per request)
-- ARGV[2]: burst tolerance (microseconds: interval * (burst - 1))
-- Returns 0 when the request is allowed (and counted), else the microseconds
-- until it would be. Redis' own clock is used, so replicas' clocks do not matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local allowed_at = tat - tolerance
if now < allowed_at then
  return allowed_at - now
end
local new_tat = tat + interval
local ttl = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
return 0

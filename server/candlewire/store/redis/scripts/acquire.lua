-- KEYS: lease, fence. ARGV: ttl (ms), owner. The new fencing token, or 0 when held.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d:%s', token, ARGV[2]), 'PX', ARGV[1])
return token

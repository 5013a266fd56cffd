-- KEYS: epoch, lease, the symbol's seq, then (candles, log, meta) per series
-- of that symbol. ARGV: epoch, token, retention, log_size, then per series:
-- count, members... Returns {first seq, {indices (1-based, in ARGV order) of
-- the applied members}}.
local retention = tonumber(ARGV[3])
local log_size = tonumber(ARGV[4])
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
local first = seq + 1
local applied = {}
local a = 5
local index = 0
for s = 4, #KEYS, 3 do
  local z, log, meta = KEYS[s], KEYS[s + 1], KEYS[s + 2]
  local count = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, count do
    local m = ARGV[a]
    a = a + 1
    index = index + 1
    local k = string.sub(m, 1, 8)
    local found = redis.call('ZRANGE', z, '[' .. k, '+', 'BYLEX', 'LIMIT', 0, 1)[1]
    local apply = true
    local n = nil
    if found and string.sub(found, 1, 8) == k then
      if struct.unpack('>I4', m, 9) <= struct.unpack('>I4', found, 9) then
        apply = false
      else
        redis.call('ZREM', z, found)
      end
    else
      n = redis.call('ZCARD', z)
      if n >= retention and
          not redis.call('ZRANGE', z, '-', '(' .. k, 'BYLEX', 'LIMIT', 0, 1)[1] then
        apply = false  -- older than everything retained: it would be evicted at once
      end
    end
    if apply then
      seq = seq + 1
      local s_seq = string.format('%d', seq)
      redis.call('ZADD', z, 0, m)
      if n and n + 1 > retention then
        redis.call('ZREMRANGEBYRANK', z, 0, n - retention)
        redis.call('HSET', meta, 'evicted', s_seq)
      end
      redis.call('XADD', log, 'MAXLEN', '~', log_size, s_seq .. '-0', 'm', m)
      applied[#applied + 1] = index
    end
  end
end
if seq >= first then
  redis.call('SET', KEYS[3], string.format('%d', seq))
end
return {first, applied}

-- The same for a serving replica's reader, with each series' bounds at that
-- instant. KEYS: the symbol's seq, then (log, candles) per series of that
-- symbol. ARGV: first entry id. Returns {head, per series {trimmed, ids,
-- members, candle count, first member's key ('' when none)}}.
local out = {redis.call('GET', KEYS[1]) or '0'}
for i = 2, #KEYS, 2 do
  local log, z = KEYS[i], KEYS[i + 1]
  local ids, members = {}, {}
  for j, e in ipairs(redis.call('XRANGE', log, ARGV[1], '+')) do
    ids[j] = e[1]
    members[j] = e[2][2]
  end
  local first = redis.call('ZRANGE', z, 0, 0)[1]
  out[#out + 1] = {trimmed(log), ids, members, redis.call('ZCARD', z),
    first and string.sub(first, 1, 8) or ''}
end
return out

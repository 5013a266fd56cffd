-- KEYS: the symbol's seq, then logs of that symbol. ARGV: first entry id.
-- Returns {head, per log {trimmed, ids, members}}.
local out = {redis.call('GET', KEYS[1]) or '0'}
for i = 2, #KEYS do
  local log = KEYS[i]
  local ids, members = {}, {}
  for j, e in ipairs(redis.call('XRANGE', log, ARGV[1], '+')) do
    ids[j] = e[1]
    members[j] = e[2][2]
  end
  out[i] = {trimmed(log), ids, members}
end
return out

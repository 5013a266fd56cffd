-- KEYS: the symbol's seq, then (candles, log, meta) per series of that symbol.
-- ARGV: at (-1: now), history, start member bound ('' none), closed_only (1/0).
-- Returns {position, head, per series: {evicted, trimmed, count, first key, rewind,
-- packed candles, log ids, log members}}; the log (everything retained) only
-- when rewinding.
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = tonumber(ARGV[1])
if at < 0 or at > head then at = head end
local history = tonumber(ARGV[2])
local start = ARGV[3]
local closed_only = ARGV[4] == '1'
local out = {string.format('%d', at), string.format('%d', head)}
for s = 2, #KEYS, 3 do
  local z, log, meta = KEYS[s], KEYS[s + 1], KEYS[s + 2]
  local evicted = redis.call('HGET', meta, 'evicted')
  local n = redis.call('ZCARD', z)
  local first = redis.call('ZRANGE', z, 0, 0)[1]
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  local rewind = at < head and last ~= nil and
    tonumber(string.match(last[1], '^(%d+)')) > at
  local members, ids, entries = {}, {}, {}
  if rewind then
    members = redis.call('ZRANGE', z, 0, -1)
    for i, e in ipairs(redis.call('XRANGE', log, '-', '+')) do
      ids[i] = e[1]
      entries[i] = e[2][2]
    end
  elseif start ~= '' then
    members = redis.call('ZRANGE', z, start, '+', 'BYLEX')
  elseif not closed_only then
    if history > 0 then members = redis.call('ZRANGE', z, -history, -1) end
  elseif history > 0 then
    local picked = {}
    local offset = 0
    local step = math.max(history + 1, 64)
    while #picked < history do
      local chunk = redis.call('ZRANGE', z, offset, offset + step - 1, 'REV')
      if #chunk == 0 then break end
      for _, c in ipairs(chunk) do
        if string.byte(c, 13) == 1 then
          picked[#picked + 1] = c
          if #picked == history then break end
        end
      end
      offset = offset + step
    end
    for i = #picked, 1, -1 do members[#members + 1] = picked[i] end
  end
  out[#out + 1] = {evicted or '0', trimmed(log), n, first and string.sub(first, 1, 8) or '',
    rewind and 1 or 0, pack(members), ids, entries}
end
return out

-- KEYS: epoch, lease, the symbol's trade stream, its trade meta hash.
-- ARGV: epoch, token, retention, cutoff (8-byte time key: trades marked
-- before it are evicted; '' for none), then per trade: time key, frame.
-- Returns {first seq, the mark before the batch ('' when none)}.
local stream, meta = KEYS[3], KEYS[4]
local retention = tonumber(ARGV[3])
local cutoff = ARGV[4]
local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
local first = seq + 1
local previous = redis.call('HGET', meta, 'mark') or ''
local mark = previous
for a = 5, #ARGV, 2 do
  local t = ARGV[a]
  if mark == '' or before(mark, t) then mark = t end
  seq = seq + 1
  redis.call('XADD', stream, string.format('%d', seq) .. '-0', 'm', mark .. ARGV[a + 1])
end
redis.call('HSET', meta, 'seq', string.format('%d', seq), 'mark', mark)
-- Evict from the oldest while beyond the retention or before the cutoff.
local n = redis.call('XLEN', stream)
local keep = nil
local evicted = nil
local from = '-'
while true do
  local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', 128)
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local m = string.sub(e[2][2], 1, 8)
    if n > retention or (cutoff ~= '' and before(m, cutoff)) then
      evicted = m
      n = n - 1
    else
      keep = e[1]
      break
    end
  end
  if keep or #entries < 128 then break end
  from = '(' .. entries[#entries][1]
end
if evicted then
  if keep then
    redis.call('XTRIM', stream, 'MINID', keep)
  else
    redis.call('DEL', stream)
  end
  redis.call('HSET', meta, 'evicted', evicted, 'first', string.format('%d', seq - n + 1))
end
return {first, previous}

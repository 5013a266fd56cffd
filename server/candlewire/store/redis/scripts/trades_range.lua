-- KEYS: the symbol's trade stream, its trade meta hash.
-- ARGV: after, upto ('' for the newest), start and end (8-byte time keys,
-- '' for none), limit, latest (1: the last `limit`, else the first).
-- Returns {head, first seq returned, complete (0/1), marks, lengths, frames}
-- (marks and lengths of 8 and 4 bytes, each concatenated).
local stream, meta = KEYS[1], KEYS[2]
local head = tonumber(redis.call('HGET', meta, 'seq') or '0')
local first = tonumber(redis.call('HGET', meta, 'first') or '1')
local evicted = redis.call('HGET', meta, 'evicted')
local after = tonumber(ARGV[1])
local start, stop = ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
local lo = math.max(after + 1, first)
local hi = head
if ARGV[2] ~= '' then hi = math.min(hi, tonumber(ARGV[2])) end
local function mark(seq)
  local e = redis.call('XRANGE', stream, string.format('%d', seq) .. '-0',
    string.format('%d', seq) .. '-0')[1]
  return string.sub(e[2][2], 1, 8)
end
-- The first seq in [a, b + 1] whose mark is at least t.
local function search(a, b, t)
  local l, h = a, b + 1
  while l < h do
    local mid = math.floor((l + h) / 2)
    if before(mark(mid), t) then l = mid + 1 else h = mid end
  end
  return l
end
local complete = 0
if after + 1 >= first or (start ~= '' and (not evicted or before(evicted, start))) then
  complete = 1
end
if lo <= hi and start ~= '' then lo = search(lo, hi, start) end
if lo <= hi and stop ~= '' then hi = search(lo, hi, stop) - 1 end
if ARGV[6] == '1' then
  if hi - lo + 1 >= limit then complete = 1 end
  lo = math.max(lo, hi - limit + 1)
else
  hi = math.min(hi, lo + limit - 1)
end
local marks, lengths, frames = {}, {}, {}
if lo <= hi then
  local entries = redis.call('XRANGE', stream, string.format('%d', lo) .. '-0',
    string.format('%d', hi) .. '-0')
  for i, e in ipairs(entries) do
    local m = e[2][2]
    marks[i] = string.sub(m, 1, 8)
    lengths[i] = struct.pack('>I4', #m - 8)
    frames[i] = string.sub(m, 9)
  end
end
return {head, lo, complete, table.concat(marks), table.concat(lengths), table.concat(frames)}

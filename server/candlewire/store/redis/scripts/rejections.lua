-- Adds an ingestor's newly counted rejections to a symbol's totals.
-- KEYS[1]: the symbol's rejection hash.
-- ARGV: triples of reason, count to add, newest event time refused (ns, decimal).
-- The count is added; the time is kept when newer than the one stored
-- (compared as decimal strings: Lua's numbers cannot hold nanoseconds).
for i = 1, #ARGV, 3 do
  local reason, last = ARGV[i], ARGV[i + 2]
  redis.call('HINCRBY', KEYS[1], reason, ARGV[i + 1])
  local field = reason .. ':last'
  local old = redis.call('HGET', KEYS[1], field)
  if not old or #last > #old or (#last == #old and last > old) then
    redis.call('HSET', KEYS[1], field, last)
  end
end
return 0

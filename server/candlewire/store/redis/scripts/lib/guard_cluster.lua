-- The same for Redis Cluster, on keys of the symbol's slot: KEYS[1] the
-- symbol's copy of the epoch, KEYS[2] the highest fencing token that wrote it.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
elseif epoch ~= ARGV[1] then
  return redis.error_reply('CWEPOCH the dataset changed')
end
if ARGV[2] ~= '' then
  local token = tonumber(string.match(ARGV[2], '^(%d+)'))
  local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
  if token < seen then
    return redis.error_reply('CWFENCED the lease is held by another ingestor')
  end
  if token > seen then redis.call('SET', KEYS[2], string.format('%d', token)) end
end

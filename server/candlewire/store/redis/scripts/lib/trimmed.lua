-- Shared by the read scripts: the seq of the newest entry trimmed from a stream.
local function trimmed(log)
  if redis.call('EXISTS', log) == 0 then return 0 end
  local info = redis.call('XINFO', 'STREAM', log)
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  if tonumber(fields['entries-added']) <= tonumber(fields['length']) then return 0 end
  return tonumber(string.match(fields['recorded-first-entry-id'], '^(%d+)')) - 1
end

-- The open times of a series, concatenated (for backfill batches).
local keys = {}
for i, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do keys[i] = string.sub(m, 1, 8) end
return table.concat(keys)

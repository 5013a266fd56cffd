-- Shared by the read scripts: members -> {keys, lengths, frames, closed flags},
-- each concatenated into one string.
local function pack(members)
  local keys, lengths, frames, closed = {}, {}, {}, {}
  for i, m in ipairs(members) do
    keys[i] = string.sub(m, 1, 8)
    lengths[i] = struct.pack('>I4', #m - 13)
    frames[i] = string.sub(m, 14)
    closed[i] = string.sub(m, 13, 13)
  end
  return {table.concat(keys), table.concat(lengths), table.concat(frames), table.concat(closed)}
end

-- Shared by the trade scripts: whether 8-byte big-endian time key a sorts
-- before b (numerically, in two halves: Lua numbers are doubles, and string
-- comparison follows the server's locale).
local function before(a, b)
  local ah, al = struct.unpack('>I4I4', a)
  local bh, bl = struct.unpack('>I4I4', b)
  return ah < bh or (ah == bh and al < bl)
end

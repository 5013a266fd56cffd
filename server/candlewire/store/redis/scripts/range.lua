-- KEYS: candles. ARGV: forward (1/0), min, max, limit.
local members
if ARGV[1] == '1' then
  members = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3], 'BYLEX', 'LIMIT', 0, ARGV[4])
else
  local rev = redis.call('ZRANGE', KEYS[1], ARGV[3], ARGV[2], 'BYLEX', 'REV', 'LIMIT', 0, ARGV[4])
  members = {}
  for i = #rev, 1, -1 do members[#members + 1] = rev[i] end
end
return pack(members)

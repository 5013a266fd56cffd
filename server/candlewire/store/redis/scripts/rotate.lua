-- KEYS: the dataset's epoch. ARGV: the epoch the caller read, a new one.
-- Replaces the epoch if it is still the one the caller read, or creates it if
-- it is gone (flushed): a rolled-back dataset is rotated once, however many
-- processes notice it. Returns the epoch.
local epoch = redis.call('GET', KEYS[1])
if epoch == ARGV[1] or not epoch then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return epoch

-- Shared by the write scripts: the dataset's epoch and the writer's lease.
-- KEYS[1] epoch, KEYS[2] lease; ARGV[1] epoch, ARGV[2] the lease value
-- ('<fencing token>:<owner>', '' for a writer without a lease).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('CWEPOCH the dataset changed')
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return redis.error_reply('CWFENCED the lease is held by another ingestor')
end

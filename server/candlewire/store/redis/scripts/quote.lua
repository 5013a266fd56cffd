-- KEYS: epoch, lease, quote, prices. ARGV: epoch, token, quote, ttl (ms), stream length.
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'q', ARGV[3])
return 1

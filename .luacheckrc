-- luacheck: the Redis store's scripts, as Redis runs them (Lua 5.1 with
-- Redis' globals); .ci/check writes each composed script to a file first.
std = "lua51"
read_globals = { "redis", "KEYS", "ARGV", "struct" }
max_line_length = 100

-- Takes a lease in KEYS[1], a sorted set of lease ids scored by expiry (µs since the Unix epoch).
-- ARGV[1] pinned time in µs ("" = the server's TIME), ARGV[2] lease length µs, ARGV[3] cap,
-- ARGV[4] lease id. Reply: { 1, holders } when taken; { 0, holders, µs until the first lease
-- expires } when the key is at its cap. Expired leases (crashed holders) are dropped first.
-- Times go to Redis as strings made by string.format('%d'): a Lua number passed to redis.call is
-- formatted by Redis as a double (%.17g), several times the cost.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return { 0, n, tonumber(first[2]) - now }
end
local expiry = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%d', expiry), ARGV[4])
-- The set lives as long as its longest lease.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((tonumber(last[2]) - now) / 1000) + 1))
return { 1, n + 1 }

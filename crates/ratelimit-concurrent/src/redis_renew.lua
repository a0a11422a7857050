-- Extends lease ARGV[4] of KEYS[1] to now + ARGV[2] µs, if it is still held (not expired).
-- ARGV[1] pinned time in µs ("" = the server's TIME). Reply: 1 renewed, 0 lost.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[4])
if not score or tonumber(score) <= now then
  return 0
end
local expiry = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', string.format('%d', expiry), ARGV[4])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((tonumber(last[2]) - now) / 1000) + 1))
return 1

-- One GCRA decision for one key under a set of quotas. Atomic: the script is the transaction.
-- KEYS[1]  the key's state: "s1 n1 s2 n2 ...", each quota's TAT as Unix seconds and nanoseconds
-- ARGV[1], ARGV[2]  pinned time as seconds and nanoseconds ("", "" = the server's TIME)
-- ARGV[3]  cost
-- ARGV[2+2i], ARGV[3+2i]  emission interval and tolerance of quota i, nanoseconds (< 2^52)
-- Reply: { allowed (1/0), offset_1, ..., offset_n } where offset_i = max(TAT_i - now, 0) before the
-- request; the client derives remaining, retry_after and reset from them with the same arithmetic
-- as the in-memory limiter. Times are kept as (seconds, nanoseconds) so that every number Lua
-- handles stays an exact integer below 2^53.
local sec, ns
if ARGV[1] ~= '' then
  sec, ns = tonumber(ARGV[1]), tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  sec, ns = tonumber(t[1]), tonumber(t[2]) * 1000
end
local cost = tonumber(ARGV[3])
local n = (#ARGV - 3) / 2
-- The state's text, written by string.format with '%d' (a fraction of the cost of tostring or
-- table.concat of Lua numbers, and the same digits: every value is an integer below 2^53).
local fmt = '%d %d'
if n > 1 then
  fmt = fmt .. string.rep(' %d %d', n - 1)
end

local tat = {}
local stored = redis.call('GET', KEYS[1])
if stored then
  for v in string.gmatch(stored, '%d+') do
    tat[#tat + 1] = tonumber(v)
  end
  if #tat ~= 2 * n then
    if string.find(stored, '[^ %d]') then
      return redis.error_reply('CORRUPT the rate-limit state is not a list of times')
    end
    -- State written under another set of quotas: start afresh rather than misread it.
    tat = {}
  end
end

local reply = { 1 }
local step = {}
for i = 1, n do
  local d = 0
  if tat[2 * i] then
    d = (tat[2 * i - 1] - sec) * 1000000000 + (tat[2 * i] - ns)
    if d < 0 then
      d = 0
    end
  end
  reply[i + 1] = d
  -- Each argument converted once (a string in arithmetic is converted at every use).
  step[i] = cost * tonumber(ARGV[2 + 2 * i])
  if d + step[i] > tonumber(ARGV[3 + 2 * i]) then
    reply[1] = 0
  end
end

if reply[1] == 1 and cost > 0 then
  local state = {}
  local ttl = 0
  for i = 1, n do
    local total = ns + reply[i + 1] + step[i]
    if total > ttl then
      ttl = total
    end
    local carry = math.floor(total / 1000000000)
    state[2 * i - 1] = sec + carry
    state[2 * i] = total - carry * 1000000000
  end
  -- The key lives until its buckets are full again: expiry is the reset.
  redis.call('SET', KEYS[1], string.format(fmt, unpack(state)), 'PX',
    string.format('%d', math.ceil((ttl - ns) / 1000000)))
end
return reply

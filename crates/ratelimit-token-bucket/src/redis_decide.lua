-- One GCRA decision for one key under a set of quotas. Atomic: the script is the transaction.
-- KEYS[1]  the key's state: "s1 n1 s2 n2 ...", each quota's TAT as Unix seconds and nanoseconds
-- ARGV[1], ARGV[2]  pinned time as seconds and nanoseconds ("", "" = the server's TIME)
-- ARGV[3], ARGV[4]  want and least: take `want` units, or fewer but at least `least`. A decision
--   passes want = least = the request's cost. A lease (least < want) takes at most half of what
--   the tightest bucket holds (rounded up, never below `least`), so servers sharing a nearly
--   empty bucket each get a part of it.
-- ARGV[3+2i], ARGV[4+2i]  emission interval and tolerance of quota i, nanoseconds (< 2^52)
-- Reply: { allowed (1/0), offset_1, ..., offset_n, taken } where offset_i = max(TAT_i - now, 0)
-- before the request; the client derives remaining, retry_after and reset from them with the same
-- arithmetic as the in-memory limiter. Times are kept as (seconds, nanoseconds) so that every number Lua
-- handles stays an exact integer below 2^53.
local sec, ns
if ARGV[1] ~= '' then
  sec, ns = tonumber(ARGV[1]), tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  sec, ns = tonumber(t[1]), tonumber(t[2]) * 1000
end
local want, least = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = (#ARGV - 4) / 2
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
local interval, tolerance = {}, {}
local take = want
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
  interval[i], tolerance[i] = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  if least < want then
    local left = math.floor((tolerance[i] - d) / interval[i])
    local share = math.max(math.ceil(left / 2), least)
    if share < take then
      take = share
    end
  end
end
-- The exact test, in integers: a lease's share computed in floating point is checked too and,
-- if one over, lowered once; what still does not fit is refused.
local fits = false
for _ = 1, 2 do
  fits = true
  for i = 1, n do
    if reply[i + 1] + take * interval[i] > tolerance[i] then
      fits = false
    end
  end
  if fits or take <= least then
    break
  end
  take = take - 1
end
if not fits then
  reply[1] = 0
  take = 0
end
reply[n + 2] = take

if take > 0 then
  local state = {}
  local ttl = 0
  for i = 1, n do
    local total = ns + reply[i + 1] + take * interval[i]
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

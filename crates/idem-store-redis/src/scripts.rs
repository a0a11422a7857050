//! The Lua scripts: each store operation is one of them, run atomically by Redis in one round trip.
//!
//! A record is one hash:
//!
//! | field | meaning |
//! |---|---|
//! | `v` | record schema version (`1`) |
//! | `st` | `i` in flight, `c` completed, `r` released (a tombstone that only keeps the fence) |
//! | `fp` | the request fingerprint (32 bytes) |
//! | `fence` | the fence of the latest attempt (decimal) |
//! | `until` | lease end (`i`) or retention end (`c`), server microseconds |
//! | `resp` | the stored response, `StoredResponse::encode` bytes (`c`) |
//!
//! Time is `TIME` (the server's clock, microseconds) plus the store's test offset (`ARGV`), so clock
//! skew between application servers cannot break leases; a test may pin it instead (a nonzero
//! pinned time in `ARGV`). A record whose `until` has passed is
//! treated as absent; the key's TTL (at least `until`, plus slack) only reclaims memory. A new
//! attempt's fence is `max(now, previous fence + 1)`, so fences of one key keep growing even after
//! the record is gone (as long as the server's clock does not go backwards).
//!
//! Numbers leave Lua as strings made by `string.format('%d', …)`: exact for these integers (all
//! below 2^53), and a fraction of the cost of `%.0f` or of a Lua number passed to `redis.call`
//! (which Redis formats as a double).
//!
//! Replies are arrays whose first element is a tag: `A` acquired (fence), `I` in flight (µs
//! left), `C` completed (response), `M` mismatch, `OK`, `S` stale fence, `V` unknown record
//! version (the version), `X` unreadable record.

/// The script's `now`: `ARGV[$pinned]` (µs) when nonzero, else the server's `TIME` plus
/// `ARGV[$offset]` µs.
macro_rules! now_lua {
    ($pinned:literal, $offset:literal) => {
        concat!(
            "\nlocal now = tonumber(ARGV[",
            $pinned,
            "])\nif now == 0 then\n  local t = redis.call('TIME')\n  now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[",
            $offset,
            "])\nend\n"
        )
    };
}

/// `begin`: KEYS[1] record; ARGV fingerprint, lease µs, offset µs, pinned time µs (0 = none).
pub(crate) const BEGIN: &str = concat!(
    now_lua!("4", "3"),
    r#"local r = redis.call('HMGET', KEYS[1], 'v', 'st', 'fp', 'fence', 'until', 'resp')
if r[1] and r[1] ~= '1' then return {'V', r[1]} end
local prev = 0
if r[2] then
  local untl = tonumber(r[5])
  prev = tonumber(r[4])
  if not untl or not prev then return {'X'} end
  if r[2] ~= 'r' and untl > now then
    if r[3] ~= ARGV[1] then return {'M'} end
    if r[2] == 'i' then return {'I', string.format('%d', untl - now)} end
    if r[2] == 'c' and r[6] then return {'C', r[6]} end
    return {'X'}
  end
end
local fence = math.max(now, prev + 1)
local lease = tonumber(ARGV[2])
if r[2] then redis.call('HDEL', KEYS[1], 'resp') end
redis.call('HSET', KEYS[1], 'v', '1', 'st', 'i', 'fp', ARGV[1],
  'fence', string.format('%d', fence), 'until', string.format('%d', now + lease))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(lease / 1000) + 1000))
return {'A', string.format('%d', fence)}
"#
);

/// `complete`: KEYS[1] record; ARGV fence, response, retention µs, offset µs, pinned µs.
pub(crate) const COMPLETE: &str = concat!(
    now_lua!("5", "4"),
    r#"local r = redis.call('HMGET', KEYS[1], 'v', 'st', 'fence', 'until')
if r[1] and r[1] ~= '1' then return {'V', r[1]} end
if r[2] ~= 'i' or r[3] ~= ARGV[1] or (tonumber(r[4]) or 0) <= now then return {'S'} end
local retention = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'st', 'c', 'resp', ARGV[2],
  'until', string.format('%d', now + retention))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(retention / 1000) + 1000))
return {'OK'}
"#
);

/// `release`: KEYS[1] record; ARGV fence, offset µs, pinned µs.
pub(crate) const RELEASE: &str = concat!(
    now_lua!("3", "2"),
    r#"local r = redis.call('HMGET', KEYS[1], 'v', 'st', 'fence', 'until')
if r[1] and r[1] ~= '1' then return {'V', r[1]} end
if r[2] ~= 'i' or r[3] ~= ARGV[1] or (tonumber(r[4]) or 0) <= now then return {'S'} end
redis.call('HSET', KEYS[1], 'st', 'r', 'until', string.format('%d', now))
redis.call('HDEL', KEYS[1], 'fp', 'resp')
redis.call('PEXPIRE', KEYS[1], 1000)
return {'OK'}
"#
);

/// `renew`: KEYS[1] record; ARGV fence, lease µs, offset µs, pinned µs.
pub(crate) const RENEW: &str = concat!(
    now_lua!("4", "3"),
    r#"local r = redis.call('HMGET', KEYS[1], 'v', 'st', 'fence', 'until')
if r[1] and r[1] ~= '1' then return {'V', r[1]} end
if r[2] ~= 'i' or r[3] ~= ARGV[1] or (tonumber(r[4]) or 0) <= now then return {'S'} end
local lease = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'until', string.format('%d', now + lease))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(lease / 1000) + 1000))
return {'OK'}
"#
);

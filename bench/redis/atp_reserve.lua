-- atp_reserve.lua: hold every line or none, with an idempotency key and a
-- TTL, the semantics of atpd's RESERVE (see atp_get.lua for the data model).
--
-- Redis runs a script atomically, so "check every line, then increment every
-- line" cannot interleave with another reservation: no oversell.
--
-- KEYS[1..n]: the item hashes of the lines (atp:i:<sku>:<loc>).
-- ARGV[1]: channel, ARGV[2]: ttl_ms, ARGV[3]: idempotency key,
-- ARGV[4..3+n]: the quantity of each line.
-- Writes: rs += qty on every line; the record atp:r:<id> (st 1 = held,
-- ch, k, sig, exp in ms, lines "key qty ..."); atp:k:<key> -> id;
-- atp:exp (sorted set of held ids by expiry, for atp_expire.lua).
-- Returns {id, replayed (0|1)}. A retry with the same key and content
-- returns the existing id with replayed = 1; other content is ECONFLICT.
-- Errors: EINVAL, ETOOMANY, ETTL, EKEY, EQTY, ENOCHANNEL, ENOTFOUND,
-- EINSUFFICIENT (nothing is changed).
local n = #KEYS
if n == 0 then return redis.error_reply('EINVAL no lines') end
if n > 32 then return redis.error_reply('ETOOMANY too many lines or keys in one request') end
if #ARGV ~= 3 + n then return redis.error_reply('EINVAL one quantity per line') end
local chan, ttl, key = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not ttl or ttl < 1 or ttl > 86400000 then
  return redis.error_reply('ETTL ttl must be between 1 ms and the configured maximum')
end
if #key < 1 or #key > 64 or string.find(key, '[^!-~]') then
  return redis.error_reply('EKEY invalid idempotency key: 1..64 printable ASCII bytes')
end
local qty = {}
for i = 1, n do
  local q = tonumber(ARGV[3 + i])
  if not q or q < 1 or q ~= math.floor(q) then
    return redis.error_reply('EQTY quantity must be greater than zero')
  end
  qty[i] = q
end
local lines = {}
for i = 1, n do lines[i] = KEYS[i] .. ' ' .. ARGV[3 + i] end
local linestr = table.concat(lines, ' ')
local sig = chan .. '|' .. ARGV[2] .. '|' .. linestr
local kk = 'atp:k:' .. key
local existing = redis.call('GET', kk)
if existing then
  if redis.call('HGET', 'atp:r:' .. existing, 'sig') == sig then
    return {tonumber(existing), 1}
  end
  return redis.error_reply('ECONFLICT idempotency key reused with different content')
end
local c = redis.call('HMGET', 'atp:c:' .. chan, 'su', 'sp', 'cap')
if not c[1] then return redis.error_reply('ENOCHANNEL unknown channel') end
local su, sp, cap = tonumber(c[1]), tonumber(c[2]), tonumber(c[3])
-- Check every line first.
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i], 'oh', 'al', 'rs', 'sf:' .. chan)
  if not v[1] then return redis.error_reply('ENOTFOUND not found') end
  local oh = tonumber(v[1])
  local sf = tonumber(v[4] or -1)
  if sf < 0 then
    sf = 0
    if sp > 0 and oh > 0 then sf = math.floor((oh * sp + 99) / 100) end
    if su > sf then sf = su end
  end
  local a = oh - tonumber(v[2] or 0) - tonumber(v[3] or 0) - sf
  if a < 0 then a = 0 end
  if cap >= 0 and a > cap then a = cap end
  if a < qty[i] then
    return redis.error_reply('EINSUFFICIENT insufficient stock')
  end
end
-- Then hold them all.
for i = 1, n do redis.call('HINCRBY', KEYS[i], 'rs', qty[i]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('INCR', 'atp:r:seq')
redis.call('HSET', 'atp:r:' .. id, 'st', 1, 'ch', chan, 'k', key, 'sig', sig,
           'exp', now + ttl, 'ttl', ttl, 'lines', linestr)
redis.call('SET', kk, id)
redis.call('ZADD', 'atp:exp', now + ttl, id)
return {id, 0}

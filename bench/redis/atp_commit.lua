-- atp_commit.lua: held -> committed, the semantics of atpd's COMMIT (see
-- atp_get.lua and atp_reserve.lua for the data model).
-- ARGV[1]: reservation id.
-- Moves qty from rs to al on every line. Committing a committed reservation
-- is a no-op success. A held reservation past its expiry is expired on the
-- spot (its stock returns) and answers EEXPIRED. A commit leaves ATP as it
-- is, so it is refused with EINSUFFICIENT (nothing changed, still held) when
-- a line's item has oh - al - rs - safety < 0 for the reservation's channel.
-- Returns {id, 2}. Errors: ENOTFOUND, ESTATE (released), EEXPIRED,
-- EINSUFFICIENT.
local id = ARGV[1]
local rk = 'atp:r:' .. id
local r = redis.call('HMGET', rk, 'st', 'exp', 'lines', 'ch')
if not r[1] then return redis.error_reply('ENOTFOUND not found') end
local st = tonumber(r[1])
if st == 2 then return {tonumber(id), 2} end
if st == 5 then return redis.error_reply('EEXPIRED reservation expired') end
if st ~= 1 then
  return redis.error_reply('ESTATE reservation is not in a state that allows this')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = now >= tonumber(r[2])
if not expired then
  local chan = r[4]
  local c = redis.call('HMGET', 'atp:c:' .. chan, 'su', 'sp')
  local su, sp = tonumber(c[1]), tonumber(c[2])
  for k, q in string.gmatch(r[3], '(%S+) (%S+)') do
    local v = redis.call('HMGET', k, 'oh', 'al', 'rs', 'sf:' .. chan)
    local oh = tonumber(v[1])
    local sf = tonumber(v[4] or -1)
    if sf < 0 then
      sf = 0
      if sp > 0 and oh > 0 then sf = math.floor((oh * sp + 99) / 100) end
      if su > sf then sf = su end
    end
    if oh - tonumber(v[2] or 0) - tonumber(v[3] or 0) - sf < 0 then
      return redis.error_reply('EINSUFFICIENT insufficient stock')
    end
  end
end
for k, q in string.gmatch(r[3], '(%S+) (%S+)') do
  redis.call('HINCRBY', k, 'rs', -tonumber(q))
  if not expired then redis.call('HINCRBY', k, 'al', tonumber(q)) end
end
redis.call('ZREM', 'atp:exp', id)
if expired then
  redis.call('HSET', rk, 'st', 5)
  return redis.error_reply('EEXPIRED reservation expired')
end
redis.call('HSET', rk, 'st', 2)
return {tonumber(id), 2}

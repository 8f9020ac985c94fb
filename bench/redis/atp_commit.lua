-- atp_commit.lua: held -> committed, the semantics of atpd's COMMIT (see
-- atp_get.lua and atp_reserve.lua for the data model).
-- ARGV[1]: reservation id.
-- Moves qty from rs to al on every line. Committing a committed reservation
-- is a no-op success. A held reservation past its expiry is expired on the
-- spot (its stock returns) and answers EEXPIRED. A commit leaves the free
-- stock as it is, so it is refused with EINSUFFICIENT (nothing changed,
-- still held) when a line's item has oh - al - rs < 0: the units are gone.
-- Returns {id, 2}. Errors: ENOTFOUND, ESTATE (released), EEXPIRED,
-- EINSUFFICIENT.
local id = ARGV[1]
local rk = 'atp:r:' .. id
local r = redis.call('HMGET', rk, 'st', 'exp', 'lines')
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
  for k, q in string.gmatch(r[3], '(%S+) (%S+)') do
    local v = redis.call('HMGET', k, 'oh', 'al', 'rs')
    if tonumber(v[1]) - tonumber(v[2] or 0) - tonumber(v[3] or 0) < 0 then
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

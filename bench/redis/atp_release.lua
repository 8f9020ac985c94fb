-- atp_release.lua: held -> released, the semantics of atpd's RELEASE (see
-- atp_get.lua and atp_reserve.lua for the data model).
-- ARGV[1]: reservation id.
-- Returns the stock (rs -= qty on every line). Releasing twice, or releasing
-- a committed reservation, is ESTATE; an expired one is EEXPIRED.
-- Returns {id, 4}. Errors: ENOTFOUND, ESTATE, EEXPIRED.
local id = ARGV[1]
local rk = 'atp:r:' .. id
local r = redis.call('HMGET', rk, 'st', 'exp', 'lines')
if not r[1] then return redis.error_reply('ENOTFOUND not found') end
local st = tonumber(r[1])
if st == 5 then return redis.error_reply('EEXPIRED reservation expired') end
if st ~= 1 then
  return redis.error_reply('ESTATE reservation is not in a state that allows this')
end
for k, q in string.gmatch(r[3], '(%S+) (%S+)') do
  redis.call('HINCRBY', k, 'rs', -tonumber(q))
end
redis.call('ZREM', 'atp:exp', id)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(r[2]) then
  redis.call('HSET', rk, 'st', 5)
  return redis.error_reply('EEXPIRED reservation expired')
end
redis.call('HSET', rk, 'st', 4)
return {tonumber(id), 4}

-- atp_expire.lua: release held reservations whose TTL has passed (atpd does
-- this on its own expirer thread; with Redis some client must call this
-- script periodically, e.g. every 100 ms).
-- ARGV[1]: the most reservations to expire in one call (bounds the time
-- Redis is blocked).
-- Returns the number expired.
local limit = tonumber(ARGV[1]) or 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', 'atp:exp', '-inf', now, 'LIMIT', 0, limit)
local n = 0
for _, id in ipairs(ids) do
  local rk = 'atp:r:' .. id
  local r = redis.call('HMGET', rk, 'st', 'lines')
  if tonumber(r[1]) == 1 then
    for k, q in string.gmatch(r[2], '(%S+) (%S+)') do
      redis.call('HINCRBY', k, 'rs', -tonumber(q))
    end
    redis.call('HSET', rk, 'st', 5)
    n = n + 1
  end
  redis.call('ZREM', 'atp:exp', id)
end
return n

-- atp_mget.lua: batch lookup, one ATP per item (see atp_get.lua for the data
-- model and the formula).
-- KEYS: item hashes; ARGV[1]: channel.
-- Returns an array with the ATP of each item in order, -1 for an unknown item.
-- Errors: ENOCHANNEL, ETOOMANY (more than 1000 keys, atpd's MGET limit).
local chan = ARGV[1]
if #KEYS > 1000 then
  return redis.error_reply('ETOOMANY too many lines or keys in one request')
end
local c = redis.call('HMGET', 'atp:c:' .. chan, 'su', 'sp', 'cap')
if not c[1] then
  return redis.error_reply('ENOCHANNEL unknown channel')
end
local su, sp, cap = tonumber(c[1]), tonumber(c[2]), tonumber(c[3])
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'oh', 'al', 'rs', 'sf:' .. chan)
  if v[1] then
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
    out[i] = a
  else
    out[i] = -1
  end
end
return out

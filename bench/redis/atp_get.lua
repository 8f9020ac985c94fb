-- atp_get.lua: available-to-promise for one channel, the formula of atpd's
-- store, for the side-by-side benchmark (loaded with SCRIPT LOAD, run with
-- EVALSHA by atp-loadgen --protocol=resp).
--
-- Data model (shared by every script in bench/redis/):
--   atp:i:<sku>:<loc>  hash per item: oh (on_hand), al (allocated),
--                      rs (reserved), and sf:<channel> (item safety override)
--   atp:c:<channel>    hash per channel: su (safety units), sp (safety
--                      percent of on_hand, rounded up), cap (-1: none)
--   ATP = clamp(oh - al - rs - safety, 0, cap), safety = the item override
--   if set, else max(su, ceil(oh * sp / 100)).
--
-- KEYS: one item for an item read, or every location of the sku for network
--       ATP (the sum).
-- ARGV[1]: channel; ARGV[2]: "1" for the breakdown.
-- Returns the ATP, or {atp, on_hand, allocated, reserved, safety} (sums).
-- Errors: ENOCHANNEL, ENOTFOUND (no key exists).
local chan = ARGV[1]
local c = redis.call('HMGET', 'atp:c:' .. chan, 'su', 'sp', 'cap')
if not c[1] then
  return redis.error_reply('ENOCHANNEL unknown channel')
end
local su, sp, cap = tonumber(c[1]), tonumber(c[2]), tonumber(c[3])
local atp, oh_t, al_t, rs_t, sf_t = 0, 0, 0, 0, 0
local found = false
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'oh', 'al', 'rs', 'sf:' .. chan)
  if v[1] then
    found = true
    local oh, al, rs = tonumber(v[1]), tonumber(v[2] or 0), tonumber(v[3] or 0)
    local sf = tonumber(v[4] or -1)
    if sf < 0 then
      sf = 0
      if sp > 0 and oh > 0 then sf = math.floor((oh * sp + 99) / 100) end
      if su > sf then sf = su end
    end
    local a = oh - al - rs - sf
    if a < 0 then a = 0 end
    if cap >= 0 and a > cap then a = cap end
    atp = atp + a
    oh_t, al_t, rs_t, sf_t = oh_t + oh, al_t + al, rs_t + rs, sf_t + sf
  end
end
if not found then
  return redis.error_reply('ENOTFOUND not found')
end
if ARGV[2] == '1' then
  return {atp, oh_t, al_t, rs_t, sf_t}
end
return atp

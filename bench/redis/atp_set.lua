-- atp_set.lua: admin SET of on_hand for one item (atp-loadgen's populate
-- step), the counterpart of atpd's SET with seq 0. Creates the item with
-- allocated and reserved at 0, and keeps the plain string key that the
-- "Redis GET" baseline reads.
-- KEYS[1]: atp:i:<sku>:<loc>, KEYS[2]: atp:g:<sku>:<loc>.
-- ARGV[1]: on_hand (>= 0).
-- Returns "OK". Errors: ERANGE.
local oh = tonumber(ARGV[1])
if not oh or oh < 0 then return redis.error_reply('ERANGE quantity out of the supported range') end
redis.call('HSET', KEYS[1], 'oh', oh)
redis.call('HSETNX', KEYS[1], 'al', 0)
redis.call('HSETNX', KEYS[1], 'rs', 0)
redis.call('SET', KEYS[2], oh)
return redis.status_reply('OK')

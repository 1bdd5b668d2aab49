-- The adaptive limit's state one resource's nodes share, mirroring Aimd::merge and Aimd::next
-- in service/src/adaptive/aimd.rs operation for operation (integers only, all below 2^53): each
-- node adds what it was told of the backend since its last call, and the first call of a new
-- window closes the last one, moving the factor. Prepended by prelude.lua (for now_us).
-- KEYS     the resource's hash: epoch, reports, errors, slow, factor (parts per million)
-- ARGV     now_us ("" = Redis TIME), window_us, reports, errors, slow, min_reports,
--          max_error_ppm, floor_ppm, increase_ppm, decrease_ppm, ttl_ms
-- Returns  the factor in parts per million
local WHOLE = 1000000
local now = now_us(ARGV[1])
local window = tonumber(ARGV[2])
local add = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local min_reports, max_error = tonumber(ARGV[6]), tonumber(ARGV[7])
local floor, increase, decrease = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])

local function next_factor(factor, reports, errors, slow)
  factor = math.min(math.max(factor, floor), WHOLE)
  if reports < math.max(min_reports, 1) then return factor end
  if slow * 10 > reports or errors * WHOLE > reports * max_error then
    return math.max(math.floor(factor * decrease / WHOLE), floor)
  end
  return math.min(factor + increase, WHOLE)
end

local epoch = math.floor(now / math.max(window, 1))
local stored = redis.call('HMGET', KEYS[1], 'epoch', 'reports', 'errors', 'slow', 'factor')
local counting, factor
if not stored[1] then
  counting, factor = add, WHOLE
else
  local stored_epoch = tonumber(stored[1])
  local last = {tonumber(stored[2]), tonumber(stored[3]), tonumber(stored[4])}
  factor = tonumber(stored[5])
  if epoch > stored_epoch then
    factor = next_factor(factor, last[1], last[2], last[3])
    counting = add
  else
    epoch = stored_epoch
    counting = {last[1] + add[1], last[2] + add[2], last[3] + add[3]}
  end
end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'reports', counting[1],
  'errors', counting[2], 'slow', counting[3], 'factor', factor)
redis.call('PEXPIRE', KEYS[1], ARGV[11])
return factor

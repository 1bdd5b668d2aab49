-- Sliding window log, mirroring service/src/algorithm/sliding_window_log.rs.
-- KEYS[1]  sorted set: member "<time_us>:<cost>" scored by time (one member per microsecond)
-- KEYS[2]  string: the sum of the logged costs
-- ARGV     now_us ("" = Redis TIME; see prelude.lua), cost (0 = peek), limit, window_us
-- Returns  {allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never)}
local log, total_key = KEYS[1], KEYS[2]
local now = now_us(ARGV[1])
local cost = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])

local function cost_of(member) return tonumber(string.match(member, ':(%d+)$')) end

local total = tonumber(redis.call('GET', total_key) or '0')
-- An entry logged at t leaves the window once now >= t + window.
local cutoff = string.format('%.17g', now - window)
local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
for _, member in ipairs(expired) do total = total - cost_of(member) end
local allowed = cost <= limit - total

local retry = 0
if not allowed then
  if cost > limit then
    retry = -1
  else
    local left = total
    local entries = redis.call('ZRANGE', log, #expired, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      left = left - cost_of(entries[i])
      if left + cost <= limit then
        retry = math.max(tonumber(entries[i + 1]) + window - now, 0)
        break
      end
    end
  end
end

local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
local newest_at = nil
if #newest > 0 and tonumber(newest[2]) > now - window then newest_at = tonumber(newest[2]) end
if allowed and cost > 0 then
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff) end
  total = total + cost
  local at = now
  local merged = cost
  if newest_at and newest_at >= now then
    at = newest_at
    merged = merged + cost_of(newest[1])
    redis.call('ZREM', log, newest[1])
  end
  local stamp = string.format('%.17g', at)
  redis.call('ZADD', log, stamp, stamp .. ':' .. string.format('%.17g', merged))
  newest_at = at
  local ttl = ttl_ms(at + window - now)
  redis.call('SET', total_key, string.format('%.17g', total), 'PX', ttl)
  redis.call('PEXPIRE', log, ttl)
end
local reset = 0
if newest_at then reset = math.max(newest_at + window - now, 0) end
return {allowed and 1 or 0, limit - total, reset, retry}

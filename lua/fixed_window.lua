-- Fixed window, mirroring service/src/algorithm/fixed_window.rs.
-- KEYS[1]  hash {start_us, count}
-- ARGV     now_us ("" = Redis TIME; see prelude.lua), cost (0 = peek), limit, window_us
-- Returns  {allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never)}
local key = KEYS[1]
local now = now_us(ARGV[1])
local cost = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])

local stored = redis.call('HMGET', key, 'start_us', 'count')
local start, count = tonumber(stored[1] or '0'), tonumber(stored[2] or '0')
-- fmod is exact on doubles; `%` (a - floor(a/b)*b) can be off near window boundaries.
local current = now - math.fmod(now, window)
if current > start then
  start, count = current, 0
end
local until_end = math.max(start + window - now, 0)
local allowed = cost <= limit - math.min(count, limit)
if allowed then count = count + cost end
local retry = 0
if not allowed then
  if cost > limit then retry = -1 else retry = until_end end
end
local reset = 0
if count > 0 then reset = until_end end
if allowed and cost > 0 then
  redis.call('HSET', key, 'start_us', string.format('%.17g', start), 'count', string.format('%.17g', count))
  redis.call('PEXPIRE', key, ttl_ms(until_end))
end
return {allowed and 1 or 0, limit - count, reset, retry}

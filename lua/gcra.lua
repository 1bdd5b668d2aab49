-- GCRA, mirroring service/src/algorithm/gcra.rs.
-- KEYS[1]  string: theoretical arrival time (TAT), microseconds
-- ARGV     now_us ("" = Redis TIME; see prelude.lua), cost (0 = peek), emission_interval_us, burst
-- Returns  {allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never)}
local key = KEYS[1]
local now = now_us(ARGV[1])
local cost = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local tolerance = interval * burst

local stored = tonumber(redis.call('GET', key) or '0')
local tat = math.max(stored, now)
local new_tat = tat + interval * cost
local horizon = now + tolerance
local allowed = new_tat <= horizon
local retry = 0
if not allowed then
  if cost > burst then retry = -1 else retry = new_tat - horizon end
end
if allowed then stored = new_tat end
local tat_after = math.max(stored, now)
local remaining = math.floor(math.max(horizon - tat_after, 0) / interval)
local reset = tat_after - now
if allowed and cost > 0 then
  redis.call('SET', key, string.format('%.17g', new_tat), 'PX', ttl_ms(reset))
end
return {allowed and 1 or 0, remaining, reset, retry}

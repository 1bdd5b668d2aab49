-- GCRA, mirroring service/src/algorithm/gcra.rs.
-- KEYS[1]  string: theoretical arrival time (TAT), microseconds
-- ARGV     now_us ("" = Redis TIME), cost (0 = peek), emission_interval_us, burst
-- Returns  {allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never)}
local key = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- State is fresh again once reset_after has passed, so it may expire then; a second of slack
-- keeps it when script time and Redis's expiry clock disagree (a pinned test clock, a step).
local function ttl_ms(reset_us) return math.ceil(reset_us / 1000) + 1000 end
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

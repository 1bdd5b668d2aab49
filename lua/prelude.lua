-- Prepended to every script in this folder when the service loads it
-- (service/src/store/redis.rs), so each script has one way to read time and to expire state.

-- Microseconds: ARGV[1] when a test pins it, else Redis TIME (so node clocks never matter).
local function now_us(pinned)
  local now = tonumber(pinned)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- State is fresh again once reset_after has passed, so it may expire then; a second of slack
-- keeps it when script time and Redis's expiry clock disagree (a pinned test clock, a step).
local function ttl_ms(reset_us) return math.ceil(reset_us / 1000) + 1000 end


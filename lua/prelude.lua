-- Prepended to the decision script when the service loads it (service/src/store/redis.rs):
-- one way to read time, to expire state and to write numbers, and the table the algorithm
-- files (token_bucket.lua, gcra.lua, ...) add their decide function to.

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

-- A number exactly as stored: integers below 2^53 and the shortest-exact double.
local function num(x) return string.format('%.17g', x) end

-- algorithms[tag](keys, now, cost, p1, p2) -> decision, write
--   keys      this limit's state keys (KEYS entries; the tag's key count in KEY_COUNT)
--   decision  {allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never)}
--   write     write(commit): stores the state. commit = every limit allowed, so the charge
--             stands; otherwise only what a lone denial also keeps (a refill, a rolled window).
-- Nothing is written by the decide function itself, so a rule's limits can be tried first.
local algorithms = {}
local KEY_COUNT = {}
